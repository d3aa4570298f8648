//! Bad transaction sequences (those of DragonFly's `21_hostile_txn` captures and a few more),
//! fed to a `link::Connection` as raw frames: the exact answer frames and counters, and the
//! link answering a LNK_PING afterwards. Then DragonFly's own byte streams replayed.

#[path = "link_util.rs"]
mod link_util;

use dmsg_core::errcode::txn::{LOSTLINK, NOSUPP, PARAM};
use dmsg_core::link::{CloseReason, LinkConfig, LinkStats, Outgoing, Side, TxnEnd, TxnId};
use dmsg_core::time::Instant;
use dmsg_core::wire::body::{ConnRepr, SpanRepr};
use dmsg_core::wire::{Body, Cmd, Command, Flags, Label, MsgId, Uuid};
use dmsg_tests::dragonfly_dir;
use link_util::*;

const CONN: Flags = Flags::CREATE;
const LNK_ERROR_ACCEPT: u32 = 0xa80f_ff01; // LNK_ERROR|CREATE|REPLY|REVTRANS
const LNK_ERROR_REFUSE: u32 = 0xe80f_ff01; // LNK_ERROR|CREATE|DELETE|REPLY|REVTRANS
const LNK_ERROR_CLOSE_REPLY: u32 = 0x680f_ff01; // LNK_ERROR|DELETE|REPLY|REVTRANS
const LNK_ERROR_ABORT: u32 = 0x500f_ff01; // LNK_ERROR|ABORT|DELETE
const PING_REPLY: u32 = 0x2000_0101;

/// Our connection playing DragonFly's `hammer2 service`, with a raw client in front.
struct Server {
    conn: Box<Link>,
    peer: RawPeer,
    now: Instant,
    events: Vec<Ev>,
    /// Behave like the daemon: accept a LNK_SPAN with result 0, answer its DELETE.
    auto_answer: bool,
}

/// Which of our answer frames a step produced: (command word, msgid, error).
type Answers = Vec<(u32, u64, u32)>;

impl Server {
    fn with_config(cfg: LinkConfig) -> Server {
        let mut s = Server {
            conn: Box::new(Link::new(Instant::ZERO, &cfg, Default::default()).unwrap()),
            peer: RawPeer::default(),
            now: Instant::ZERO,
            events: Vec::new(),
            auto_answer: true,
        };
        // Our LNK_CONN goes out first.
        let first = s.pump(Vec::new());
        assert_eq!(first, vec![(0x8000_1106, cfg.conn_msgid.0, 0)]);
        // The client's LNK_CONN and its acceptance of ours, as in every capture.
        let conn = s.peer.frame(
            Cmd::new(Command::LnkConn, CONN),
            0x7f73_bc00_1070,
            0,
            &Body::Conn(ConnRepr {
                peer_mask: u64::MAX,
                peer_type: 1,
                ..ConnRepr::default()
            }),
            &[],
        );
        assert_eq!(s.pump(conn), vec![(LNK_ERROR_ACCEPT, 0x7f73_bc00_1070, 0)]);
        let accept = s.peer.simple(
            Command::LnkError,
            Flags::CREATE | Flags::REPLY | Flags::REVTRANS,
            cfg.conn_msgid.0,
            0,
        );
        assert_eq!(s.pump(accept), vec![]);
        assert!(s.events.contains(&Ev::ConnAnswered(0)));
        s.events.clear();
        s
    }

    fn new() -> Server {
        Server::with_config(LinkConfig {
            conn_msgid: MsgId(0x7f64_4000_2010),
            ..LinkConfig::default()
        })
    }

