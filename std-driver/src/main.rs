//! `dmsg`: command-line tools for DragonFly BSD's DMSG protocol. See `dmsg --help`.

use std::ffi::OsString;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::process::ExitCode;

use dmsg_std::cli::{self, Io};

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    // Not locked for the whole run: the interactive shell reads it from another thread.
    let mut stdin = io::stdin();
    let interactive = stdin.is_terminal();
    let mut stdout = BufWriter::new(io::stdout().lock());
    // Not locked either: the link threads log to it.
    let mut stderr = io::stderr();
    let code = cli::run(
        &args,
        &mut Io {
            stdin: &mut stdin,
            stdout: &mut stdout,
            stderr: &mut stderr,
            interactive,
        },
    );
    // Output errors were reported where they happened; a closed pipe is not one.
    let _ = stdout.flush();
    ExitCode::from(code)
}
