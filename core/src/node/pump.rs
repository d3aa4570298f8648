//! Taking each link's events and acting on them.
//!
//! A link's next event is first *peeked* ([`Connection::peek_event`]) and judged: what it
//! needs (room on this link for an answer, room on another link to forward a frame, a free
//! route entry) is checked before it is taken. When something is missing the event stays
//! where it is, the link reads no more input (pushing back on its peer through the
//! transport), and it is looked at again when output drains. So a relayed frame is never
//! copied into a buffer of the node and never lost. Frames for the application also stay in
//! their link until [`Node::poll_event`](super::Node::poll_event) hands them out.
//!
//! [`Connection::peek_event`]: crate::link::Connection::peek_event

use crate::crc::Crc32c;
use crate::errcode::txn as err;
use crate::link::txn::Dir;
use crate::link::SessionSlot;
use crate::link::{
    CloseReason, Event, LinkState, Outgoing, Received, SendError, Side, TxnEnd, TxnId, CTL_RESERVE,
};
use crate::span::SpanKey;
use crate::wire::body::SpanRepr;
use crate::wire::{align64, Body, Cmd, Command, Flags, MsgId};

use super::event::{Notice, NOTICE_SLACK};
use super::relay::RelayState;
use super::route::{Route, RouteEnd};
use super::shell::{ShellCmd, ShellJob};
use super::slot::AppPending;
use super::types::{tag, NodeAddr, NodeTxn, Via};
use super::Node;

/// What to do with a link's next event. Short-lived, on the stack (a span body is copied
/// in; there is no heap to box it into).
#[allow(clippy::large_enum_variant)]
enum Decision {
    /// Leave it: something it needs is missing now.
    Stall,
    /// Leave it for the application, after tagging / recording it.
    App {
        kind: AppPending,
        txn: Option<TxnId>,
        set_tag: Option<u8>,
        route: Option<RouteEnd>,
        /// Answer the peer's ABORT|DELETE for the application, with this error.
        auto_abort: Option<u32>,
    },
    /// Take it and act here.
    Local(Local),
    /// Send the frame on over another link, then take it.
    Forward(Forward),
}

#[allow(clippy::large_enum_variant)]
enum Local {
    LinkUp,
    PeerConn,
    Suspended,
    Resumed,
    Ignore,
    SpanOpen {
        txn: TxnId,
        span: Option<SpanRepr>,
        delete: bool,
    },
    SpanUpdate {
        txn: TxnId,
        span: SpanRepr,
    },
    SpanDelete {
        txn: TxnId,
        answer: bool,
    },
    RelayPeerDelete {
        txn: TxnId,
        answer: bool,
    },
    Refuse {
        txn: TxnId,
        error: u32,
    },
    Drop,
    DropOpened {
        txn: TxnId,
    },
    DropKill {
        route: usize,
    },
    DropOneWay,
    Shell(ShellCmd),
    Closed {
        txn: TxnId,
        error: u32,
        end: TxnEnd,
        tag: u8,
    },
    LinkClosed(CloseReason),
}

enum Forward {
    /// A CREATE over a circuit: open it on slot `to`, stacked on `circuit` there.
    Open {
        to: usize,
        circuit: TxnId,
        in_circuit: TxnId,
    },
    /// A frame of a routed transaction: send it in `txn` on slot `to`.
    Send {
        to: usize,
        txn: TxnId,
        route: usize,
        end: usize,
        abort: bool,
    },
    /// A one-way frame over a circuit: send it on slot `to` over `circuit`.
    OneWay { to: usize, circuit: TxnId },
}

/// Bytes a frame takes when sent on, or `None` when it cannot be sent on unchanged (an
/// unknown command whose extended header was too long to keep).
pub(super) fn relayed_len(msg: &Received<'_>) -> Option<usize> {
    let command = msg.command();
    let header = if !msg.ext.is_empty() {
        64 + align64(msg.ext.len())
    } else if command.struct_len().is_none() && msg.header.cmd.size_blocks() > 1 {
        return None;
    } else {
        Cmd::new(command, Flags::empty()).header_len()
    };
    Some(header + align64(msg.aux.len()))
}

/// Room an answer on the same link needs (one 64-byte LNK_ERROR).
const ANSWER: usize = 64;

/// Frames and bytes a link running a reliable session keeps free for answers: frames that
/// may need an answer from the peer (opens, relayed frames, DELETEs of our relays, the
/// application's opens) are sent only while this much more is free in its window; answers
/// may use it.
///
/// Without it two nodes can deadlock: a session's window frees only when the peer
/// acknowledges, a peer acknowledges a frame only when it can act on it, and acting on an
/// open needs room for the answer in its own window. If both windows fill with opens (relays
/// crossing after a partition heals, say), each side waits for the other forever. With the
/// answers' room kept, every frame that needs an answer can be answered, answers need no
/// answer, and acks keep flowing. (A plain link's output queue drains into the transport
/// whatever the peer does, so it keeps nothing.)
///
/// At most this many answers' room is kept, and at most a quarter of the window's frames
/// (at least 2): 8 for a 32-frame window, 3 for an MCU's 12.
pub(super) const ANSWER_FRAMES: u16 = 8;

