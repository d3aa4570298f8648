//! `dmsg shell` and `dmsg tree`: the debug-shell client on the command line.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Write};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::cli::{parse_duration, Arg, ArgReader, Io, UsageError};
use crate::exit;
use crate::link::LinkEvent;
use crate::net::Addr;
use crate::shell::{self, Output, ScriptStyle, ShellClient, ShellError, ShellOptions, Step};
use crate::tree;

/// Help of `dmsg shell`.
pub const SHELL_HELP: &str = "\
dmsg shell: the debug shell of a DMSG node (DragonFly's `hammer2 service`, or a dmsg node)

Usage: dmsg shell [OPTIONS] ADDR

ADDR is HOST or HOST:PORT (IPv6 as [ADDR]:PORT); the port defaults to 987.

On a terminal, lines you type are sent as they are and the peer's output and its
`debug> ` prompt are shown as they come; Ctrl-D leaves. With standard input from a pipe or
a file, commands are sent one at a time: each waits for the previous one's prompt, and the
program ends after the last command's prompt (exit 4 if a prompt does not come in time).
`@LABEL CMD` sends CMD through the span labelled LABEL, as DragonFly's client does.
Without --keys the peer must speak plaintext DMSG (on DragonFly, configure the peer as
<ip>.none).

Commands of hammer2 service: help, ping, tree, span <host>.

Options:
      --timeout DUR          longest wait for a prompt (default 10s)
      --connect-timeout DUR  longest wait for the TCP connect (default 5s)
      --keys DIR             authenticated, encrypted link (a dmsg node run with --keys): our
                             key pair is DIR/NAME.key, the node's public key DIR/PEER.pub
      --name NAME            our key pair's name in DIR (default shell; create it with
                             dmsg keygen --dir DIR --name shell and give shell.pub to the node)
      --peer PEER            the node's name in DIR (default: the host part of ADDR)
      --linger DUR           after the last prompt, show late output until quiet this long
                             (default 150ms; DragonFly prints `ping reply` after the prompt)
      --no-prompt            leave the prompts out of the output (pipes and files only)
      --echo                 print each command after the prompt (pipes and files only)
  -v, -vv                    log the link's life (-v) and frames (-vv) to standard error
  -h, --help                 show this help

Exit: 0 done, 2 usage, 3 cannot connect or connection lost, 4 no prompt in time.
";

/// Help of `dmsg tree`.
pub const TREE_HELP: &str = "\
dmsg tree: print the span tree a DMSG node knows (its debug shell's `tree`)

Usage: dmsg tree [OPTIONS] ADDR

ADDR is HOST or HOST:PORT (IPv6 as [ADDR]:PORT); the port defaults to 987.

Options:
      --dot                  print a Graphviz digraph: the node's own `dot` output if it has
                             that command (dmsg nodes), else the `tree` text converted here
                             (DragonFly); e.g. dmsg tree --dot hub | dot -Tsvg > tree.svg
      --timeout DUR          longest wait for an answer (default 10s)
      --connect-timeout DUR  longest wait for the TCP connect (default 5s)
      --keys DIR             authenticated, encrypted link (a dmsg node run with --keys): our
                             key pair is DIR/NAME.key, the node's public key DIR/PEER.pub
      --name NAME            our key pair's name in DIR (default shell; create it with
                             dmsg keygen --dir DIR --name shell and give shell.pub to the node)
      --peer PEER            the node's name in DIR (default: the host part of ADDR)
  -v, -vv                    log the link's life (-v) and frames (-vv) to standard error
  -h, --help                 show this help

Exit: 0 done, 2 usage, 3 cannot connect or connection lost, 4 no answer in time.
";

/// Parsed arguments shared by `shell` and `tree`.
#[derive(Clone, Debug)]
pub struct NetArgs {
    /// The peer.
    pub addr: Addr,
    /// Session settings.
    pub opts: ShellOptions,
    /// `-v` count.
    pub verbose: u8,
    /// `--no-prompt` / `--echo`.
    pub style: ScriptStyle,
    /// `--dot`.
    pub dot: bool,
}

enum Parsed {
    Help,
    Run(Box<NetArgs>),
}