    /// Feeds `bytes` following the drive contract, reacts like the daemon, and returns the
    /// frames we sent because of it.
    fn pump(&mut self, mut bytes: Vec<u8>) -> Answers {
        let mut wire = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            let used = self.conn.handle_input(self.now, &bytes);
            bytes.drain(..used);
            let mut evs = Vec::new();
            loop {
                loop {
                    let n = self.conn.poll_transmit(self.now, &mut buf);
                    if n == 0 {
                        break;
                    }
                    wire.extend_from_slice(&buf[..n]);
                }
                let Some(ev) = self.conn.poll_event().map(Ev::from_event) else {
                    break;
                };
                self.react(&ev);
                evs.push(ev);
            }
            let idle = evs.is_empty() && used == 0;
            self.events.extend(evs);
            if bytes.is_empty() || idle {
                assert!(bytes.is_empty(), "input stalled");
                break;
            }
        }
        self.peer
            .read(&wire)
            .iter()
            .map(|f| (f.cmd(), f.header.msgid.0, f.header.error))
            .collect()
    }

    /// The daemon's reactions, between frames as the drive contract has them.
    fn react(&mut self, ev: &Ev) {
        if !self.auto_answer {
            return;
        }
        match ev {
            Ev::Opened(t, h, ..) if h.cmd.command() == Command::LnkSpan => {
                let result = Outgoing::new(Command::LnkError);
                let flags = if h.cmd.flags().contains(Flags::DELETE) {
                    Flags::DELETE
                } else {
                    Flags::empty()
                };
                self.conn.send(self.now, *t, &result, flags).unwrap();
            }
            Ev::Message(t, h, ..) if h.cmd.flags().contains(Flags::DELETE) => {
                let open = self
                    .conn
                    .txn_state(*t)
                    .is_some_and(|s| s.local != dmsg_core::link::txn::Dir::Closed);
                if open {
                    self.conn.delete(self.now, *t).unwrap();
                }
            }
            _ => {}
        }
    }

    fn span(&mut self, flags: Flags, msgid: u64) -> Vec<u8> {
        let body = Body::Span(SpanRepr {
            peer_id: Uuid([0x11; 16]),
            pfs_id: Uuid([0x66; 16]),
            pfs_type: 8,
            peer_type: 3,
            proto_version: 1,
            rnss: 0x1234_5678,
            peer_label: Label::new("cpeer-cluster").unwrap(),
            pfs_label: Label::new("cpeer-pfs").unwrap(),
            ..SpanRepr::default()
        });
        self.peer
            .frame(Cmd::new(Command::LnkSpan, flags), msgid, 0, &body, &[])
    }

    /// Sends a LNK_PING and checks it is answered with LNK_PING|REPLY, msgid 0, no aux.
    fn ping_is_answered(&mut self) {
        let ping = self.peer.simple(Command::LnkPing, Flags::empty(), 0, 0);
        assert_eq!(self.pump(ping), vec![(PING_REPLY, 0, 0)]);
        assert!(!self.conn.is_closed());
    }

    fn stats(&self) -> LinkStats {
        *self.conn.stats()
    }
}

#[test]
fn a_delete_for_a_never_opened_msgid_is_answered_with_param() {
    // DragonFly: `missing-state`, then the daemon aborts (or, without assertions, goes silent).
    let mut s = Server::new();
    let f = s.span(Flags::DELETE, 0xdead_000a);
    assert_eq!(s.pump(f), vec![(LNK_ERROR_REFUSE, 0xdead_000a, PARAM)]);
    assert_eq!(s.stats().violations.unknown_txn, 1);
    assert_eq!(s.stats().violations.total(), 1);
    assert_eq!(s.stats().error_answers_out, 1);
    assert!(s.events.is_empty());
    s.ping_is_answered();
}

