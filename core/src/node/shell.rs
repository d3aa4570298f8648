//! The debug shell: DBG_SHELL one-way frames carry a NUL-terminated command in aux data;
//! the answer is one DBG_SHELL|REPLY frame per output line (`line\n\0`), then the
//! `debug> ` prompt, exactly as DragonFly's daemon frames it (see
//! `tests/data/dragonfly/11_plain_shell*`). An empty command gets just the prompt.
//!
//! Commands: `help`, `tree` (the span tree in DragonFly's format, with the relays of each
//! span), `conns` (the links), `dot` (the span tree as Graphviz DOT); anything else is
//! answered `Unrecognized command: <word>`.
//!
//! Output is produced one line at a time as the link's output queue has room (a bounded
//! job per link, no buffer of the whole output): line `k` is found by running the
//! formatter and keeping only the `k`-th line, so a dump of `L` lines costs O(L^2)
//! formatting, which is fine for a debug command. The output of a long dump may mix two
//! states of the table if it changes meanwhile. While a job runs, the link's next
//! DBG_SHELL waits.

use core::fmt::{self, Write};

use crate::crc::Crc32c;
use crate::link::SessionSlot;
use crate::link::{LinkState, Outgoing, SendError, CTL_RESERVE};
use crate::span::{peer_type_name, write_relay_out};
use crate::wire::Command;

use super::relay::RelayState;
use super::Node;

/// Longest output line sent (longer lines are cut).
pub const LINE_MAX: usize = 512;
/// Longest unrecognized command echoed back.
const WORD_MAX: usize = 64;

/// A parsed shell command.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ShellCmd {
    /// Empty: just the prompt.
    Prompt,
    Help,
    Tree,
    Conns,
    Dot,
    Unknown(heapless::String<WORD_MAX>),
}

impl ShellCmd {
    /// Parses the aux data of a DBG_SHELL frame: text up to the first NUL, first word.
    pub fn parse(aux: &[u8]) -> ShellCmd {
        let text = aux.split(|&b| b == 0).next().unwrap_or(&[]);
        let text = trim(text);
        let word = text
            .split(|b| b.is_ascii_whitespace())
            .next()
            .unwrap_or(&[]);
        match word {
            b"" => ShellCmd::Prompt,
            b"help" => ShellCmd::Help,
            b"tree" => ShellCmd::Tree,
            b"conns" => ShellCmd::Conns,
            b"dot" => ShellCmd::Dot,
            other => {
                let mut s = heapless::String::new();
                for &b in other.iter().take(WORD_MAX) {
                    let c = if b.is_ascii_graphic() { b as char } else { '?' };
                    let _ = s.push(c);
                }
                ShellCmd::Unknown(s)
            }
        }
    }
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if first.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = b {
        if last.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    b
}

/// A shell answer in progress on one link.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ShellJob {
    pub cmd: ShellCmd,
    /// The next output line to send.
    pub line: u32,
}

/// A `fmt::Write` that keeps only line number `want` (0-based) and stops the formatter
/// right after it.
struct LineCapture<'b> {
    want: u32,
    cur: u32,
    buf: &'b mut [u8],
    len: usize,
    found: bool,
}

impl Write for LineCapture<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.cur == self.want {
                if b == b'\n' {
                    self.found = true;
                    return Err(fmt::Error); // stop: the line is complete
                }
                if let Some(d) = self.buf.get_mut(self.len) {
                    *d = b;
                    self.len += 1;
                }
            } else if b == b'\n' {
                self.cur += 1;
            }
        }
        Ok(())
    }
}

const HELP: &[(&str, &str)] = &[
    ("help", "Command help"),
    ("tree", "Dump spanning tree"),
    ("conns", "List links"),
    ("dot", "Spanning tree as Graphviz DOT"),
];

