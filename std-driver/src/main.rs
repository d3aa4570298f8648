//! `dmsg`: command-line tools for DragonFly BSD's DMSG protocol. See `dmsg --help`.

use std::ffi::OsString;
use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use dmsg_std::cli::{self, Io};

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut stdin = io::stdin().lock();
    let mut stdout = BufWriter::new(io::stdout().lock());
    let mut stderr = io::stderr().lock();
    let code = cli::run(
        &args,
        &mut Io {
            stdin: &mut stdin,
            stdout: &mut stdout,
            stderr: &mut stderr,
        },
    );
    // Output errors were reported where they happened; a closed pipe is not one.
    let _ = stdout.flush();
    ExitCode::from(code)
}