#[test]
fn b_a_duplicate_create_is_dropped_and_the_original_stays_open() {
    // DragonFly: `duplicate transaction`, then the daemon aborts.
    let mut s = Server::new();
    let f = s.span(Flags::CREATE, 0xdead_000b);
    assert_eq!(s.pump(f), vec![(LNK_ERROR_ACCEPT, 0xdead_000b, 0)]);
    let txn = match &s.events[..] {
        [Ev::Opened(t, _, Body::Span(span), _)] => {
            assert_eq!(span.peer_label.as_str(), Some("cpeer-cluster"));
            assert_eq!(span.pfs_label.as_str(), Some("cpeer-pfs"));
            *t
        }
        other => panic!("{other:?}"),
    };
    s.events.clear();
    let f = s.span(Flags::CREATE, 0xdead_000b);
    assert_eq!(s.pump(f), vec![]);
    assert!(s.events.is_empty());
    assert_eq!(s.stats().violations.duplicate_create, 1);
    assert_eq!(s.stats().violations.total(), 1);
    assert!(s.conn.txn_state(txn).is_some());
    assert_eq!(s.conn.open_transactions(Side::Theirs), 1);
    s.ping_is_answered();
    // The original transaction still closes normally.
    let f = s.span(Flags::DELETE, 0xdead_000b);
    assert_eq!(s.pump(f), vec![(LNK_ERROR_CLOSE_REPLY, 0xdead_000b, 0)]);
    assert!(s.events.contains(&Ev::Closed(txn, 0, TxnEnd::Completed)));
    assert_eq!(s.conn.table_entries(Side::Theirs), 0);
}

#[test]
fn c_a_frame_without_flags_on_an_unknown_msgid_is_a_one_way_message() {
    // DragonFly: logged as received, no answer, no error (the same rule).
    let mut s = Server::new();
    let f = s.span(Flags::empty(), 0xdead_000c);
    assert_eq!(s.pump(f), vec![]);
    assert!(matches!(&s.events[..], [Ev::OneWay(h, Body::Span(_), _)] if h.msgid.0 == 0xdead_000c));
    assert_eq!(s.stats().violations.total(), 0);
    assert_eq!(s.stats().one_way_in, 1);
    s.ping_is_answered();
}

#[test]
fn d_abort_delete_after_the_full_close_is_discarded() {
    // DragonFly: receive error 16 (EALREADY), frame dropped, link usable (the same outcome).
    let mut s = Server::new();
    let f = s.span(Flags::CREATE, 0xdead_000d);
    assert_eq!(s.pump(f), vec![(LNK_ERROR_ACCEPT, 0xdead_000d, 0)]);
    let f = s.span(Flags::DELETE, 0xdead_000d);
    assert_eq!(s.pump(f), vec![(LNK_ERROR_CLOSE_REPLY, 0xdead_000d, 0)]);
    assert_eq!(s.conn.table_entries(Side::Theirs), 0);
    let f = s.span(Flags::ABORT | Flags::DELETE, 0xdead_000d);
    assert_eq!(s.pump(f), vec![]);
    assert_eq!(s.stats().late_aborts, 1);
    assert_eq!(s.stats().violations.total(), 0);
    s.ping_is_answered();
}

#[test]
fn e_a_one_way_ping_is_answered_with_ping_reply() {
    let mut s = Server::new();
    s.ping_is_answered();
    assert_eq!(s.stats().pings_in, 1);
    assert!(s.events.is_empty());
}

#[test]
fn f_a_reply_create_for_a_msgid_we_never_opened_gets_abort_delete() {
    // DragonFly: `no-state(r)`, then the daemon aborts.
    let mut s = Server::new();
    let f = s.peer.simple(
        Command::LnkError,
        Flags::CREATE | Flags::REPLY | Flags::REVTRANS,
        0xdead_000f,
        0,
    );
    assert_eq!(s.pump(f), vec![(LNK_ERROR_ABORT, 0xdead_000f, PARAM)]);
    assert_eq!(s.stats().violations.unknown_txn, 1);
    // REPLY alone (older revision, no REVTRANS) is matched the same way.
    let f = s.span(Flags::CREATE | Flags::REPLY, 0xdead_0010);
    assert_eq!(s.pump(f), vec![(LNK_ERROR_ABORT, 0xdead_0010, PARAM)]);
    // A late ABORT|DELETE in the reply direction is discarded like in the other.
    let f = s.peer.simple(
        Command::LnkError,
        Flags::ABORT | Flags::DELETE | Flags::REPLY | Flags::REVTRANS,
        0xdead_0011,
        0,
    );
    assert_eq!(s.pump(f), vec![]);
    assert_eq!(s.stats().violations.unknown_txn, 2);
    assert_eq!(s.stats().late_aborts, 1);
    s.ping_is_answered();
}

