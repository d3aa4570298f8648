//! A DMSG debug-shell client, speaking to DragonFly's `hammer2 service` exactly as DragonFly's
//! own `hammer2 shell` does (see `tests/data/dragonfly/11_plain_shell.decoded.txt`):
//!
//! - both sides open LNK_CONN (ours is the link's first frame; the peer's is accepted);
//! - a command is a one-way DBG_SHELL whose aux is the line, NUL-terminated (`help\0`); an
//!   empty line is a DBG_SHELL with no aux at all, and one is sent right after connecting so
//!   the peer prints its first prompt;
//! - output comes back as one-way DBG_SHELL|REPLY frames, one NUL-terminated line each, and
//!   ends with the prompt (`debug> `, no newline);
//! - `@LABEL CMD` sends `CMD` on the circuit of the span with that label, as DragonFly's client
//!   does;
//! - LNK_PING is answered by the link; LNK_SPANs the peer relays to us are accepted (and closed
//!   when the peer closes them), other transactions refused with NOSUPP.
//!
//! [`Shell`] is the reaction to link events (usable with events from any source);
//! [`ShellClient`] adds the link's event stream for sequential use: send a line, wait for the
//! prompt, as scripts and `dmsg tree` do.

use std::fmt;
use std::io::{BufRead, Write};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use dmsg_core::errcode;
use dmsg_core::link::{Side, TxnId};
use dmsg_core::wire::body::{peer_type, SpanRepr};
use dmsg_core::wire::{Body, Command, Flags, Label};

use crate::link::{self, LinkError, LinkEvent, LinkEvents, LinkHandle, LinkOptions, Message};
use crate::net::{self, Addr, ConnectError};

/// True for a prompt: a reply text without a newline that ends in `"> "` (DragonFly's is
/// `debug> `; output lines always end with a newline).
pub fn is_prompt(text: &str) -> bool {
    !text.contains('\n') && text.ends_with("> ")
}

/// The aux data for a command line, as DragonFly's client builds it: nothing for an empty
/// line, else the text and a NUL.
pub fn command_aux(line: &str) -> Vec<u8> {
    if line.is_empty() {
        Vec::new()
    } else {
        let mut v = Vec::with_capacity(line.len() + 1);
        v.extend_from_slice(line.as_bytes());
        v.push(0);
        v
    }
}

/// What the shell prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output<'a> {
    /// A line of output (with its newline).
    Text(&'a str),
    /// The prompt, which ends a command's output.
    Prompt(&'a str),
}

/// What a link event meant to the shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing that ends a wait.
    Continue,
    /// A prompt arrived.
    Prompt,
    /// The link closed; why, and what to do.
    Closed(String),
}

/// Why a shell session failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShellError {
    /// The connect failed.
    Connect(ConnectError),
    /// The link could not be started or refused a command.
    Link(LinkError),
    /// The link closed (the description says why and what to check).
    Lost(String),
    /// No prompt came back in time.
    Timeout {
        /// The command waited for.
        command: String,
        /// How long we waited.
        waited: Duration,
    },
    /// `@LABEL` named no span known on this link.
    NoSuchSpan(String),
    /// The secure channel could not be set up (what is wrong and what to do).
    Secure(String),
}

impl fmt::Display for ShellError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShellError::Connect(e) => write!(f, "{e}"),
            ShellError::Link(e) => write!(f, "{e}"),
            ShellError::Lost(why) => write!(f, "connection lost: {why}"),
            ShellError::Timeout { command, waited } => write!(
                f,
                "no prompt from the peer within {:.1} s after {}; the peer may not be a DMSG \
                 debug shell (hammer2 service, or a dmsg node), or it is overloaded; use \
                 --timeout to wait longer",
                waited.as_secs_f64(),
                if command.is_empty() {
                    "connecting".to_string()
                } else {
                    format!("'{command}'")
                }
            ),
            ShellError::Secure(why) => write!(f, "--keys: {why}"),
            ShellError::NoSuchSpan(l) => write!(
                f,
                "@{l}: no span with that label is known on this link (see 'tree')"
            ),
        }
    }
}

impl std::error::Error for ShellError {}

impl ShellError {
    /// The `dmsg` exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ShellError::Timeout { .. } => crate::exit::TIMEOUT,
            ShellError::NoSuchSpan(_) => crate::exit::USAGE,
            _ => crate::exit::NETWORK,
        }
    }
}