/// The largest frame that may need an answer `conn` can take now, and the bytes kept for
/// answers (see [`ANSWER_FRAMES`]).
pub(super) fn open_room<
    const RX: usize,
    const AUX: usize,
    const TX: usize,
    const TXNS: usize,
    C,
    S,
>(
    conn: &crate::link::Connection<RX, AUX, TX, TXNS, C, S>,
) -> (usize, usize)
where
    C: Crc32c + Clone,
    S: SessionSlot<C>,
{
    conn.send_capacity_keeping(ANSWER_FRAMES, ANSWER as u32)
}

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
    /// Takes the events of every link that may have some. Returns true when any was taken.
    pub(super) fn pump_all(&mut self) -> bool {
        let mut did = false;
        let room = self.room_freed;
        for i in 0..LINKS {
            let wants = self
                .slots
                .get(i)
                .and_then(|s| s.as_ref())
                .is_some_and(|s| s.app.is_none() && (s.active || (s.stalled && room)));
            if wants {
                did |= self.pump_link(i);
            }
        }
        did
    }

    /// Takes slot `a`'s events until one must wait. Returns true when any was taken.
    fn pump_link(&mut self, a: usize) -> bool {
        let mut did = false;
        loop {
            let Some(slot) = self.slots.get(a).and_then(|s| s.as_ref()) else {
                return did;
            };
            if slot.app.is_some() || self.notices.free() < NOTICE_SLACK {
                return did;
            }
            let Some(d) = self.decide(a) else {
                if let Some(s) = self.slots.get_mut(a).and_then(|s| s.as_mut()) {
                    s.active = false;
                    s.stalled = false;
                }
                return did;
            };
            let Some(slot) = self.slots.get_mut(a).and_then(|s| s.as_mut()) else {
                return did;
            };
            if let Decision::Stall = d {
                if !slot.stalled {
                    slot.stalled = true;
                    slot.stats.stalls += 1;
                    self.stats.stalls += 1;
                }
                slot.active = false;
                return did;
            }
            slot.stalled = false;
            if !self.execute(a, d) {
                // A forward found no room after all: wait like a stall.
                if let Some(s) = self.slots.get_mut(a).and_then(|s| s.as_mut()) {
                    s.stalled = true;
                    s.active = false;
                }
                return did;
            }
            did = true;
        }
    }

    // ------------------------------------------------------------------------------
    // Judging

    fn decide(&self, a: usize) -> Option<Decision> {
        let slot = self.slots.get(a)?.as_ref()?;
        let conn = &slot.conn;
        let ev = conn.peek_event()?;
        let room_a = conn.send_capacity() >= ANSWER;
        if conn.is_closed() || slot.discard_app {
            // A frame left over from a link that died (or that the application dropped):
            // nothing can be answered or relayed on it, and its transactions are reported
            // lost right after. A transaction whose opening frame is dropped here is marked
            // refused, so its loss is not reported to the application either.
            match ev {
                Event::Opened { txn, .. } => {
                    return Some(Decision::Local(Local::DropOpened { txn }))
                }
                Event::Message { .. } | Event::OneWay { .. } => {
                    return Some(Decision::Local(Local::Drop))
                }
                _ => {}
            }
        }
        Some(match ev {
            Event::Connected => Decision::Local(Local::LinkUp),
            Event::PeerConn { .. } => Decision::Local(Local::PeerConn),
            Event::ConnAnswered { .. } => Decision::Local(Local::Ignore),
            Event::Closed { txn, error, end } => Decision::Local(Local::Closed {
                txn,
                error,
                end,
                tag: conn.txn_tag(txn).unwrap_or(tag::NONE),
            }),
            Event::LinkClosed { reason } => Decision::Local(Local::LinkClosed(reason)),
            // A reliable session lost or regained its transport: the link (and everything
            // on it: spans, relays, routes, transactions) lives on; only the application is
            // told.
            Event::Suspended { .. } => Decision::Local(Local::Suspended),
            Event::Resumed { .. } => Decision::Local(Local::Resumed),
            Event::Opened { txn, msg } => self.decide_opened(a, txn, &msg, room_a),
            Event::Message { txn, msg } => self.decide_message(a, txn, &msg, room_a),
            Event::OneWay { msg } => self.decide_one_way(a, &msg),
        })
    }

    /// The transaction a frame's circuit names on slot `a`, with its tag.
    fn resolve_circuit(&self, a: usize, msg: &Received<'_>) -> Option<(TxnId, u8)> {
        let conn = &self.slots.get(a)?.as_ref()?.conn;
        let side = if msg.flags().contains(Flags::REVCIRC) {
            Side::Ours
        } else {
            Side::Theirs
        };
        let t = conn.txn_handle(side, MsgId(msg.header.circuit.0))?;
        Some((t, conn.txn_tag(t)?))
    }

    /// Slot `b` can carry new frames.
    fn usable(&self, b: usize) -> bool {
        self.slots
            .get(b)
            .and_then(|s| s.as_ref())
            .is_some_and(|s| !s.down && !s.discard_app && s.conn.state() == LinkState::Open)
    }

    fn refuse(txn: TxnId, error: u32) -> Decision {
        Decision::Local(Local::Refuse { txn, error })
    }

    fn decide_opened(&self, a: usize, txn: TxnId, msg: &Received<'_>, room_a: bool) -> Decision {
        if msg.header.circuit.0 == 0 {
            if msg.command() == Command::LnkSpan {
                if !room_a {
                    return Decision::Stall;
                }
                let span = match msg.body {
                    Body::Span(s) => Some(*s),
                    _ => None,
                };
                return Decision::Local(Local::SpanOpen {
                    txn,
                    span,
                    delete: msg.flags().contains(Flags::DELETE),
                });
            }
            return Decision::App {
                kind: AppPending::Opened(Via::Direct),
                txn: Some(txn),
                set_tag: Some(tag::APP),
                route: None,
                auto_abort: None,
            };
        }
        // Over a circuit: every outcome may need a refusal on this link.
        if !room_a {
            return Decision::Stall;
        }
        let Some((ctxn, ctag)) = self.resolve_circuit(a, msg) else {
            return Self::refuse(txn, err::CANTCIRC);
        };
        let Some(id) = self.slots.get(a).and_then(|s| s.as_ref()).map(|s| s.id) else {
            return Decision::Stall;
        };
        match ctag {
            tag::RELAY => {
                let Some(r) = self
                    .relays
                    .find_txn(id, ctxn.msgid())
                    .and_then(|p| self.relays.get(p))
                else {
                    return Self::refuse(txn, err::CANTCIRC);
                };
                if r.state != RelayState::Open {
                    return Self::refuse(txn, err::CANTCIRC);
                }
                if r.source.via.is_local() {
                    return self.app_over_circuit(
                        a,
                        txn,
                        ctxn,
                        AppPending::Opened(Via::Circuit { to: r.node }),
                    );
                }
                let Some(b) = self.slot_index(r.source.via) else {
                    return Self::refuse(txn, err::CANTCIRC);
                };
                let cb = self
                    .slots
                    .get(b)
                    .and_then(|s| s.as_ref())
                    .and_then(|s| s.conn.txn_handle(Side::Theirs, r.source.msgid));
                match cb {
                    Some(cb) => self.forward_open(b, cb, ctxn, txn, msg),
                    None => Self::refuse(txn, err::CANTCIRC),
                }
            }
            tag::SPAN => {
                let key = SpanKey {
                    via: id,
                    msgid: ctxn.msgid(),
                };
                match self.spans.get(key) {
                    Some(e) => self.app_over_circuit(
                        a,
                        txn,
                        ctxn,
                        AppPending::Opened(Via::PeerSpan {
                            from: NodeAddr {
                                peer_id: e.span.peer_id,
                                pfs_id: e.span.pfs_id,
                            },
                        }),
                    ),
                    None => Self::refuse(txn, err::CANTCIRC),
                }
            }
            tag::ROUTE => {
                let Some((p, i)) = self.routes.find(id, ctxn) else {
                    return Self::refuse(txn, err::CANTCIRC);
                };
                let Some(r) = self.routes.get(p) else {
                    return Self::refuse(txn, err::CANTCIRC);
                };
                let partner = r.ends[1 - i];
                match partner {
                    Some(pe) if !r.dying && !pe.closed => match self.slot_index(pe.link) {
                        Some(b) => self.forward_open(b, pe.txn, ctxn, txn, msg),
                        None => Self::refuse(txn, err::CANTCIRC),
                    },
                    _ => Self::refuse(txn, err::CANTCIRC),
                }
            }
            tag::APP | tag::APP_ROUTED => self.app_over_circuit(
                a,
                txn,
                ctxn,
                AppPending::Opened(Via::Stacked {
                    parent: NodeTxn {
                        link: id,
                        txn: ctxn,
                    },
                }),
            ),
            _ => Self::refuse(txn, err::CANTCIRC),
        }
    }

    /// A transaction over a circuit for the application: it gets a route entry so it dies
    /// with its circuit.
    fn app_over_circuit(&self, a: usize, txn: TxnId, ctxn: TxnId, kind: AppPending) -> Decision {
        if self.routes.is_full() {
            return Self::refuse(txn, err::PARAM);
        }
        let Some(id) = self.slots.get(a).and_then(|s| s.as_ref()).map(|s| s.id) else {
            return Decision::Stall;
        };
        Decision::App {
            kind,
            txn: Some(txn),
            set_tag: Some(tag::APP_ROUTED),
            route: Some(RouteEnd {
                link: id,
                txn,
                circuit: ctxn,
                closed: false,
                kill: false,
            }),
            auto_abort: None,
        }
    }

    fn forward_open(
        &self,
        b: usize,
        circuit: TxnId,
        in_circuit: TxnId,
        txn: TxnId,
        msg: &Received<'_>,
    ) -> Decision {
        if !self.usable(b) {
            return Self::refuse(txn, err::CANTCIRC);
        }
        let Some(conn_b) = self.slots.get(b).and_then(|s| s.as_ref()).map(|s| &s.conn) else {
            return Self::refuse(txn, err::CANTCIRC);
        };
        let len = match relayed_len(msg) {
            Some(n) if n <= TX - CTL_RESERVE => n,
            _ => return Self::refuse(txn, err::PARAM),
        };
        if self.routes.is_full() || conn_b.table_entries(Side::Ours) >= TXNS {
            return Self::refuse(txn, err::PARAM);
        }
        if open_room(conn_b).0 < len {
            return Decision::Stall;
        }
        Decision::Forward(Forward::Open {
            to: b,
            circuit,
            in_circuit,
        })
    }

    fn decide_message(&self, a: usize, txn: TxnId, msg: &Received<'_>, room_a: bool) -> Decision {
        let Some(slot) = self.slots.get(a).and_then(|s| s.as_ref()) else {
            return Decision::Stall;
        };
        let conn = &slot.conn;
        let t = conn.txn_tag(txn).unwrap_or(tag::NONE);
        let flags = msg.flags();
        let our_open = conn.txn_state(txn).is_some_and(|s| s.local != Dir::Closed);
        match t {
            tag::SPAN => {
                if flags.contains(Flags::DELETE) {
                    if our_open && !room_a {
                        return Decision::Stall;
                    }
                    Decision::Local(Local::SpanDelete {
                        txn,
                        answer: our_open,
                    })
                } else if let Body::Span(s) = msg.body {
                    Decision::Local(Local::SpanUpdate { txn, span: *s })
                } else {
                    Decision::Local(Local::Ignore)
                }
            }
            tag::RELAY => {
                if flags.contains(Flags::DELETE) {
                    if our_open && !room_a {
                        return Decision::Stall;
                    }
                    Decision::Local(Local::RelayPeerDelete {
                        txn,
                        answer: our_open,
                    })
                } else {
                    Decision::Local(Local::Ignore)
                }
            }
            tag::ROUTE => {
                let Some((p, i)) = self.routes.find(slot.id, txn) else {
                    return Decision::Local(Local::Drop);
                };
                let Some(r) = self.routes.get(p) else {
                    return Decision::Local(Local::Drop);
                };
                if r.dying {
                    return Decision::Local(Local::Drop);
                }
                let Some(pe) = r.ends[1 - i] else {
                    return Decision::Local(Local::DropKill { route: p });
                };
                let b = match self.slot_index(pe.link) {
                    Some(b) if !pe.closed && self.usable(b) => b,
                    _ => return Decision::Local(Local::DropKill { route: p }),
                };
                let len = match relayed_len(msg) {
                    Some(n) if n <= TX - CTL_RESERVE => n,
                    _ => return Decision::Local(Local::DropKill { route: p }),
                };
                let room_b = self
                    .slots
                    .get(b)
                    .and_then(|s| s.as_ref())
                    .is_some_and(|s| open_room(&s.conn).0 >= len);
                if !room_b {
                    return Decision::Stall;
                }
                Decision::Forward(Forward::Send {
                    to: b,
                    txn: pe.txn,
                    route: p,
                    end: i,
                    abort: flags.contains(Flags::ABORT | Flags::DELETE),
                })
            }
            tag::REFUSED => Decision::Local(Local::Drop),
            _ => {
                let abort = flags.contains(Flags::ABORT | Flags::DELETE) && our_open;
                if abort && !room_a {
                    return Decision::Stall;
                }
                Decision::App {
                    kind: AppPending::Message,
                    txn: Some(txn),
                    set_tag: None,
                    route: None,
                    auto_abort: abort.then_some(msg.error()),
                }
            }
        }
    }

    fn decide_one_way(&self, a: usize, msg: &Received<'_>) -> Decision {
        let Some(slot) = self.slots.get(a).and_then(|s| s.as_ref()) else {
            return Decision::Stall;
        };
        let circuit = msg.header.circuit.0;
        if msg.command() == Command::DbgShell && !msg.flags().contains(Flags::REPLY) && circuit == 0
        {
            if slot.shell.is_some() {
                return Decision::Stall;
            }
            return Decision::Local(Local::Shell(ShellCmd::parse(msg.aux)));
        }
        let app = |via| Decision::App {
            kind: AppPending::OneWay(via),
            txn: None,
            set_tag: None,
            route: None,
            auto_abort: None,
        };
        if circuit == 0 {
            return app(Via::Direct);
        }
        let Some((ctxn, ctag)) = self.resolve_circuit(a, msg) else {
            return Decision::Local(Local::DropOneWay);
        };
        let id = slot.id;
        // Where the frame goes on: (slot, circuit there).
        let onward = match ctag {
            tag::RELAY => {
                let Some(r) = self
                    .relays
                    .find_txn(id, ctxn.msgid())
                    .and_then(|p| self.relays.get(p))
                else {
                    return Decision::Local(Local::DropOneWay);
                };
                if r.state != RelayState::Open {
                    return Decision::Local(Local::DropOneWay);
                }
                if r.source.via.is_local() {
                    return app(Via::Circuit { to: r.node });
                }
                let b = self.slot_index(r.source.via);
                let cb = b.and_then(|b| {
                    self.slots
                        .get(b)
                        .and_then(|s| s.as_ref())
                        .and_then(|s| s.conn.txn_handle(Side::Theirs, r.source.msgid))
                });
                b.zip(cb)
            }
            tag::SPAN => {
                let key = SpanKey {
                    via: id,
                    msgid: ctxn.msgid(),
                };
                return match self.spans.get(key) {
                    Some(e) => app(Via::PeerSpan {
                        from: NodeAddr {
                            peer_id: e.span.peer_id,
                            pfs_id: e.span.pfs_id,
                        },
                    }),
                    None => Decision::Local(Local::DropOneWay),
                };
            }
            tag::APP | tag::APP_ROUTED => {
                return app(Via::Stacked {
                    parent: NodeTxn {
                        link: id,
                        txn: ctxn,
                    },
                })
            }
            tag::ROUTE => self.routes.find(id, ctxn).and_then(|(p, i)| {
                let r = self.routes.get(p)?;
                let pe = r.ends[1 - i]?;
                if r.dying || pe.closed {
                    return None;
                }
                Some((self.slot_index(pe.link)?, pe.txn))
            }),
            _ => None,
        };
        let Some((b, cb)) = onward else {
            return Decision::Local(Local::DropOneWay);
        };
        if !self.usable(b) {
            return Decision::Local(Local::DropOneWay);
        }
        let len = match relayed_len(msg) {
            Some(n) if n <= TX - CTL_RESERVE => n,
            _ => return Decision::Local(Local::DropOneWay),
        };
        let room_b = self
            .slots
            .get(b)
            .and_then(|s| s.as_ref())
            .is_some_and(|s| open_room(&s.conn).0 >= len);
        if !room_b {
            return Decision::Stall;
        }
        Decision::Forward(Forward::OneWay { to: b, circuit: cb })
    }

    // ------------------------------------------------------------------------------
    // Acting

    /// Carries out a decision for slot `a`. Returns false when a forward found no room
    /// after all (the event stays).
    fn execute(&mut self, a: usize, d: Decision) -> bool {
        match d {
            Decision::Stall => false,
            Decision::App {
                kind,
                txn,
                set_tag,
                route,
                auto_abort,
            } => {
                self.execute_app(a, kind, txn, set_tag, route, auto_abort);
                true
            }
            Decision::Local(l) => {
                let Some(slot) = self.slots.get_mut(a).and_then(|s| s.as_mut()) else {
                    return true;
                };
                let _ = slot.conn.poll_event();
                self.execute_local(a, l);
                true
            }
            Decision::Forward(f) => self.execute_forward(a, f),
        }
    }

    fn execute_app(
        &mut self,
        a: usize,
        kind: AppPending,
        txn: Option<TxnId>,
        set_tag: Option<u8>,
        route: Option<RouteEnd>,
        auto_abort: Option<u32>,
    ) {
        let now = self.now;
        let Some(slot) = self.slots.get_mut(a).and_then(|s| s.as_mut()) else {
            return;
        };
        if let (Some(t), Some(tg)) = (txn, set_tag) {
            slot.conn.set_txn_tag(t, tg);
        }
        if let (Some(t), Some(error)) = (txn, auto_abort) {
            let msg = Outgoing::new(Command::LnkError).with_error(error);
            let sent = slot.conn.send(now, t, &msg, Flags::ABORT | Flags::DELETE);
            debug_assert!(sent_ok(&sent), "room was checked: {sent:?}");
        }
        slot.app = Some(kind);
        if let Some(end) = route {
            let ok = self.routes.insert(Route {
                ends: [Some(end), None],
                dying: false,
            });
            debug_assert!(ok, "checked is_full");
            self.stats.routes_app += 1;
            self.stats.routes_high_water =
                self.stats.routes_high_water.max(self.routes.len() as u64);
        }
    }

    fn execute_forward(&mut self, a: usize, f: Forward) -> bool {
        let now = self.now;
        let b = match f {
            Forward::Open { to, .. } | Forward::Send { to, .. } | Forward::OneWay { to, .. } => to,
        };
        let Some((sa, sb)) = two_mut(&mut self.slots, a, b) else {
            // Never back out of the same link (the relay rules exclude it): drop.
            if let Some(s) = self.slots.get_mut(a).and_then(|s| s.as_mut()) {
                let _ = s.conn.poll_event();
            }
            self.stats.frames_dropped += 1;
            return true;
        };
        let (Some(sa), Some(sb)) = (sa.as_mut(), sb.as_mut()) else {
            return true;
        };
        sb.active = true;
        match f {
            Forward::Open {
                circuit,
                in_circuit,
                ..
            } => {
                let Some(Event::Opened { txn: ta, msg }) = sa.conn.peek_event() else {
                    return true;
                };
                let out = Outgoing::relay_of(&msg);
                let flags = msg.flags() & (Flags::DELETE | Flags::ABORT);
                let aux = msg.aux.len() as u64;
                let res = sb.conn.open(now, &out, flags, Some(circuit));
                match res {
                    Ok(tb) => {
                        let _ = sa.conn.poll_event();
                        sa.conn.set_txn_tag(ta, tag::ROUTE);
                        sb.conn.set_txn_tag(tb, tag::ROUTE);
                        sa.stats.frames_relayed_in += 1;
                        sb.stats.frames_relayed_out += 1;
                        let route = Route {
                            ends: [
                                Some(RouteEnd {
                                    link: sa.id,
                                    txn: ta,
                                    circuit: in_circuit,
                                    closed: false,
                                    kill: false,
                                }),
                                Some(RouteEnd {
                                    link: sb.id,
                                    txn: tb,
                                    circuit,
                                    closed: false,
                                    kill: false,
                                }),
                            ],
                            dying: false,
                        };
                        let ok = self.routes.insert(route);
                        debug_assert!(ok, "checked is_full");
                        self.stats.routes_relayed += 1;
                        self.stats.frames_relayed += 1;
                        self.stats.aux_bytes_relayed += aux;
                        self.stats.routes_high_water =
                            self.stats.routes_high_water.max(self.routes.len() as u64);
                        true
                    }
                    Err(SendError::WouldBlock { .. }) => false,
                    Err(_) => {
                        let _ = sa.conn.poll_event();
                        self.execute_local(
                            a,
                            Local::Refuse {
                                txn: ta,
                                error: err::PARAM,
                            },
                        );
                        true
                    }
                }
            }
            Forward::Send {
                txn: tb,
                route,
                end,
                abort,
                ..
            } => {
                let Some(Event::Message { msg, .. }) = sa.conn.peek_event() else {
                    return true;
                };
                let out = Outgoing::relay_of(&msg);
                let flags = msg.flags() & (Flags::DELETE | Flags::ABORT);
                let aux = msg.aux.len() as u64;
                let res = sb.conn.send(now, tb, &out, flags);
                match res {
                    Ok(()) => {
                        let _ = sa.conn.poll_event();
                        sa.stats.frames_relayed_in += 1;
                        sb.stats.frames_relayed_out += 1;
                        self.stats.frames_relayed += 1;
                        self.stats.aux_bytes_relayed += aux;
                        if abort {
                            // The peer aborted: the other side got its abort; close ours.
                            self.kill_route(route);
                            if let Some(e) = self
                                .routes
                                .get_mut(route)
                                .and_then(|r| r.ends[1 - end].as_mut())
                            {
                                e.kill = false;
                            }
                        }
                        true
                    }
                    Err(SendError::WouldBlock { .. }) => false,
                    Err(_) => {
                        let _ = sa.conn.poll_event();
                        self.stats.frames_dropped += 1;
                        self.kill_route(route);
                        true
                    }
                }
            }
            Forward::OneWay { circuit, .. } => {
                let Some(Event::OneWay { msg }) = sa.conn.peek_event() else {
                    return true;
                };
                let out = Outgoing::relay_of(&msg);
                let reply = msg.flags().contains(Flags::REPLY);
                let res = sb.conn.send_one_way(now, &out, reply, Some(circuit));
                match res {
                    Ok(()) => {
                        let _ = sa.conn.poll_event();
                        sa.stats.frames_relayed_in += 1;
                        sb.stats.frames_relayed_out += 1;
                        self.stats.frames_relayed += 1;
                        true
                    }
                    Err(SendError::WouldBlock { .. }) => false,
                    Err(_) => {
                        let _ = sa.conn.poll_event();
                        self.stats.one_way_unroutable += 1;
                        true
                    }
                }
            }
        }
    }

    fn execute_local(&mut self, a: usize, l: Local) {
        let now = self.now;
        let Some(id) = self.slots.get(a).and_then(|s| s.as_ref()).map(|s| s.id) else {
            return;
        };
        match l {
            Local::LinkUp => {
                self.notices.push(Notice::LinkUp(id));
            }
            Local::PeerConn => {
                self.notices.push(Notice::PeerConn(id));
                self.dirty.mark_all_plans();
            }
            Local::Suspended => {
                self.notices.push(Notice::LinkSuspended(id));
            }
            Local::Resumed => {
                self.notices.push(Notice::LinkResumed(id));
            }
            Local::Ignore => {}
            Local::SpanOpen { txn, span, delete } => self.span_open(a, id, txn, span, delete),
            Local::SpanUpdate { txn, span } => {
                let key = SpanKey {
                    via: id,
                    msgid: txn.msgid(),
                };
                if let Some(old) = self.spans.get(key).copied() {
                    if self.spans.update(key, span).is_ok() {
                        self.stats.span_updates += 1;
                        self.dirty.mark(node_of(&old.span));
                        self.dirty.mark(node_of(&span));
                    }
                }
            }
            Local::SpanDelete { txn, answer } => {
                let key = SpanKey {
                    via: id,
                    msgid: txn.msgid(),
                };
                if let Ok(e) = self.spans.remove(key) {
                    self.stats.spans_removed += 1;
                    self.dirty.mark(node_of(&e.span));
                }
                if answer {
                    if let Some(slot) = self.slots.get_mut(a).and_then(|s| s.as_mut()) {
                        let sent = slot.conn.delete(now, txn);
                        debug_assert!(sent_ok(&sent), "room was checked: {sent:?}");
                    }
                }
                self.kill_stacked(id, txn);
            }
            Local::RelayPeerDelete { txn, answer } => {
                if let Some(p) = self.relays.find_txn(id, txn.msgid()) {
                    if let Some(r) = self.relays.get(p).copied() {
                        if r.state == RelayState::Open {
                            self.relays.set_state(p, RelayState::Refused);
                            self.stats.relays_refused += 1;
                            self.dirty.mark(r.node);
                        }
                    }
                }
                if answer {
                    if let Some(slot) = self.slots.get_mut(a).and_then(|s| s.as_mut()) {
                        let sent = slot.conn.delete(now, txn);
                        debug_assert!(sent_ok(&sent), "room was checked: {sent:?}");
                    }
                }
                self.kill_stacked(id, txn);
            }
            Local::Refuse { txn, error } => {
                if let Some(slot) = self.slots.get_mut(a).and_then(|s| s.as_mut()) {
                    let msg = Outgoing::new(Command::LnkError).with_error(error);
                    let sent = slot.conn.send(now, txn, &msg, Flags::ABORT | Flags::DELETE);
                    debug_assert!(sent_ok(&sent), "room was checked: {sent:?}");
                    slot.conn.set_txn_tag(txn, tag::REFUSED);
                }
                if error == err::CANTCIRC {
                    self.stats.cantcirc_sent += 1;
                } else {
                    self.stats.route_refusals += 1;
                }
            }
            Local::Drop => self.stats.frames_dropped += 1,
            Local::DropOpened { txn } => {
                self.stats.frames_dropped += 1;
                if let Some(slot) = self.slots.get_mut(a).and_then(|s| s.as_mut()) {
                    slot.conn.set_txn_tag(txn, tag::REFUSED);
                }
            }
            Local::DropKill { route } => {
                self.stats.frames_dropped += 1;
                self.kill_route(route);
            }
            Local::DropOneWay => self.stats.one_way_unroutable += 1,
            Local::Shell(cmd) => {
                if let Some(slot) = self.slots.get_mut(a).and_then(|s| s.as_mut()) {
                    slot.shell = Some(ShellJob { cmd, line: 0 });
                    slot.stats.shell_commands += 1;
                }
                self.stats.shell_commands += 1;
            }
            Local::Closed {
                txn,
                error,
                end,
                tag,
            } => self.txn_closed(id, txn, error, end, tag),
            Local::LinkClosed(reason) => self.link_closed(a, id, reason),
        }
    }

    fn span_open(
        &mut self,
        a: usize,
        id: crate::span::LinkId,
        txn: TxnId,
        span: Option<SpanRepr>,
        delete: bool,
    ) {
        let now = self.now;
        let key = SpanKey {
            via: id,
            msgid: txn.msgid(),
        };
        let outcome = match span {
            _ if delete => Err(err::OK), // opened and closed at once: nothing to hold
            None => {
                self.stats.spans_refused_bad += 1;
                Err(err::PARAM)
            }
            Some(s) => match self.spans.insert(key, s) {
                Ok(()) => {
                    self.stats.spans_accepted += 1;
                    self.stats.spans_high_water =
                        self.stats.spans_high_water.max(self.spans.len() as u64);
                    self.dirty.mark(node_of(&s));
                    Ok(())
                }
                Err(_) => {
                    self.stats.spans_refused_full += 1;
                    Err(err::PARAM)
                }
            },
        };
        let Some(slot) = self.slots.get_mut(a).and_then(|s| s.as_mut()) else {
            return;
        };
        match outcome {
            Ok(()) => {
                // Accept as DragonFly does: LNK_ERROR|CREATE|REPLY|REVTRANS, error 0.
                let sent =
                    slot.conn
                        .send(now, txn, &Outgoing::new(Command::LnkError), Flags::empty());
                debug_assert!(sent_ok(&sent), "room was checked: {sent:?}");
                slot.conn.set_txn_tag(txn, tag::SPAN);
                slot.stats.spans_in += 1;
            }
            Err(error) => {
                // LNK_ERROR|CREATE|DELETE|REPLY|REVTRANS with the error.
                let sent = slot.conn.reply(now, txn, error);
                debug_assert!(sent_ok(&sent), "room was checked: {sent:?}");
                slot.conn.set_txn_tag(txn, tag::REFUSED);
                if error != err::OK {
                    slot.stats.spans_refused += 1;
                }
            }
        }
    }

    fn txn_closed(&mut self, id: crate::span::LinkId, txn: TxnId, error: u32, end: TxnEnd, t: u8) {
        self.room_freed = true;
        if let Some(slot) = self.slot_mut(id) {
            slot.room = true;
        }
        match t {
            tag::SPAN => {
                let key = SpanKey {
                    via: id,
                    msgid: txn.msgid(),
                };
                if let Ok(e) = self.spans.remove(key) {
                    self.stats.spans_removed += 1;
                    self.dirty.mark(node_of(&e.span));
                }
                self.kill_stacked(id, txn);
            }
            tag::RELAY => {
                if let Some(p) = self.relays.find_txn(id, txn.msgid()) {
                    if let Some(r) = self.relays.get(p).copied() {
                        if r.state == RelayState::Refused {
                            self.relays.clear_txn(p);
                        } else {
                            self.relays.remove_at(p);
                            self.relay_room = true;
                        }
                        self.dirty.mark(r.node);
                    }
                }
                self.kill_stacked(id, txn);
            }
            tag::ROUTE => {
                if let Some((p, i)) = self.routes.find(id, txn) {
                    self.route_end_closed(p, i, end == TxnEnd::LinkLost);
                }
                self.kill_stacked(id, txn);
            }
            tag::REFUSED => {}
            _ => {
                if t == tag::APP_ROUTED {
                    if let Some((p, i)) = self.routes.find(id, txn) {
                        self.route_end_closed(p, i, false);
                    }
                }
                self.kill_stacked(id, txn);
                self.notices
                    .push(Notice::Closed(NodeTxn { link: id, txn }, error, end));
            }
        }
    }

    fn link_closed(&mut self, a: usize, id: crate::span::LinkId, reason: CloseReason) {
        if let Some(slot) = self.slots.get_mut(a).and_then(|s| s.as_mut()) {
            slot.down = true;
            slot.shell = None;
        }
        // Every transaction was reported closed before this; clear what may remain.
        let mut p = 0;
        while p < self.relays.len() {
            match self.relays.get(p).copied() {
                Some(r) if r.conn == id => {
                    self.relays.remove_at(p);
                    self.relay_room = true;
                    self.dirty.mark(r.node);
                }
                _ => p += 1,
            }
        }
        let dirty = &mut self.dirty;
        let removed = self
            .spans
            .remove_link_each(id, |e| dirty.mark(node_of(&e.span)));
        self.stats.spans_removed += removed as u64;
        let mut p = 0;
        while p < self.routes.len() {
            let hit = self.routes.get(p).and_then(|r| {
                r.ends
                    .iter()
                    .position(|e| e.is_some_and(|e| e.link == id && !e.closed))
            });
            match hit {
                Some(i) => {
                    let before = self.routes.len();
                    self.route_end_closed(p, i, true);
                    if self.routes.len() == before {
                        p += 1;
                    }
                }
                None => p += 1,
            }
        }
        self.notices.push(Notice::LinkDown(id, reason));
    }
}

/// A send the node checked room for succeeded, or failed only because the link closed
/// meanwhile (its transactions are lost with it and reported as such).
fn sent_ok(r: &Result<(), SendError>) -> bool {
    matches!(r, Ok(()) | Err(SendError::Closed))
}

fn node_of(s: &SpanRepr) -> NodeAddr {
    NodeAddr {
        peer_id: s.peer_id,
        pfs_id: s.pfs_id,
    }
}

/// Two distinct elements of a slice, both mutable.
fn two_mut<T>(v: &mut [T], a: usize, b: usize) -> Option<(&mut T, &mut T)> {
    if a == b || a >= v.len() || b >= v.len() {
        return None;
    }
    if a < b {
        let (l, r) = v.split_at_mut(b);
        Some((l.get_mut(a)?, r.get_mut(0)?))
    } else {
        let (l, r) = v.split_at_mut(a);
        Some((r.get_mut(0)?, l.get_mut(b)?))
    }
}