#[test]
fn a_plain_delete_after_the_full_close_is_answered_as_unknown() {
    let mut s = Server::new();
    let f = s.span(Flags::CREATE | Flags::DELETE, 0xdead_0020);
    assert_eq!(s.pump(f), vec![(0xe80f_ff01, 0xdead_0020, 0)]); // accepted and closed at once
    assert_eq!(s.conn.table_entries(Side::Theirs), 0);
    let f = s.span(Flags::DELETE, 0xdead_0020);
    assert_eq!(s.pump(f), vec![(LNK_ERROR_REFUSE, 0xdead_0020, PARAM)]);
    assert_eq!(s.stats().violations.unknown_txn, 1);
    s.ping_is_answered();
}

#[test]
fn frames_after_delete_on_a_half_closed_transaction_are_dropped() {
    let mut s = Server::new();
    s.auto_answer = false;
    let f = s.span(Flags::CREATE, 0xdead_0030);
    assert_eq!(s.pump(f), vec![]);
    let txn = match s.events[..] {
        [Ev::Opened(t, ..)] => t,
        ref other => panic!("{other:?}"),
    };
    s.events.clear();
    let f = s.span(Flags::DELETE, 0xdead_0030);
    assert_eq!(s.pump(f), vec![]);
    assert_eq!(s.events.len(), 1);
    s.events.clear();
    // DELETE again: DELETE on a closed direction.
    let f = s.span(Flags::DELETE, 0xdead_0030);
    assert_eq!(s.pump(f), vec![]);
    // Data after DELETE (no flags: the msgid names a live transaction, so not one-way).
    let f = s.span(Flags::empty(), 0xdead_0030);
    assert_eq!(s.pump(f), vec![]);
    // CREATE again while it is half-open: a duplicate.
    let f = s.span(Flags::CREATE, 0xdead_0030);
    assert_eq!(s.pump(f), vec![]);
    // Abort-after-DELETE: valid, discarded.
    let f = s.span(Flags::ABORT | Flags::DELETE, 0xdead_0030);
    assert_eq!(s.pump(f), vec![]);
    assert!(s.events.is_empty());
    let v = s.stats().violations;
    assert_eq!(
        (v.delete_on_closed, v.after_delete, v.duplicate_create),
        (1, 1, 1)
    );
    assert_eq!(s.stats().late_aborts, 1);
    // We still close our side, and the slot is freed.
    s.conn.reply(s.now, txn, 0).unwrap();
    assert_eq!(s.pump(Vec::new()), vec![(LNK_ERROR_REFUSE, 0xdead_0030, 0)]);
    assert!(s.events.contains(&Ev::Closed(txn, 0, TxnEnd::Completed)));
    assert_eq!(s.conn.table_entries(Side::Theirs), 0);
    s.ping_is_answered();
}

#[test]
fn a_bare_abort_on_an_unknown_msgid_is_answered_once() {
    let mut s = Server::new();
    let f = s.span(Flags::ABORT, 0xdead_0040);
    assert_eq!(s.pump(f), vec![(LNK_ERROR_REFUSE, 0xdead_0040, PARAM)]);
    // The peer's DELETE that follows our answer is absorbed, not answered again.
    let f = s.span(Flags::empty(), 0xdead_0040);
    assert_eq!(s.pump(f), vec![]);
    let f = s.span(Flags::DELETE, 0xdead_0040);
    assert_eq!(s.pump(f), vec![]);
    assert_eq!(s.stats().absorbed, 2);
    assert_eq!(s.stats().violations.unknown_txn, 1);
    assert!(s.events.is_empty());
    s.ping_is_answered();
}