impl<
        const LINKS: usize,
        const SPANS: usize,
        const RELAYS: usize,
        const ROUTES: usize,
        const RX: usize,
        const AUX: usize,
        const TX: usize,
        const TXNS: usize,
        C: Crc32c + Clone,
        S: SessionSlot<C>,
    > Node<LINKS, SPANS, RELAYS, ROUTES, RX, AUX, TX, TXNS, C, S>
{
    /// Writes the span tree the way DragonFly's shell prints it, with a `Relay-out` line
    /// under each span for every relay of it.
    pub fn write_tree(&self, w: &mut impl Write) -> fmt::Result {
        let relays = &self.relays;
        self.spans.write_tree_relays(w, |w, key| {
            let Some(e) = self.spans.get(key) else {
                return Ok(());
            };
            let node = super::NodeAddr {
                peer_id: e.span.peer_id,
                pfs_id: e.span.pfs_id,
            };
            for p in relays.of_node(&node) {
                let Some(r) = relays.get(p) else { continue };
                if r.source != key || r.state != RelayState::Open {
                    continue;
                }
                if let Some(t) = r.txn {
                    write_relay_out(w, t.msgid(), r.conn)?;
                }
            }
            Ok(())
        })
    }

    /// Writes the span tree as a Graphviz DOT digraph (labelled with our label).
    pub fn write_dot(&self, w: &mut impl Write) -> fmt::Result {
        self.spans
            .write_dot(w, self.config.label.as_str().unwrap_or("?"))
    }

    /// Writes one line per link: id, state, the peer's type and label, counters.
    pub fn write_conns(&self, w: &mut impl Write) -> fmt::Result {
        for s in self.slots.iter().flatten() {
            let state = match (s.down, s.conn.state()) {
                (true, _) | (_, LinkState::Closed) => "closed",
                (_, LinkState::Closing) => "closing",
                (_, LinkState::Open) => "open",
            };
            let (ptype, label) = match s.conn.peer_conn() {
                Some(pc) => (pc.peer_type, pc.peer_label),
                None => (0, crate::wire::Label::EMPTY),
            };
            let ls = s.conn.stats();
            writeln!(
                w,
                "link {} {} {} ({}) frames in={} out={} spans in={} relays out={} relayed in={} out={} stalls={}",
                s.id,
                state,
                if s.conn.peer_conn().is_some() {
                    peer_type_name(ptype)
                } else {
                    peer_type_name(0)
                },
                label,
                ls.frames_in,
                ls.frames_out,
                s.stats.spans_in,
                s.stats.relays_out,
                s.stats.frames_relayed_in,
                s.stats.frames_relayed_out,
                s.stats.stalls,
            )?;
        }
        Ok(())
    }

    /// The whole output of `cmd` (without the prompt).
    fn write_shell(&self, cmd: &ShellCmd, w: &mut impl Write) -> fmt::Result {
        match cmd {
            ShellCmd::Prompt => Ok(()),
            ShellCmd::Help => {
                for (name, what) in HELP {
                    writeln!(w, "{name:<16}{what}")?;
                }
                Ok(())
            }
            ShellCmd::Tree => self.write_tree(w),
            ShellCmd::Conns => self.write_conns(w),
            ShellCmd::Dot => self.write_dot(w),
            ShellCmd::Unknown(word) => writeln!(w, "Unrecognized command: {word}"),
        }
    }

    /// Line `k` of `cmd`'s output into `buf`; its length, or `None` past the last line.
    fn shell_line(&self, cmd: &ShellCmd, k: u32, buf: &mut [u8]) -> Option<usize> {
        let mut cap = LineCapture {
            want: k,
            cur: 0,
            buf,
            len: 0,
            found: false,
        };
        let _ = self.write_shell(cmd, &mut cap);
        if cap.found || (cap.cur == k && cap.len > 0) {
            Some(cap.len)
        } else {
            None
        }
    }

    /// Sends what fits of every running shell answer. Returns true when anything was sent.
    pub(super) fn run_shell(&mut self) -> bool {
        let mut did = false;
        let now = self.now;
        // Room for the frame header and the "\n\0" ending.
        let line_cap = LINE_MAX.min(TX.saturating_sub(CTL_RESERVE + 64 + 64));
        for i in 0..LINKS {
            loop {
                let Some(job) = self
                    .slots
                    .get(i)
                    .and_then(|s| s.as_ref())
                    .and_then(|s| s.shell.clone())
                else {
                    break;
                };
                let mut buf = [0u8; LINE_MAX + 2];
                let (len, last) = match self.shell_line(&job.cmd, job.line, &mut buf[..line_cap]) {
                    Some(n) => {
                        buf[n] = b'\n';
                        buf[n + 1] = 0;
                        (n + 2, false)
                    }
                    None => {
                        let p = b"debug> \0";
                        buf[..p.len()].copy_from_slice(p);
                        (p.len(), true)
                    }
                };
                let Some(slot) = self.slots.get_mut(i).and_then(|s| s.as_mut()) else {
                    break;
                };
                let msg = Outgoing::new(Command::DbgShell).with_aux(&buf[..len]);
                match slot.conn.send_one_way(now, &msg, true, None) {
                    Ok(()) => {
                        did = true;
                        if last {
                            slot.shell = None;
                        } else if let Some(j) = slot.shell.as_mut() {
                            j.line += 1;
                        }
                    }
                    Err(SendError::WouldBlock { .. }) => break,
                    Err(_) => {
                        slot.shell = None;
                        break;
                    }
                }
            }
        }
        did
    }
}