/// A span the peer opened to us, remembered for `@LABEL`.
#[derive(Clone, Debug)]
struct KnownSpan {
    txn: TxnId,
    span: SpanRepr,
}

/// The shell's reaction to link events, and the sending of command lines.
#[derive(Debug)]
pub struct Shell {
    handle: LinkHandle,
    spans: Vec<KnownSpan>,
}

/// Spans remembered for `@LABEL` (the oldest are forgotten beyond this).
const MAX_SPANS: usize = 1024;

impl Shell {
    /// A shell over `handle`'s link.
    pub fn new(handle: LinkHandle) -> Shell {
        Shell {
            handle,
            spans: Vec::new(),
        }
    }

    /// The link.
    pub fn handle(&self) -> &LinkHandle {
        &self.handle
    }

    /// Sends one command line (without its newline) as DragonFly's client does.
    pub fn send_line(&mut self, line: &str) -> Result<(), ShellError> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let (circuit, cmd) = match line.strip_prefix('@') {
            Some(rest) => {
                let (label, cmd) = match rest.find([' ', '\t']) {
                    Some(i) => (&rest[..i], &rest[i + 1..]),
                    None => (rest, ""),
                };
                let span = self
                    .spans
                    .iter()
                    .find(|s| {
                        s.span.pfs_label.as_bytes() == label.as_bytes()
                            || s.span.peer_label.as_bytes() == label.as_bytes()
                    })
                    .ok_or_else(|| ShellError::NoSuchSpan(label.to_string()))?;
                (Some(span.txn), cmd)
            }
            None => (None, line),
        };
        let msg = Message::new(Command::DbgShell).with_aux(command_aux(cmd));
        self.handle
            .send_one_way(msg, false, circuit)
            .map_err(|e| match e {
                LinkError::Closed => ShellError::Lost("the link is closed".into()),
                e => ShellError::Link(e),
            })
    }

    /// Handles one link event; text goes to `out`.
    pub fn on_event(&mut self, ev: LinkEvent, out: &mut dyn FnMut(Output<'_>)) -> Step {
        match ev {
            LinkEvent::OneWay { msg } if msg.command() == Command::DbgShell => {
                if msg.flags().contains(Flags::REPLY) {
                    let text = msg.text();
                    if is_prompt(&text) {
                        out(Output::Prompt(&text));
                        return Step::Prompt;
                    }
                    out(Output::Text(&text));
                } else {
                    // We send commands, we do not run them (DragonFly's client ignores these too).
                    log::debug!("ignored a DBG_SHELL command from the peer");
                }
            }
            LinkEvent::Opened { txn, msg } => {
                if let (Command::LnkSpan, Body::Span(span)) = (msg.command(), msg.body) {
                    // Accept, as DragonFly's client does: LNK_ERROR|CREATE|REPLY|REVTRANS.
                    let r = if msg.flags().contains(Flags::DELETE) {
                        self.handle.delete(txn)
                    } else {
                        self.handle
                            .send(txn, Message::new(Command::LnkError), Flags::empty())
                    };
                    if r.is_ok() && !msg.flags().contains(Flags::DELETE) {
                        if self.spans.len() == MAX_SPANS {
                            self.spans.remove(0);
                        }
                        self.spans.push(KnownSpan { txn, span });
                    }
                } else {
                    let _ = self.handle.reply(txn, errcode::txn::NOSUPP);
                }
            }
            LinkEvent::Message { txn, msg }
                if txn.side() == Side::Theirs && msg.flags().contains(Flags::DELETE) =>
            {
                // The peer closed its side (e.g. a span went away): close ours.
                let _ = self.handle.delete(txn);
            }
            LinkEvent::Closed { txn, .. } => self.spans.retain(|s| s.txn != txn),
            ev @ LinkEvent::LinkClosed { .. } => {
                return Step::Closed(ev.close_description().unwrap_or_default())
            }
            _ => {}
        }
        Step::Continue
    }
}

/// Settings of a shell session.
#[derive(Clone, Debug)]
pub struct ShellOptions {
    /// The link (our LNK_CONN says peer type ROUTER, label `dmsg-shell`, as DragonFly's
    /// client sends type 1).
    pub link: LinkOptions,
    /// Timeout of the TCP connect (default 5 s).
    pub connect_timeout: Duration,
    /// Longest wait for a command's prompt (default 10 s).
    pub reply_timeout: Duration,
    /// After the last prompt, keep printing late output until it has been quiet this long
    /// (default 150 ms): DragonFly prints `ping reply` after the prompt of `ping`.
    pub linger: Duration,
    /// Run the secure channel with this setup (`--keys`); `None`: plaintext.
    pub keys: Option<std::sync::Arc<crate::secure::SecureSetup>>,
    /// The peer's name in the keys directory (default: the host part of the address).
    pub peer: Option<String>,
}