#[test]
fn a_second_lnk_conn_is_refused_with_nosupp_and_msgid_zero_with_param() {
    let mut s = Server::new();
    let conn = s.peer.frame(
        Cmd::new(Command::LnkConn, Flags::CREATE),
        0x9999,
        0,
        &Body::Conn(ConnRepr::default()),
        &[],
    );
    assert_eq!(s.pump(conn), vec![(LNK_ERROR_REFUSE, 0x9999, NOSUPP)]);
    assert_eq!(s.stats().violations.duplicate_conn, 1);
    let f = s.span(Flags::CREATE, 0);
    assert_eq!(s.pump(f), vec![(LNK_ERROR_REFUSE, 0, PARAM)]);
    assert_eq!(s.stats().violations.bad_msgid, 1);
    // msgid 0 is not remembered: one-way messages keep working.
    let f = s.peer.simple(Command::DbgShell, Flags::empty(), 0, 0);
    assert_eq!(s.pump(f), vec![]);
    assert!(matches!(s.events.last(), Some(Ev::OneWay(..))));
    s.ping_is_answered();
}

#[test]
fn too_many_violations_close_the_link_with_lostlink_for_everything() {
    let mut s = Server::with_config(LinkConfig {
        max_violations: 3,
        ..LinkConfig::default()
    });
    let f = s.span(Flags::CREATE, 0x100);
    s.pump(f);
    let txn: TxnId = match s.events[..] {
        [Ev::Opened(t, ..)] => t,
        ref other => panic!("{other:?}"),
    };
    s.events.clear();
    for i in 0..3 {
        let f = s.span(Flags::DELETE, 0x200 + i);
        assert_eq!(s.pump(f), vec![(LNK_ERROR_REFUSE, 0x200 + i, PARAM)]);
    }
    assert!(!s.conn.is_closed());
    let f = s.span(Flags::DELETE, 0x300);
    assert_eq!(s.pump(f), vec![], "the link is dead: nothing more is sent");
    assert_eq!(
        s.events,
        vec![
            Ev::Closed(txn, LOSTLINK, TxnEnd::LinkLost),
            Ev::LinkClosed(CloseReason::ProtocolError)
        ]
    );
}

// ------------------------------------------------------------------------------------------
// DragonFly's own byte streams

fn read(name: &str) -> Vec<u8> {
    std::fs::read(dragonfly_dir().join(name)).unwrap()
}

/// Appends a LNK_PING to a captured client stream, with the salt counter continuing it.
fn with_ping(mut stream: Vec<u8>) -> Vec<u8> {
    let frames = decode_all(&stream).len();
    let mut enc = dmsg_core::encode::Encoder::new(1);
    let hdr = dmsg_core::wire::HeaderRepr::new(Cmd::new(Command::LnkPad, Flags::empty()), MsgId(0));
    let mut scratch = [0u8; 64];
    let crc = dmsg_core::crc::DefaultCrc::default();
    for _ in 0..frames {
        enc.encode(&crc, &hdr, &Body::None, &[], &mut scratch)
            .unwrap();
    }
    let ping =
        dmsg_core::wire::HeaderRepr::new(Cmd::new(Command::LnkPing, Flags::empty()), MsgId(0));
    enc.encode(&crc, &ping, &Body::None, &[], &mut scratch)
        .unwrap();
    stream.extend_from_slice(&scratch);
    stream
}

