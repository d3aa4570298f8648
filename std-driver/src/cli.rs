//! The `dmsg` command line: subcommand dispatch, a small argument reader shared by the
//! subcommands, and the top-level help.
//!
//! A subcommand is one entry in [`SUBCOMMANDS`]: a name, a one-line summary and a function
//! that takes the arguments after the subcommand's name. Adding one is adding an entry; the
//! top-level help lists whatever the table holds.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{Read, Write};

use crate::{bench, decode_cmd, demo, exit, node_cmd, shell_cmd};

/// The standard streams a subcommand uses (the real ones in `main`, buffers in tests).
pub struct Io<'a> {
    /// Standard input.
    pub stdin: &'a mut dyn Read,
    /// Standard output.
    pub stdout: &'a mut dyn Write,
    /// Standard error.
    pub stderr: &'a mut dyn Write,
    /// Standard input is a terminal (interactive commands such as `dmsg shell` then read it
    /// line by line as typed).
    pub interactive: bool,
}

/// One subcommand of `dmsg`.
pub struct Subcommand {
    /// The name typed after `dmsg`.
    pub name: &'static str,
    /// One line for the top-level help.
    pub summary: &'static str,
    /// Runs the subcommand on the arguments after its name; returns the exit code.
    pub run: fn(&[OsString], &mut Io<'_>) -> u8,
}

/// Every subcommand, in the order the help lists them.
pub const SUBCOMMANDS: &[Subcommand] = &[
    Subcommand {
        name: "demo",
        summary:
            "a hub and leaves on loopback: span tree, transactions, a cut connection, a summary",
        run: demo::main,
    },
    Subcommand {
        name: "hub",
        summary: "listen for DMSG links and relay between them (spans, transactions, debug shell)",
        run: node_cmd::hub_main,
    },
    Subcommand {
        name: "leaf",
        summary: "connect to a hub, advertise this node, answer echo transactions",
        run: node_cmd::leaf_main,
    },
    Subcommand {
        name: "decode",
        summary: "print the frames of a captured DMSG byte stream (raw or hex), checking every CRC",
        run: decode_cmd::main,
    },
    Subcommand {
        name: "shell",
        summary: "talk to a node's debug shell (DragonFly's hammer2 service or a dmsg node)",
        run: shell_cmd::shell_main,
    },
    Subcommand {
        name: "tree",
        summary: "print the span tree a node knows, as text or Graphviz DOT (--dot)",
        run: shell_cmd::tree_main,
    },
    Subcommand {
        name: "bench",
        summary: "measure DMSG against raw TCP over loopback (throughput, round trips)",
        run: bench::main,
    },
    Subcommand {
        name: "keygen",
        summary: "write a new key pair for the secure channel (secret file mode 0600)",
        run: crate::keys::keygen_main,
    },
];

/// The top-level help text.
pub fn help() -> String {
    let mut s = String::from(
        "dmsg: tools for DragonFly BSD's DMSG protocol (HAMMER2 cluster messaging)\n\n\
         Usage: dmsg <COMMAND> [ARGS...]\n       dmsg <COMMAND> --help\n\nCommands:\n",
    );
    let width = SUBCOMMANDS.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in SUBCOMMANDS {
        s.push_str(&format!("  {:width$}  {}\n", c.name, c.summary));
    }
    s.push_str(&format!(
        "  {:width$}  show this help, or a command's help\n\n\
         Options:\n  -h, --help     show this help\n  -V, --version  show the version\n",
        "help"
    ));
    s
}

/// Runs `dmsg` with `args` (without the program name); returns the exit code.
pub fn run(args: &[OsString], io: &mut Io<'_>) -> u8 {
    let Some(first) = args.first() else {
        let _ = write!(io.stderr, "{}", help());
        let _ = writeln!(
            io.stderr,
            "\ndmsg: no command given; pick one of the commands above"
        );
        return exit::USAGE;
    };
    let rest = &args[1..];
    match first.to_str() {
        Some("-h" | "--help") => print_or_usage(io, &help()),
        Some("-V" | "--version") => {
            print_or_usage(io, &format!("dmsg {}\n", env!("CARGO_PKG_VERSION")))
        }
        Some("help") => match rest.first() {
            None => print_or_usage(io, &help()),
            Some(name) => match name.to_str().and_then(find) {
                Some(c) => (c.run)(&[OsString::from("--help")], io),
                None => unknown_command(io, &name.to_string_lossy()),
            },
        },
        Some(name) => match find(name) {
            Some(c) => (c.run)(rest, io),
            None => unknown_command(io, name),
        },
        None => unknown_command(io, &first.to_string_lossy()),
    }
}

fn find(name: &str) -> Option<&'static Subcommand> {
    SUBCOMMANDS.iter().find(|c| c.name == name)
}

fn unknown_command(io: &mut Io<'_>, name: &str) -> u8 {
    let names: Vec<&str> = SUBCOMMANDS.iter().map(|c| c.name).collect();
    let _ = writeln!(
        io.stderr,
        "dmsg: unknown command '{name}'; the commands are: {} (see dmsg --help)",
        names.join(", ")
    );
    exit::USAGE
}