impl Default for ShellOptions {
    fn default() -> Self {
        let mut link = LinkOptions::default();
        link.config.conn.peer_type = peer_type::ROUTER;
        if let Ok(l) = Label::new("dmsg-shell") {
            link.config.conn.peer_label = l;
        }
        ShellOptions {
            link,
            connect_timeout: Duration::from_secs(5),
            reply_timeout: Duration::from_secs(10),
            linger: Duration::from_millis(150),
            keys: None,
            peer: None,
        }
    }
}

/// A shell session used one command at a time.
#[derive(Debug)]
pub struct ShellClient {
    shell: Shell,
    events: LinkEvents,
    reply_timeout: Duration,
}

/// How often a long wait reports progress.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);

impl ShellClient {
    /// Connects to `addr` and starts the link.
    pub fn connect(addr: &Addr, opts: &ShellOptions) -> Result<ShellClient, ShellError> {
        let mut stream = net::connect(addr, opts.connect_timeout).map_err(ShellError::Connect)?;
        let mut lo = opts.link.clone();
        lo.name.get_or_insert_with(|| addr.to_string());
        let ch = match &opts.keys {
            Some(setup) => {
                let peer = opts.peer.as_deref().unwrap_or(addr.host());
                crate::secure::dial_handshake(&mut stream, setup, peer)
                    .map_err(ShellError::Secure)?
            }
            None => None,
        };
        let (handle, events) = match ch {
            Some(ch) => link::spawn_secure(stream, lo, ch),
            None => link::spawn(stream, lo),
        }
        .map_err(ShellError::Link)?;
        Ok(ShellClient::over(handle, events, opts.reply_timeout))
    }

    /// A session over a running link.
    pub fn over(handle: LinkHandle, events: LinkEvents, reply_timeout: Duration) -> ShellClient {
        ShellClient {
            shell: Shell::new(handle),
            events,
            reply_timeout,
        }
    }

    /// The shell (for `send_line` and the link handle).
    pub fn shell(&mut self) -> &mut Shell {
        &mut self.shell
    }

    /// Splits the session into the shell and the event stream (for an interactive loop that
    /// reads events on another thread).
    pub fn into_parts(self) -> (Shell, LinkEvents) {
        (self.shell, self.events)
    }