#[test]
fn dragonfly_hostile_client_streams_get_dragonflys_answers_or_ours() {
    for x in ["a", "b", "c", "d", "e"] {
        let to = read(&format!("21_hostile_txn_{x}_to_service.bin"));
        let from = decode_all(&read(&format!("21_hostile_txn_{x}_from_service.bin")));
        let daemon_conn = from[0].header.msgid;
        let mut s = Server {
            conn: Box::new(
                Link::new(
                    Instant::ZERO,
                    &LinkConfig {
                        conn_msgid: daemon_conn,
                        ..LinkConfig::default()
                    },
                    Default::default(),
                )
                .unwrap(),
            ),
            peer: RawPeer::default(),
            now: Instant::ZERO,
            events: Vec::new(),
            auto_answer: true,
        };
        let ours = s.pump(with_ping(to));
        let mut want: Answers = from
            .iter()
            .map(|f| (f.cmd(), f.header.msgid.0, f.header.error))
            .collect();
        // In `a` the daemon died where we answer the DELETE for the unknown msgid. In `b` it
        // died on the duplicate CREATE, which we drop silently: the streams are the same.
        if x == "a" {
            want.push((LNK_ERROR_REFUSE, 0xdead_000a, PARAM));
        }
        // Every stream ends with our extra PING; the daemon answered the captured ones in c, d
        // and e itself.
        want.push((PING_REPLY, 0, 0));
        assert_eq!(ours, want, "scenario {x}");
        let v = s.stats().violations;
        let expect_violations = match x {
            "a" => 1,
            "b" => 1,
            _ => 0,
        };
        assert_eq!(v.total(), expect_violations, "scenario {x}: {v:?}");
        assert!(!s.conn.is_closed(), "scenario {x}");
        assert!(matches!(s.events.first(), Some(Ev::Connected)));
        assert!(s.events.iter().any(|e| matches!(e, Ev::PeerConn(..))));
        assert!(s.events.contains(&Ev::ConnAnswered(0)));
    }
}