fn parse(command: &'static str, args: &[OsString]) -> Result<Parsed, UsageError> {
    let mut r = ArgReader::new(command, args);
    let mut addr = None;
    let mut opts = ShellOptions::default();
    let mut verbose = 0u8;
    let mut style = ScriptStyle::default();
    let mut dot = false;
    let mut keys = None;
    let mut key_name = "shell".to_string();
    let is_shell = command == "shell";
    while let Some(a) = r.next_arg() {
        match a {
            Arg::Option("-h" | "--help", _) => return Ok(Parsed::Help),
            Arg::Option(v @ ("-v" | "-vv" | "-vvv"), None) => {
                verbose = verbose.saturating_add(v.len() as u8 - 1)
            }
            Arg::Option("--verbose", inline) => {
                r.no_value("--verbose", inline)?;
                verbose = verbose.saturating_add(1);
            }
            Arg::Option(name @ ("--timeout" | "--connect-timeout" | "--linger"), inline) => {
                if name == "--linger" && !is_shell {
                    return Err(r.error(format!("unknown option {name}")));
                }
                let v = r.value(name, inline)?;
                let d = parse_duration(v).map_err(|e| r.error(format!("{name}: {e}")))?;
                match name {
                    "--timeout" => opts.reply_timeout = d,
                    "--connect-timeout" => opts.connect_timeout = d,
                    _ => opts.linger = d,
                }
            }
            Arg::Option("--keys", inline) => {
                keys = Some(std::path::PathBuf::from(r.value("--keys", inline)?));
            }
            Arg::Option("--name", inline) => {
                key_name = r.value("--name", inline)?.to_string();
            }
            Arg::Option("--peer", inline) => {
                opts.peer = Some(r.value("--peer", inline)?.to_string());
            }
            Arg::Option("--no-prompt", inline) if is_shell => {
                r.no_value("--no-prompt", inline)?;
                style.no_prompt = true;
            }
            Arg::Option("--echo", inline) if is_shell => {
                r.no_value("--echo", inline)?;
                style.echo = true;
            }
            Arg::Option("--dot", inline) if !is_shell => {
                r.no_value("--dot", inline)?;
                dot = true;
            }
            Arg::Option(name, _) => return Err(r.error(format!("unknown option {name}"))),
            Arg::Positional(p) => {
                if addr.is_some() {
                    return Err(r.error("give one address only"));
                }
                let s = p
                    .to_str()
                    .ok_or_else(|| r.error("the address is not valid UTF-8"))?;
                addr = Some(s.parse::<Addr>().map_err(|e| r.error(e.to_string()))?);
            }
        }
    }
    let addr =
        addr.ok_or_else(|| r.error(format!("no address given: dmsg {command} HOST[:PORT]")))?;
    match keys {
        Some(dir) => {
            opts.keys = crate::node_cmd::load_keys(Some(&dir), &key_name)
                .map_err(|e| r.error(format!("--keys: {e}")))?;
        }
        None if opts.peer.is_some() || key_name != "shell" => {
            return Err(r.error(
                "--peer and --name choose keys in the keys directory; give --keys DIR too",
            ));
        }
        None => {}
    }
    Ok(Parsed::Run(Box::new(NetArgs {
        addr,
        opts,
        verbose,
        style,
        dot,
    })))
}

fn fail(io: &mut Io<'_>, command: &str, e: &ShellError) -> u8 {
    let _ = writeln!(io.stderr, "dmsg {command}: {e}");
    e.exit_code()
}

/// `dmsg shell ARGS`.
pub fn shell_main(args: &[OsString], io: &mut Io<'_>) -> u8 {
    let a = match parse("shell", args) {
        Ok(Parsed::Help) => return crate::cli::print_or_usage(io, SHELL_HELP),
        Ok(Parsed::Run(a)) => a,
        Err(e) => {
            let _ = writeln!(io.stderr, "{e}");
            return exit::USAGE;
        }
    };
    crate::logging::init(a.verbose);
    let mut client = match ShellClient::connect(&a.addr, &a.opts) {
        Ok(c) => c,
        Err(e) => return fail(io, "shell", &e),
    };
    if io.interactive {
        let _ = writeln!(
            io.stderr,
            "dmsg shell: connected to {}; type 'help', Ctrl-D to leave",
            a.addr
        );
        return interactive(client, io);
    }
    let mut input = BufReader::new(&mut *io.stdin);
    match shell::run_script(
        &mut client,
        &mut input,
        a.style,
        a.opts.linger,
        io.stdout,
        io.stderr,
    ) {
        Ok(()) => exit::OK,
        Err(e) => fail(io, "shell", &e),
    }
}

enum Ui {
    Line(String),
    Eof,
    InputError(String),
    Event(Box<LinkEvent>),
}