/// Writes `text` to stdout; a failed write (other than a closed pipe) is a usage/IO error.
pub fn print_or_usage(io: &mut Io<'_>, text: &str) -> u8 {
    match io
        .stdout
        .write_all(text.as_bytes())
        .and_then(|()| io.stdout.flush())
    {
        Ok(()) => exit::OK,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => {
            let _ = writeln!(io.stderr, "dmsg: cannot write to standard output: {e}");
            exit::USAGE
        }
    }
}

/// A command-line mistake, with the subcommand it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageError {
    /// The subcommand (`"decode"`), for the hint.
    pub command: &'static str,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dmsg {}: {} (see dmsg {} --help)",
            self.command, self.message, self.command
        )
    }
}

impl std::error::Error for UsageError {}

/// One command-line argument as [`ArgReader`] sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg<'a> {
    /// `--name`, `--name=value` or `-x` (the name includes the dashes; the value is the part
    /// after `=`).
    Option(&'a str, Option<&'a str>),
    /// Anything else, including `-` and everything after `--`.
    Positional(&'a OsStr),
}

/// Walks a subcommand's arguments: options (`--x`, `--x=v`, `--x v`, `-x`) and positionals.
pub struct ArgReader<'a> {
    args: &'a [OsString],
    pos: usize,
    options_done: bool,
    command: &'static str,
}

impl<'a> ArgReader<'a> {
    /// A reader over `args` for subcommand `command` (named in errors).
    pub fn new(command: &'static str, args: &'a [OsString]) -> ArgReader<'a> {
        ArgReader {
            args,
            pos: 0,
            options_done: false,
            command,
        }
    }

    /// A usage error of this subcommand.
    pub fn error(&self, message: impl Into<String>) -> UsageError {
        UsageError {
            command: self.command,
            message: message.into(),
        }
    }

    /// The next argument, or `None` at the end.
    pub fn next_arg(&mut self) -> Option<Arg<'a>> {
        loop {
            let raw = self.args.get(self.pos)?;
            self.pos += 1;
            if self.options_done {
                return Some(Arg::Positional(raw));
            }
            match raw.to_str() {
                Some("--") => {
                    self.options_done = true;
                    continue;
                }
                Some(s) if s.starts_with("--") => {
                    return Some(match s.split_once('=') {
                        Some((name, value)) => Arg::Option(name, Some(value)),
                        None => Arg::Option(s, None),
                    });
                }
                Some(s) if s.starts_with('-') && s.len() > 1 => return Some(Arg::Option(s, None)),
                _ => return Some(Arg::Positional(raw)),
            }
        }
    }

    /// The value of option `name`: its `=value`, else the next argument.
    pub fn value(&mut self, name: &str, inline: Option<&'a str>) -> Result<&'a str, UsageError> {
        if let Some(v) = inline {
            return Ok(v);
        }
        match self.args.get(self.pos) {
            Some(v) => {
                self.pos += 1;
                v.to_str()
                    .ok_or_else(|| self.error(format!("the value of {name} is not valid UTF-8")))
            }
            None => Err(self.error(format!("{name} needs a value"))),
        }
    }

    /// An error for an option given a value it does not take.
    pub fn no_value(&self, name: &str, inline: Option<&str>) -> Result<(), UsageError> {
        match inline {
            Some(v) => Err(self.error(format!("{name} takes no value (got '{v}')"))),
            None => Ok(()),
        }
    }
}

/// Reads a duration: a number with a unit `ms`, `s` or `m` (`500ms`, `2s`, `1.5s`, `1m`);
/// a bare number is seconds.
///
/// ```
/// use std::time::Duration;
/// use dmsg_std::cli::parse_duration;
/// assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
/// assert!(parse_duration("soon").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v * scale <= 86_400.0 => {
            Ok(std::time::Duration::from_secs_f64(v * scale))
        }
        _ => Err(format!(
            "'{text}' is not a duration such as 500ms, 2s or 1m (at most a day)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn reader_splits_options_values_and_positionals() {
        let args = os(&[
            "--json",
            "--max-aux=10",
            "--max-aux",
            "20",
            "-",
            "--",
            "--raw",
            "-h",
        ]);
        let mut r = ArgReader::new("decode", &args);
        assert_eq!(r.next_arg(), Some(Arg::Option("--json", None)));
        assert_eq!(r.next_arg(), Some(Arg::Option("--max-aux", Some("10"))));
        assert_eq!(r.next_arg(), Some(Arg::Option("--max-aux", None)));
        assert_eq!(r.value("--max-aux", None), Ok("20"));
        assert_eq!(r.next_arg(), Some(Arg::Positional(OsStr::new("-"))));
        assert_eq!(r.next_arg(), Some(Arg::Positional(OsStr::new("--raw"))));
        assert_eq!(r.next_arg(), Some(Arg::Positional(OsStr::new("-h"))));
        assert_eq!(r.next_arg(), None);
        assert!(r.value("--x", None).is_err());
    }

    #[test]
    fn help_lists_exactly_the_built_commands() {
        let h = help();
        for c in SUBCOMMANDS {
            assert!(h.contains(c.name));
        }
        assert!(h.contains("hub") && h.contains("leaf") && h.contains("demo"));
        assert!(h.contains("shell") && h.contains("tree"));
    }
}