#[test]
fn dragonfly_daemon_streams_replay_without_violations() {
    let mut names: Vec<_> = std::fs::read_dir(dragonfly_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with("_from_service.bin"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 8);
    for name in names {
        let client = decode_all(&read(&name.replace("_from_service", "_to_service")));
        // We play the client: its LNK_CONN msgid, and its LNK_SPAN's if it opened one.
        let conn_msgid = client[0].header.msgid;
        let span = client.iter().skip(1).find(|f| {
            f.header.cmd.flags().contains(Flags::CREATE)
                && !f
                    .header
                    .cmd
                    .flags()
                    .intersects(Flags::REPLY | Flags::REVTRANS)
        });
        let cfg = LinkConfig {
            conn_msgid,
            msgid_base: span.map_or(2, |f| f.header.msgid.0),
            ..LinkConfig::default()
        };
        let mut c = Box::new(Link::new(Instant::ZERO, &cfg, Default::default()).unwrap());
        let mut wire = Vec::new();
        let mut evs = Vec::new();
        if let Some(f) = span {
            let t = c
                .open(
                    Instant::ZERO,
                    &Outgoing::new(Command::LnkSpan).with_body(&f.body),
                    Flags::empty(),
                    None,
                )
                .unwrap();
            assert_eq!(t.msgid(), f.header.msgid);
        }
        let mut input = read(&name);
        // Odd chunk sizes, to cross frame boundaries.
        for chunk in input.clone().chunks(97) {
            let mut piece = chunk.to_vec();
            feed(&mut *c, Instant::ZERO, &mut piece, &mut wire, &mut evs);
        }
        input.clear();
        let st = c.stats();
        assert_eq!(st.violations.total(), 0, "{name}: {st:?}");
        assert_eq!(st.ctl_dropped, 0);
        assert!(
            !matches!(evs.last(), Some(Ev::LinkClosed(CloseReason::Decode(_)))),
            "{name}"
        );
        let peer = evs
            .iter()
            .find_map(|e| match e {
                Ev::PeerConn(conn, ext) => Some((*conn, *ext)),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{name}: no PeerConn"));
        assert_eq!(peer.0.peer_type, 1, "{name}");
        assert_eq!(peer.0.peer_mask, u64::MAX, "{name}");
        assert!(peer.1.is_empty(), "{name}: DragonFly offers no extension");
        assert!(evs.contains(&Ev::ConnAnswered(0)), "{name}");
        // What we sent back decodes and starts with our LNK_CONN.
        let ours = decode_all(&wire);
        assert_eq!(ours[0].cmd(), 0x8000_1106);
    }
}

#[test]
fn remembered_refusals_are_bounded_and_forget_the_oldest() {
    let mut s = Server::new();
    // Nine bare ABORTs on unknown msgids: each answered once and remembered; the list holds 8.
    for i in 0..9u64 {
        let f = s.span(Flags::ABORT, 0x500 + i);
        assert_eq!(s.pump(f), vec![(LNK_ERROR_REFUSE, 0x500 + i, PARAM)]);
    }
    assert_eq!(s.stats().tombstone_evictions, 1);
    // The newest is still remembered: its DELETE is absorbed.
    let f = s.span(Flags::DELETE, 0x508);
    assert_eq!(s.pump(f), vec![]);
    assert_eq!(s.stats().absorbed, 1);
    // The oldest was forgotten: its DELETE is answered once more, as unknown.
    let f = s.span(Flags::DELETE, 0x500);
    assert_eq!(s.pump(f), vec![(LNK_ERROR_REFUSE, 0x500, PARAM)]);
    assert_eq!(s.stats().violations.unknown_txn, 10);
    s.ping_is_answered();
}

#[test]
fn a_refused_msgid_reused_for_a_new_transaction_is_tracked_normally() {
    let mut s = Server::new();
    s.auto_answer = false;
    let f = s.span(Flags::ABORT, 0x600);
    assert_eq!(s.pump(f), vec![(LNK_ERROR_REFUSE, 0x600, PARAM)]);
    // The peer starts over with the same msgid: a new transaction, no longer remembered.
    let f = s.span(Flags::CREATE | Flags::DELETE, 0x600);
    assert_eq!(s.pump(f), vec![]);
    let txn = match s.events[..] {
        [Ev::Opened(t, ..)] => t,
        ref other => panic!("{other:?}"),
    };
    s.conn.reply(s.now, txn, 0).unwrap();
    assert_eq!(s.pump(Vec::new()), vec![(LNK_ERROR_REFUSE, 0x600, 0)]);
    assert_eq!(s.conn.table_entries(Side::Theirs), 0);
    // A stray DELETE now is a violation answered as unknown, not absorbed.
    let f = s.span(Flags::DELETE, 0x600);
    assert_eq!(s.pump(f), vec![(LNK_ERROR_REFUSE, 0x600, PARAM)]);
    assert_eq!(s.stats().absorbed, 0);
    assert_eq!(s.stats().violations.unknown_txn, 2);
}

#[test]
fn a_refused_lnk_conn_closes_ours_and_keeps_the_link() {
    // DragonFly's shell client refuses the daemon's LNK_CONN with NOSUPP
    // (LNK_ERROR|CREATE|DELETE|REPLY|REVTRANS); the daemon closes its side and goes on
    // serving one-way DBG_SHELL traffic. We do the same when our LNK_CONN is refused.
    let cfg = LinkConfig::default();
    let mut s = Server {
        conn: Box::new(Link::new(Instant::ZERO, &cfg, Default::default()).unwrap()),
        peer: RawPeer::default(),
        now: Instant::ZERO,
        events: Vec::new(),
        auto_answer: false,
    };
    assert_eq!(s.pump(Vec::new()), vec![(0x8000_1106, 1, 0)]);
    let refuse = s.peer.simple(
        Command::LnkError,
        Flags::CREATE | Flags::DELETE | Flags::REPLY | Flags::REVTRANS,
        1,
        NOSUPP,
    );
    assert_eq!(s.pump(refuse), vec![(0x400f_ff01, 1, 0)]); // LNK_ERROR|DELETE on ours
    assert!(s.events.contains(&Ev::ConnAnswered(NOSUPP)));
    assert_eq!(s.conn.state(), dmsg_core::link::LinkState::Open);
    let shell = s.peer.frame(
        Cmd::new(Command::DbgShell, Flags::empty()),
        0,
        0,
        &Body::None,
        b"tree\0",
    );
    assert_eq!(s.pump(shell), vec![]);
    assert!(matches!(s.events.last(), Some(Ev::OneWay(_, _, aux)) if aux == b"tree\0"));
    s.ping_is_answered();
    assert_eq!(s.stats().violations.total(), 0);
}