/// The terminal session: lines go out as typed, output is shown as it comes.
fn interactive(client: ShellClient, io: &mut Io<'_>) -> u8 {
    let (tx, rx) = mpsc::channel::<Ui>();
    let (mut shell, events) = client.into_parts();
    let etx = tx.clone();
    let forwarder = thread::Builder::new()
        .name("dmsg-shell-events".into())
        .spawn(move || {
            for ev in events {
                if etx.send(Ui::Event(Box::new(ev))).is_err() {
                    return;
                }
            }
        });
    let Ok(forwarder) = forwarder else {
        let _ = writeln!(io.stderr, "dmsg shell: cannot start a thread");
        return exit::NETWORK;
    };
    // Reads the terminal. It may stay blocked in read after we are done; the process ends
    // right after, so it is not joined.
    let stdin_thread = thread::Builder::new()
        .name("dmsg-shell-stdin".into())
        .spawn(move || {
            let stdin = io::stdin();
            let mut line = String::new();
            loop {
                line.clear();
                let msg = match stdin.lock().read_line(&mut line) {
                    Ok(0) => Ui::Eof,
                    Ok(_) => Ui::Line(line.trim_end_matches(['\n', '\r']).to_string()),
                    Err(e) => Ui::InputError(e.to_string()),
                };
                let last = !matches!(msg, Ui::Line(_));
                if tx.send(msg).is_err() || last {
                    return;
                }
            }
        });
    if stdin_thread.is_err() {
        let _ = writeln!(io.stderr, "dmsg shell: cannot start a thread");
        return exit::NETWORK;
    }
    let mut code = exit::OK;
    if let Err(e) = shell.send_line("") {
        code = fail(io, "shell", &e);
    }
    while code == exit::OK {
        let Ok(msg) = rx.recv() else { break };
        match msg {
            Ui::Line(l) => match shell.send_line(&l) {
                Ok(()) => {}
                Err(e @ ShellError::NoSuchSpan(_)) => {
                    let _ = writeln!(io.stderr, "dmsg shell: {e}");
                }
                Err(e) => code = fail(io, "shell", &e),
            },
            Ui::Eof => break,
            Ui::InputError(e) => {
                let _ = writeln!(io.stderr, "dmsg shell: cannot read the terminal: {e}");
                code = exit::USAGE;
            }
            Ui::Event(ev) => {
                let step = shell.on_event(*ev, &mut |o| {
                    let t = match o {
                        Output::Text(t) | Output::Prompt(t) => t,
                    };
                    let _ = io.stdout.write_all(t.as_bytes());
                    let _ = io.stdout.flush();
                });
                if let Step::Closed(why) = step {
                    code = fail(io, "shell", &ShellError::Lost(why));
                }
            }
        }
    }
    let _ = writeln!(io.stdout);
    // The only handle: dropping it shuts the link down and joins its threads; the
    // forwarder then sees the end of the events.
    drop(shell);
    let _ = forwarder.join();
    code
}

/// `dmsg tree ARGS`.
pub fn tree_main(args: &[OsString], io: &mut Io<'_>) -> u8 {
    let a = match parse("tree", args) {
        Ok(Parsed::Help) => return crate::cli::print_or_usage(io, TREE_HELP),
        Ok(Parsed::Run(a)) => a,
        Err(e) => {
            let _ = writeln!(io.stderr, "{e}");
            return exit::USAGE;
        }
    };
    crate::logging::init(a.verbose);
    match tree_text(&a, io.stderr) {
        Ok(text) => {
            if text.is_empty() {
                let _ = writeln!(
                    io.stderr,
                    "dmsg tree: the tree is empty (the node knows no spans)"
                );
            }
            crate::cli::print_or_usage(io, &text)
        }
        Err(e) => fail(io, "tree", &e),
    }
}

/// What `dmsg tree` prints for `a`: the tree text, or DOT with `--dot`.
pub fn tree_text(a: &NetArgs, err: &mut dyn Write) -> Result<String, ShellError> {
    let mut client = ShellClient::connect(&a.addr, &a.opts)?;
    let mut note = |waited: Duration| {
        let _ = writeln!(
            err,
            "dmsg tree: still waiting for {} ({:.0} s)...",
            a.addr,
            waited.as_secs_f64()
        );
    };
    client.greet(&mut |_| {}, &mut note)?;
    if a.dot {
        let out = client.collect("dot")?;
        if tree::is_dot(&out) {
            return Ok(out);
        }
        log::info!("{}: no `dot` command; converting `tree` here", a.addr);
        let text = client.collect("tree")?;
        let parsed = tree::parse(&text);
        return Ok(tree::to_dot(&parsed, &a.addr.to_string()));
    }
    client.collect("tree")
}