    /// Waits for the next prompt; output goes to `out`, and `progress` is called with the
    /// time waited every [`PROGRESS_EVERY`]. `command` names what is waited for in errors.
    pub fn wait_prompt(
        &mut self,
        command: &str,
        out: &mut dyn FnMut(Output<'_>),
        progress: &mut dyn FnMut(Duration),
    ) -> Result<(), ShellError> {
        let start = Instant::now();
        let deadline = start + self.reply_timeout;
        let mut next_progress = start + PROGRESS_EVERY;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(ShellError::Timeout {
                    command: command.to_string(),
                    waited: self.reply_timeout,
                });
            }
            if now >= next_progress {
                progress(now - start);
                next_progress += PROGRESS_EVERY;
            }
            let wait = deadline.min(next_progress) - now;
            match self.events.recv_timeout(wait) {
                Ok(ev) => match self.shell.on_event(ev, out) {
                    Step::Prompt => return Ok(()),
                    Step::Closed(why) => return Err(ShellError::Lost(why)),
                    Step::Continue => {}
                },
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(ShellError::Lost("the link ended".into()))
                }
            }
        }
    }

    /// Sends `line` and waits for its prompt.
    pub fn command(
        &mut self,
        line: &str,
        out: &mut dyn FnMut(Output<'_>),
        progress: &mut dyn FnMut(Duration),
    ) -> Result<(), ShellError> {
        match self.shell.send_line(line) {
            Ok(()) => self.wait_prompt(line, out, progress),
            Err(ShellError::Lost(fallback)) => {
                Err(ShellError::Lost(self.close_reason(out, fallback)))
            }
            Err(e) => Err(e),
        }
    }

    /// After a command found the link closed: the reason from its `LinkClosed` event (passing
    /// on output still queued before it), or `fallback`.
    fn close_reason(&mut self, out: &mut dyn FnMut(Output<'_>), fallback: String) -> String {
        let end = Instant::now() + Duration::from_secs(1);
        while let Some(wait) = end.checked_duration_since(Instant::now()) {
            match self.events.recv_timeout(wait) {
                Ok(ev) => {
                    if let Step::Closed(why) = self.shell.on_event(ev, out) {
                        return why;
                    }
                }
                Err(_) => break,
            }
        }
        fallback
    }

    /// Sends the empty command that makes the peer print its first prompt, and waits for it.
    pub fn greet(
        &mut self,
        out: &mut dyn FnMut(Output<'_>),
        progress: &mut dyn FnMut(Duration),
    ) -> Result<(), ShellError> {
        self.command("", out, progress)
    }

    /// Runs `line` and returns its output without the prompt.
    pub fn collect(&mut self, line: &str) -> Result<String, ShellError> {
        let mut text = String::new();
        self.command(
            line,
            &mut |o| {
                if let Output::Text(t) = o {
                    text.push_str(t);
                }
            },
            &mut |_| {},
        )?;
        Ok(text)
    }

    /// Passes on output that arrives until none came for `quiet` (at most 10 × `quiet` in
    /// all). A link that closes meanwhile ends it quietly.
    pub fn linger(&mut self, quiet: Duration, out: &mut dyn FnMut(Output<'_>)) {
        let end = Instant::now() + quiet.saturating_mul(10);
        while Instant::now() < end {
            match self.events.recv_timeout(quiet) {
                Ok(ev) => {
                    if let Step::Closed(_) = self.shell.on_event(ev, out) {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }
}

/// How a script's output is shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScriptStyle {
    /// Leave the prompts out (only the commands' output).
    pub no_prompt: bool,
    /// Print each command after the prompt, as a terminal would show it.
    pub echo: bool,
}

/// Writes shell output to a stream, remembering the last prompt and the first write error.
struct Printer<'a> {
    out: &'a mut dyn Write,
    style: ScriptStyle,
    last_prompt: String,
    error: Option<std::io::Error>,
}

impl Printer<'_> {
    fn put(&mut self, o: Output<'_>) {
        match o {
            Output::Text(t) => self.raw(t),
            Output::Prompt(p) => {
                p.clone_into(&mut self.last_prompt);
                if !self.style.no_prompt {
                    self.raw(p);
                }
            }
        }
    }

    fn raw(&mut self, text: &str) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self
            .out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush())
        {
            self.error = Some(e);
        }
    }
}

fn waiting_note(err: &mut dyn Write, cmd: &str, waited: Duration) {
    let what = if cmd.is_empty() {
        "the first prompt".to_string()
    } else {
        format!("the answer to '{cmd}'")
    };
    let _ = writeln!(
        err,
        "dmsg shell: still waiting for {what} ({:.0} s)...",
        waited.as_secs_f64()
    );
}

/// Runs the commands read from `input` one line at a time: sends a line, prints its output
/// up to the prompt, then reads the next line. Ends after the last command's prompt (and the
/// linger). Progress notes go to `err`.
pub fn run_script(
    client: &mut ShellClient,
    input: &mut dyn BufRead,
    style: ScriptStyle,
    linger: Duration,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), ShellError> {
    let mut p = Printer {
        out,
        style,
        last_prompt: String::new(),
        error: None,
    };
    client.greet(&mut |o| p.put(o), &mut |w| waiting_note(err, "", w))?;
    let mut line = String::new();
    loop {
        line.clear();
        match input.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                let _ = writeln!(err, "dmsg shell: cannot read standard input: {e}");
                break;
            }
        }
        let cmd = line.strip_suffix('\n').unwrap_or(&line).to_string();
        if style.echo {
            p.raw(&cmd);
            p.raw("\n");
        }
        match client.command(&cmd, &mut |o| p.put(o), &mut |w| waiting_note(err, &cmd, w)) {
            Ok(()) => {}
            Err(e @ ShellError::NoSuchSpan(_)) => {
                // DragonFly's client prints this and sends nothing: no prompt will come.
                let _ = writeln!(err, "dmsg shell: {e}");
                if !style.no_prompt {
                    let prompt = p.last_prompt.clone();
                    p.raw(&prompt);
                }
                continue;
            }
            Err(e) => return Err(e),
        }
    }
    client.linger(linger, &mut |o| p.put(o));
    match p.error {
        Some(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            let _ = writeln!(err, "dmsg shell: cannot write the output: {e}");
        }
        _ => {}
    }
    Ok(())
}
