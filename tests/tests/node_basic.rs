//! The node's cluster layer on small, explicit setups: a hub with leaves, a request/reply
//! over a circuit, route loss, the debug shell in DragonFly's framing, DragonFly capture
//! replays, and a span flood.

use dmsg_core::decode::DecoderConfig;
use dmsg_core::errcode::txn as err;
use dmsg_core::link::{Connection, LinkConfig, Outgoing, TxnEnd};
use dmsg_core::node::{Node, NodeAddr, NodeEvent, NodeTxn, Via};
use dmsg_core::span::LinkId;
use dmsg_core::time::{Duration, Instant};
use dmsg_core::wire::body::{peer_type, SpanRepr};
use dmsg_core::wire::{Body, Command, Flags, Label, MsgId, Uuid};
use dmsg_tests::sim::check::{check, Checks};
use dmsg_tests::sim::scenario::SimN;
use dmsg_tests::sim::topo::Topology;
use dmsg_tests::sim::world::{addr_of, Sim, SimConfig};
use dmsg_tests::{decode_stream, dragonfly_dir, OwnedFrame};

type Hub = Node<4, 16, 32, 8, { 8 * 64 + 1024 }, 1024, 4096, 32>;
type Peer = Connection<{ 8 * 64 + 1024 }, 1024, 4096, 32>;

const CLUSTER: Uuid = Uuid([0x11; 16]);

fn span_of(id: u8) -> SpanRepr {
    SpanRepr {
        peer_id: CLUSTER,
        pfs_id: Uuid([id; 16]),
        pfs_type: 1,
        peer_type: peer_type::HAMMER2,
        peer_label: Label::new("cl").unwrap(),
        pfs_label: Label::new(&format!("leaf-{id}")).unwrap(),
        ..SpanRepr::default()
    }
}

fn addr(id: u8) -> NodeAddr {
    NodeAddr {
        peer_id: CLUSTER,
        pfs_id: Uuid([id; 16]),
    }
}

/// Runs on a big stack (nodes are plain values and may be large in debug builds).
fn big_stack(f: impl FnOnce() + Send + 'static) {
    let h = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(f)
        .unwrap();
    if let Err(e) = h.join() {
        std::panic::resume_unwind(e);
    }
}

// ---------------------------------------------------------------------------------------
// A tiny explicit network of nodes (no simulator), so tests can act between steps.

/// What a node reported, copied out.
#[derive(Clone, Debug, PartialEq)]
enum Rec {
    Opened(NodeTxn, Via, Vec<u8>, u32),
    Message(NodeTxn, Vec<u8>, u32, u32),
    Closed(NodeTxn, u32, TxnEnd),
    Reachable(NodeAddr, u32),
    Unreachable(NodeAddr),
    LinkDown(LinkId),
    Other,
}

/// (node a, link a, node b, link b, bytes a->b, bytes b->a, alive)
type Wire = (usize, LinkId, usize, LinkId, Vec<u8>, Vec<u8>, bool);

struct Net {
    nodes: Vec<Box<Hub>>,
    wires: Vec<Wire>,
    log: Vec<Vec<Rec>>,
    /// Answer every Opened with "pong" + DELETE.
    auto_answer: bool,
    now: Instant,
    /// A link of a node that is not a wire (a raw peer): its bytes are kept here.
    tap: Option<(usize, LinkId)>,
    tap_bytes: Vec<u8>,
}

impl Net {
    fn new(n: usize) -> Net {
        let mut nodes = Vec::new();
        for i in 0..n {
            let mut node = Box::new(Hub::new(Default::default()));
            node.advertise(span_of(i as u8 + 1)).unwrap();
            nodes.push(node);
        }
        Net {
            nodes,
            wires: Vec::new(),
            log: vec![Vec::new(); n],
            auto_answer: true,
            now: Instant::ZERO,
            tap: None,
            tap_bytes: Vec::new(),
        }
    }

    fn connect(&mut self, a: usize, b: usize) -> usize {
        let la = self.nodes[a]
            .add_link(self.now, &LinkConfig::default())
            .unwrap();
        let lb = self.nodes[b]
            .add_link(self.now, &LinkConfig::default())
            .unwrap();
        self.wires
            .push((a, la, b, lb, Vec::new(), Vec::new(), true));
        self.wires.len() - 1
    }

    fn cut(&mut self, w: usize) {
        let (a, la, b, lb, _, _, _) = self.wires[w].clone();
        self.wires[w].6 = false;
        let now = self.now;
        self.nodes[a].handle_close(now, la);
        self.nodes[b].handle_close(now, lb);
    }

    fn drain(&mut self, i: usize) -> bool {
        let mut any = false;
        let now = self.now;
        let mut buf = [0u8; 700];
        loop {
            let mut busy = false;
            while let Some(t) = self.nodes[i].poll_transmit(now, None, &mut buf) {
                busy = true;
                if self.tap == Some((i, t.link)) {
                    self.tap_bytes.extend_from_slice(&buf[..t.len]);
                }
                for w in self.wires.iter_mut().filter(|w| w.6) {
                    if (w.0, w.1) == (i, t.link) {
                        w.4.extend_from_slice(&buf[..t.len]);
                    } else if (w.2, w.3) == (i, t.link) {
                        w.5.extend_from_slice(&buf[..t.len]);
                    }
                }
            }
            let mut answer = Vec::new();
            loop {
                let rec = match self.nodes[i].poll_event() {
                    None => break,
                    Some(ev) => match ev {
                        NodeEvent::Opened { txn, via, msg } => {
                            Rec::Opened(txn, via, msg.aux.to_vec(), msg.flags().bits())
                        }
                        NodeEvent::Message { txn, msg } => {
                            Rec::Message(txn, msg.aux.to_vec(), msg.flags().bits(), msg.error())
                        }
                        NodeEvent::Closed { txn, error, end } => Rec::Closed(txn, error, end),
                        NodeEvent::Reachable { node, dist } => Rec::Reachable(node, dist),
                        NodeEvent::Unreachable { node } => Rec::Unreachable(node),
                        NodeEvent::LinkDown { link, .. } => Rec::LinkDown(link),
                        _ => Rec::Other,
                    },
                };
                busy = true;
                if let Rec::Opened(txn, _, _, flags) = &rec {
                    if self.auto_answer && Flags::from_bits_truncate(*flags).contains(Flags::DELETE)
                    {
                        answer.push(*txn);
                    }
                }
                self.log[i].push(rec);
            }
            for txn in answer {
                let pong = Outgoing::new(Command::DbgShell).with_aux(b"pong");
                self.nodes[i].send(now, txn, &pong, Flags::DELETE).unwrap();
            }
            if !busy {
                return any;
            }
            any = true;
        }
    }

    /// Moves bytes and drains until nothing happens.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut busy = false;
            for i in 0..self.nodes.len() {
                busy |= self.drain(i);
            }
            for w in 0..self.wires.len() {
                if !self.wires[w].6 {
                    continue;
                }
                let (a, la, b, lb) = (
                    self.wires[w].0,
                    self.wires[w].1,
                    self.wires[w].2,
                    self.wires[w].3,
                );
                let now = self.now;
                let ab = std::mem::take(&mut self.wires[w].4);
                let used = self.nodes[b].handle_input(now, lb, &ab);
                busy |= used > 0;
                self.wires[w].4 = ab[used..].to_vec();
                let ba = std::mem::take(&mut self.wires[w].5);
                let used = self.nodes[a].handle_input(now, la, &ba);
                busy |= used > 0;
                self.wires[w].5 = ba[used..].to_vec();
            }
            if !busy {
                return;
            }
        }
        panic!("network did not settle");
    }
}

#[test]
fn hub_with_leaves_converges() {
    big_stack(|| {
        // Through the simulator: a star of 1 hub and 6 leaves, checked against BFS.
        let mut sim: Sim<SimN> = Sim::new(Topology::star(7), SimConfig::new(1));
        sim.run_until_quiet(Duration::from_secs(30))
            .expect("converges");
        check(&sim, Checks::default()).unwrap();
        let hub = &sim.nodes[0].node;
        for leaf in 1..7 {
            assert_eq!(hub.route_to(&addr_of(leaf)).map(|r| r.1), Some(1));
            for other in 1..7 {
                if other != leaf {
                    let d = sim.nodes[leaf].node.route_to(&addr_of(other)).map(|r| r.1);
                    assert_eq!(d, Some(2), "leaf {leaf} -> {other}");
                }
            }
        }
        // The hub relays each leaf's span to the 5 other leaves; leaves relay nothing back
        // towards the hub except spans the hub did not send them (none).
        assert_eq!(hub.relays().len(), 6 * 5 + 6); // + its own span to each leaf
        assert_eq!(hub.stats().spans_refused_full, 0);
    });
}

/// A clean close of a link that carries spans both ways finishes at once: the node replans
/// when the link starts closing (its own `close_link` or the peer's LNK_CONN DELETE), so the
/// relays on it are closed instead of holding the close open until its timeout.
#[test]
fn clean_close_with_spans_both_ways_finishes_without_waiting_for_the_timeout() {
    big_stack(|| {
        let mut net = Net::new(3);
        let w = net.connect(0, 1);
        net.connect(0, 2);
        net.settle();
        assert!(net.nodes[1].route_to(&addr(3)).is_some(), "converged");
        let (_, l_hub, _, l_leaf, _, _, _) = net.wires[w].clone();
        let now = net.now;
        net.nodes[1].close_link(now, l_leaf).unwrap();
        net.settle();
        // No time has passed: the close finished on the exchange alone, on both ends.
        assert!(
            net.log[1].contains(&Rec::LinkDown(l_leaf)),
            "leaf: {:?}",
            net.log[1]
        );
        assert!(
            net.log[0].contains(&Rec::LinkDown(l_hub)),
            "hub: {:?}",
            net.log[0]
        );
        assert!(
            net.nodes[2].route_to(&addr(2)).is_none(),
            "the closed leaf's span is gone"
        );
    });
}

#[test]
fn leaf_reaches_leaf_through_the_hub_over_a_circuit() {
    big_stack(|| {
        let mut net = Net::new(3); // 0 hub, 1 and 2 leaves
        net.connect(1, 0);
        net.connect(2, 0);
        net.settle();
        assert_eq!(net.nodes[1].route_to(&addr(3)).map(|r| r.1), Some(2));
        assert!(net.log[1].contains(&Rec::Reachable(addr(3), 2)));

        let ping = Outgoing::new(Command::DbgShell).with_aux(b"ping");
        let now = net.now;
        let txn = net.nodes[1]
            .open(now, addr(3), &ping, Flags::DELETE)
            .unwrap();
        net.settle();

        // Leaf 2 got it over the circuit of its own span, and answered.
        let opened = net.log[2]
            .iter()
            .find_map(|r| match r {
                Rec::Opened(t, via, aux, flags) => Some((*t, *via, aux.clone(), *flags)),
                _ => None,
            })
            .expect("opened at the far leaf");
        assert_eq!(opened.1, Via::Circuit { to: addr(3) });
        assert_eq!(opened.2, b"ping");
        assert!(Flags::from_bits_truncate(opened.3).contains(Flags::CREATE | Flags::REVCIRC));
        // Leaf 1 got the answer and both ends finished cleanly.
        assert!(net.log[1]
            .iter()
            .any(|r| matches!(r, Rec::Message(t, aux, _, 0) if *t == txn && aux == b"pong")));
        assert!(net.log[1].contains(&Rec::Closed(txn, 0, TxnEnd::Completed)));
        assert!(net.log[2].contains(&Rec::Closed(opened.0, 0, TxnEnd::Completed)));
        // The hub relayed it and kept nothing.
        assert_eq!(net.nodes[0].stats().routes_relayed, 1);
        assert!(net.nodes[0].routes().is_empty());
        assert!(net.nodes[1].routes().is_empty());
        assert!(net.nodes[2].routes().is_empty());
        for n in &net.nodes {
            for l in n.links() {
                assert_eq!(n.link(l).unwrap().stats().violations.total(), 0);
            }
        }
    });
}

#[test]
fn route_loss_closes_both_ends_with_lostlink() {
    big_stack(|| {
        let mut net = Net::new(3);
        net.connect(1, 0);
        let w2 = net.connect(2, 0);
        net.settle();
        // A transaction that stays open (no DELETE), answered without DELETE.
        net.auto_answer = false;
        let hello = Outgoing::new(Command::DbgShell).with_aux(b"hold");
        let now = net.now;
        let txn = net.nodes[1]
            .open(now, addr(3), &hello, Flags::empty())
            .unwrap();
        net.settle();
        let far = net.log[2]
            .iter()
            .find_map(|r| match r {
                Rec::Opened(t, ..) => Some(*t),
                _ => None,
            })
            .unwrap();
        let ack = Outgoing::new(Command::DbgShell).with_aux(b"ack");
        net.nodes[2].send(now, far, &ack, Flags::empty()).unwrap();
        net.settle();
        assert_eq!(net.nodes[0].routes().len(), 1);

        // The hub loses leaf 2: leaf 1's transaction ends with LOSTLINK, and so does leaf
        // 2's (its link is gone), and leaf 2 becomes unreachable.
        net.cut(w2);
        net.settle();
        let closed1 = net.log[1].iter().find_map(|r| match r {
            Rec::Closed(t, e, _) if *t == txn => Some(*e),
            _ => None,
        });
        assert_eq!(closed1, Some(err::LOSTLINK));
        let closed2 = net.log[2].iter().find_map(|r| match r {
            Rec::Closed(t, e, _) if *t == far => Some(*e),
            _ => None,
        });
        assert_eq!(closed2, Some(err::LOSTLINK));
        assert!(net.log[1].contains(&Rec::Unreachable(addr(3))));
        assert!(
            net.nodes[0].routes().is_empty(),
            "{:?}",
            net.nodes[0].routes()
        );
        assert!(net.nodes[1].routes().is_empty());
        assert_eq!(net.nodes[0].stats().routes_lost, 1);
        // Opening to a node that is gone is a typed error.
        let again = net.nodes[1].open(net.now, addr(3), &hello, Flags::DELETE);
        assert!(again.is_err());
    });
}

#[test]
fn route_loss_by_span_withdrawal_closes_both_ends() {
    big_stack(|| {
        // The target withdraws its span: the hub's relay is closed, the circuit dies, and
        // the transaction stacked on it ends with LOSTLINK at both ends.
        let mut net = Net::new(3);
        net.connect(1, 0);
        net.connect(2, 0);
        net.settle();
        net.auto_answer = false;
        let now = net.now;
        let hold = Outgoing::new(Command::DbgShell).with_aux(b"hold");
        let txn = net.nodes[1]
            .open(now, addr(3), &hold, Flags::empty())
            .unwrap();
        net.settle();
        // Leaf 2 withdraws its own span (LocalSpan ids start at 1).
        net.nodes[2]
            .withdraw(dmsg_core::node::LocalSpan(MsgId(1)))
            .unwrap();
        net.settle();
        assert!(net.log[1].contains(&Rec::Closed(txn, err::LOSTLINK, TxnEnd::Aborted)));
        let far_closed = net.log[2]
            .iter()
            .any(|r| matches!(r, Rec::Closed(_, e, _) if *e == err::LOSTLINK));
        assert!(far_closed, "{:?}", net.log[2]);
        for n in &net.nodes {
            assert!(n.routes().is_empty());
        }
    });
}

#[test]
fn stacked_and_missing_circuits() {
    big_stack(|| {
        let now = Instant::ZERO;
        // A transaction stacked on another of the peer's transactions reaches the hub's
        // application as Via::Stacked.
        let mut hub = Hub::new(Default::default());
        let l = hub.add_link(now, &LinkConfig::default()).unwrap();
        let mut peer = Peer::new(now, &LinkConfig::default(), Default::default()).unwrap();
        exchange(&mut hub, l, &mut peer, now);
        let parent = peer
            .open(now, &Outgoing::new(Command::DbgShell), Flags::empty(), None)
            .unwrap();
        let mut events = Vec::new();
        exchange_log(&mut hub, l, &mut peer, now, &mut events);
        let req = Outgoing::new(Command::DbgShell).with_aux(b"x");
        peer.open(now, &req, Flags::DELETE, Some(parent)).unwrap();
        exchange_log(&mut hub, l, &mut peer, now, &mut events);
        assert_eq!(
            events
                .iter()
                .filter(|e| e.starts_with("hub opened"))
                .collect::<Vec<_>>(),
            ["hub opened Direct", "hub opened Stacked"]
        );

        // A CREATE naming a circuit the hub does not have (REVCIRC: one of the hub's own)
        // is aborted at once with CANTCIRC.
        let mut hub2 = Hub::new(Default::default());
        let l2 = hub2.add_link(now, &LinkConfig::default()).unwrap();
        let mut input = raw_conn(0);
        input.extend(raw_frame(
            Command::DbgShell,
            Flags::CREATE | Flags::DELETE | Flags::REVCIRC,
            0x77,
            0xdead,
            1,
        ));
        let used = hub2.handle_input(now, l2, &input);
        assert_eq!(used, input.len());
        let out = drain_bytes(&mut hub2, now);
        let (frames, e) = decode_stream(&out, out.len(), DecoderConfig::default());
        assert_eq!(e, None);
        let answer = frames
            .iter()
            .find(|f| f.header.msgid == MsgId(0x77))
            .expect("an answer to the stacked CREATE");
        assert_eq!(
            answer.header.cmd.flags(),
            Flags::CREATE | Flags::DELETE | Flags::REPLY | Flags::REVTRANS | Flags::ABORT
        );
        assert_eq!(answer.header.error, err::CANTCIRC);
        assert_eq!(hub2.stats().cantcirc_sent, 1);
        assert!(hub2.routes().is_empty());
    });
}

// ---------------------------------------------------------------------------------------
// Raw peers.

fn drain_bytes(hub: &mut Hub, now: Instant) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let mut busy = false;
        while let Some(t) = hub.poll_transmit(now, None, &mut buf) {
            out.extend_from_slice(&buf[..t.len]);
            busy = true;
        }
        while hub.poll_event().is_some() {
            busy = true;
        }
        if !busy {
            return out;
        }
    }
}

/// Moves bytes between a hub link and a raw peer connection until quiet.
fn exchange(hub: &mut Hub, l: LinkId, peer: &mut Peer, now: Instant) {
    let mut ev = Vec::new();
    exchange_log(hub, l, peer, now, &mut ev);
}

fn exchange_log(hub: &mut Hub, l: LinkId, peer: &mut Peer, now: Instant, log: &mut Vec<String>) {
    let mut to_peer = Vec::new();
    let mut to_hub = Vec::new();
    let mut buf = [0u8; 1024];
    for _ in 0..1000 {
        let mut busy = false;
        while let Some(t) = hub.poll_transmit(now, Some(l), &mut buf) {
            to_peer.extend_from_slice(&buf[..t.len]);
            busy = true;
        }
        while let Some(e) = hub.poll_event() {
            busy = true;
            if let NodeEvent::Opened { via, .. } = e {
                let kind = match via {
                    Via::Direct => "Direct",
                    Via::Circuit { .. } => "Circuit",
                    Via::PeerSpan { .. } => "PeerSpan",
                    Via::Stacked { .. } => "Stacked",
                };
                log.push(format!("hub opened {kind}"));
            }
        }
        loop {
            let n = peer.poll_transmit(now, &mut buf);
            if n == 0 {
                break;
            }
            to_hub.extend_from_slice(&buf[..n]);
            busy = true;
        }
        while let Some(e) = peer.poll_event() {
            busy = true;
            log.push(format!("peer {e:?}"));
        }
        let used = hub.handle_input(now, l, &to_hub);
        to_hub.drain(..used);
        busy |= used > 0;
        let mut rest = &to_peer[..];
        while !rest.is_empty() {
            let used = peer.handle_input(now, rest);
            if used == 0 {
                while let Some(e) = peer.poll_event() {
                    log.push(format!("peer {e:?}"));
                }
                loop {
                    let n = peer.poll_transmit(now, &mut buf);
                    if n == 0 {
                        break;
                    }
                    to_hub.extend_from_slice(&buf[..n]);
                }
                continue;
            }
            rest = &rest[used..];
            busy = true;
        }
        to_peer.clear();
        if !busy {
            return;
        }
    }
    panic!("did not settle");
}

/// A hand-made frame (64-byte header, no aux) with a correct CRC and salt counter `seq`.
fn raw_frame(command: Command, flags: Flags, msgid: u64, circuit: u64, seq: u8) -> Vec<u8> {
    use dmsg_core::crc::DefaultCrc;
    use dmsg_core::encode::Encoder;
    use dmsg_core::wire::{Circuit, Cmd, HeaderRepr};
    let mut enc = Encoder::new(1);
    let mut out = vec![0u8; 64 * 8];
    // Advance the salt counter to `seq`.
    let mut scratch = vec![0u8; 512];
    for _ in 0..seq {
        let h = HeaderRepr::new(Cmd::new(Command::LnkPad, Flags::empty()), MsgId(0));
        enc.encode(&DefaultCrc::default(), &h, &Body::None, &[], &mut scratch)
            .unwrap();
    }
    let h = HeaderRepr {
        circuit: Circuit(circuit),
        ..HeaderRepr::new(Cmd::new(command, flags), MsgId(msgid))
    };
    let n = enc
        .encode(&DefaultCrc::default(), &h, &Body::None, &[], &mut out)
        .unwrap();
    out.truncate(n);
    out
}

/// A hand-made LNK_CONN|CREATE (salt counter 0).
fn raw_conn(seq: u8) -> Vec<u8> {
    use dmsg_core::crc::DefaultCrc;
    use dmsg_core::encode::Encoder;
    use dmsg_core::wire::body::ConnRepr;
    use dmsg_core::wire::{Cmd, HeaderRepr};
    assert_eq!(seq, 0);
    let mut enc = Encoder::new(1);
    let mut out = vec![0u8; 512];
    let h = HeaderRepr::new(Cmd::new(Command::LnkConn, Flags::CREATE), MsgId(0x1234));
    let c = ConnRepr {
        peer_mask: u64::MAX,
        peer_type: peer_type::ROUTER,
        ..ConnRepr::default()
    };
    let n = enc
        .encode(&DefaultCrc::default(), &h, &Body::Conn(c), &[], &mut out)
        .unwrap();
    out.truncate(n);
    out
}

fn aux_text(f: &OwnedFrame) -> String {
    String::from_utf8_lossy(&f.aux).into_owned()
}

// ---------------------------------------------------------------------------------------
// The shell, in DragonFly's framing.

#[test]
fn shell_answers_in_dragonflys_framing() {
    big_stack(|| {
        // Replay DragonFly's shell client (help, ping, tree, bogus) against a hub.
        let input =
            std::fs::read(dragonfly_dir().join("11_plain_shell_conn0_to_service.bin")).unwrap();
        let reference =
            std::fs::read(dragonfly_dir().join("11_plain_shell_conn0_from_service.bin")).unwrap();
        let (theirs, e) = decode_stream(&reference, reference.len(), DecoderConfig::default());
        assert_eq!(e, None);
        let mut hub = Hub::new(Default::default());
        let now = Instant::ZERO;
        // The client's refusal names the daemon's LNK_CONN msgid: use the same one.
        let cfg = LinkConfig {
            conn_msgid: MsgId(0x0000_7f45_bc00_30b0),
            ..LinkConfig::default()
        };
        let l = hub.add_link(now, &cfg).unwrap();
        let mut out = drain_bytes(&mut hub, now);
        let mut rest = &input[..];
        while !rest.is_empty() {
            let used = hub.handle_input(now, l, rest);
            rest = &rest[used..];
            out.extend(drain_bytes(&mut hub, now));
        }
        let (ours, e) = decode_stream(&out, 7, DecoderConfig::default());
        assert_eq!(e, None);
        let shell = |frames: &[OwnedFrame]| -> Vec<(u32, u64, u64, String)> {
            frames
                .iter()
                .filter(|f| f.header.cmd.command() == Command::DbgShell)
                .map(|f| {
                    (
                        f.header.cmd.0,
                        f.header.msgid.0,
                        f.header.circuit.0,
                        aux_text(f),
                    )
                })
                .collect()
        };
        let ours = shell(&ours);
        let theirs = shell(&theirs);
        // Every shell frame is DBG_SHELL|REPLY (0x20100101), msgid 0, circuit 0, with
        // `line\n\0` or the `debug> \0` prompt.
        for (cmd, msgid, circuit, text) in &ours {
            assert_eq!((*cmd, *msgid, *circuit), (0x2010_0101, 0, 0));
            assert!(text == "debug> \0" || text.ends_with("\n\0"), "{text:?}");
        }
        // The same answers as DragonFly where the commands are the same: the empty
        // command's prompt (twice), `tree` of an empty table (just the prompt), `bogus`.
        let prompts =
            |v: &[(u32, u64, u64, String)]| v.iter().filter(|x| x.3 == "debug> \0").count();
        assert_eq!(prompts(&ours), prompts(&theirs), "one prompt per command");
        let bogus: Vec<_> = theirs
            .iter()
            .filter(|x| x.3.starts_with("Unrecognized"))
            .collect();
        assert_eq!(bogus.len(), 1);
        assert!(ours.contains(bogus[0]), "{ours:?}");
        // `ping` is not one of ours: answered the same way as `bogus`.
        assert!(ours.iter().any(|x| x.3 == "Unrecognized command: ping\n\0"));
        // `help` in DragonFly's layout: a 16-column name, then the text.
        assert!(ours
            .iter()
            .any(|x| x.3 == "help            Command help\n\0"));
        assert!(ours
            .iter()
            .any(|x| x.3 == "tree            Dump spanning tree\n\0"));
        // The first two frames answer the empty DBG_SHELL with just the prompt, as DragonFly.
        assert_eq!(ours[0].3, "debug> \0");
        assert_eq!(hub.stats().shell_commands, 6);
    });
}

#[test]
fn shell_conns_and_dot_answer_line_by_line() {
    big_stack(|| {
        let mut net = Net::new(3);
        net.connect(1, 0);
        net.connect(2, 0);
        net.settle();
        let mut s = String::new();
        net.nodes[0].write_conns(&mut s).unwrap();
        assert_eq!(s.lines().count(), 2, "{s}");
        // Default LinkConfig: peer type NONE, no label.
        assert!(s.lines().all(|l| l.contains(" open NONE () ")), "{s}");
        let mut d = String::new();
        net.nodes[0].write_dot(&mut d).unwrap();
        assert!(d.starts_with("digraph dmsg {"));
        assert_eq!(d.matches(" -> ").count(), 3, "{d}");
        let mut t = String::new();
        net.nodes[0].write_tree(&mut t).unwrap();
        assert_eq!(t.matches("    Node ").count(), 3, "{t}");
        assert_eq!(t.matches("Relay-out").count(), 4, "{t}"); // own span x2, each leaf x1
    });
}

// ---------------------------------------------------------------------------------------
// DragonFly capture replay: a peer opens LNK_CONN and a LNK_SPAN, asks `tree`, pings, and
// deletes its span.

#[test]
fn dragonfly_span_capture_replay() {
    big_stack(|| {
        let input =
            std::fs::read(dragonfly_dir().join("03_plain_span_conn0_to_service.bin")).unwrap();
        assert_eq!(input.len(), 1536);
        let now = Instant::ZERO;
        let mut hub = Hub::new(Default::default());
        // The capture accepts the daemon's LNK_CONN by its msgid: use the same one.
        let cfg = LinkConfig {
            conn_msgid: MsgId(0x0000_7f5b_c400_3150),
            ..LinkConfig::default()
        };
        let l1 = hub.add_link(now, &cfg).unwrap();
        // A second link to a plain peer that wants every span.
        let l2 = hub.add_link(now, &LinkConfig::default()).unwrap();
        let mut peer = Peer::new(now, &LinkConfig::default(), Default::default()).unwrap();
        let mut log = Vec::new();
        exchange_log(&mut hub, l2, &mut peer, now, &mut log);

        // Feed the capture up to (not including) the span's DELETE at offset 1088.
        let mut out1 = Vec::new();
        let mut buf = [0u8; 1024];
        let mut rest = &input[..1088];
        while !rest.is_empty() {
            let used = hub.handle_input(now, l1, rest);
            rest = &rest[used..];
            while let Some(t) = hub.poll_transmit(now, Some(l1), &mut buf) {
                out1.extend_from_slice(&buf[..t.len]);
            }
            exchange_log(&mut hub, l2, &mut peer, now, &mut log);
        }
        // The hub's tree lists the span as DragonFly does.
        let mut tree = String::new();
        hub.write_tree(&mut tree).unwrap();
        let lines: Vec<&str> = tree.lines().collect();
        assert_eq!(
            lines[0],
            "Cluster HAMMER2 11111111-2222-3333-4444-555555555555 (cpeer-cluster)"
        );
        assert_eq!(
            lines[1],
            "    Node 08 66666666-7777-8888-9999-aaaaaaaaaaaa (cpeer-pfs)"
        );
        assert_eq!(
            lines[2],
            format!("\tSLink msgid 00007f0ea0001840 dist=0 via {l1}")
        );
        assert!(lines[3].starts_with("\t    Relay-out msgid "), "{tree}");
        assert!(lines[3].ends_with(&format!(" via {l2}")), "{tree}");

        // The second link received the relayed span with dist = 1.
        let relayed = log
            .iter()
            .find(|e| e.contains("Opened") && e.contains("Span(SpanRepr"))
            .expect("relayed span at the peer");
        assert!(relayed.contains("dist: 1,"), "{relayed}");
        assert!(relayed.contains("cpeer-pfs"), "{relayed}");

        // What the hub answered on link 1: its LNK_CONN, the accept of the peer's, the
        // accept of the span (0xa80fff01 on the span's msgid), and the `tree` output.
        let (frames, e) = decode_stream(&out1, 64, DecoderConfig::default());
        assert_eq!(e, None);
        let accept = frames
            .iter()
            .find(|f| f.header.msgid == MsgId(0x0000_7f0e_a000_1840))
            .expect("span accepted");
        assert_eq!(accept.header.cmd.0, 0xa80f_ff01);
        let shell: Vec<String> = frames
            .iter()
            .filter(|f| f.header.cmd.0 == 0x2010_0101)
            .map(aux_text)
            .collect();
        assert_eq!(
            shell[0],
            "Cluster HAMMER2 11111111-2222-3333-4444-555555555555 (cpeer-cluster)\n\0"
        );
        assert_eq!(
            shell[1],
            "    Node 08 66666666-7777-8888-9999-aaaaaaaaaaaa (cpeer-pfs)\n\0"
        );
        assert_eq!(
            shell[2],
            format!("\tSLink msgid 00007f0ea0001840 dist=0 via {l1}\n\0")
        );
        assert!(shell[3].starts_with("\t    Relay-out msgid "));
        assert_eq!(shell[4], "debug> \0");
        // The ping was answered.
        assert!(frames.iter().any(|f| f.header.cmd.0 == 0x2000_0101));

        // Now the span's DELETE: answered LNK_ERROR|DELETE|REPLY|REVTRANS (0x680fff01), and
        // the relay on link 2 is deleted.
        let used = hub.handle_input(now, l1, &input[1088..]);
        assert_eq!(used, 448);
        let mut tail = Vec::new();
        while let Some(t) = hub.poll_transmit(now, Some(l1), &mut buf) {
            tail.extend_from_slice(&buf[..t.len]);
        }
        let mut log2 = Vec::new();
        exchange_log(&mut hub, l2, &mut peer, now, &mut log2);
        // The tail starts mid-stream (frame 9): no sequence check.
        let cfg = DecoderConfig {
            check_sequence: false,
            ..DecoderConfig::default()
        };
        let (frames, e) = decode_stream(&tail, tail.len(), cfg);
        assert_eq!(e, None);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].header.cmd.0, 0x680f_ff01);
        assert_eq!(frames[0].header.msgid, MsgId(0x0000_7f0e_a000_1840));
        assert!(
            // LNK_ERROR|DELETE (0x400fff01) closing the relay.
            log2.iter()
                .any(|e| e.contains("Message") && e.contains(&format!("Cmd({})", 0x400f_ff01u32))),
            "{log2:?}"
        );
        assert!(hub.spans().is_empty());
        // The relay waits for the peer's DELETE; a plain Connection answers only when told.
        assert_eq!(hub.relays().len(), 1);
        assert_eq!(hub.relays()[0].state, dmsg_core::node::RelayState::Closing);
        let relay_msgid = hub.relays()[0].txn.unwrap().msgid();
        let t = peer
            .txn_handle(dmsg_core::link::Side::Theirs, relay_msgid)
            .expect("the relay is open at the peer");
        peer.delete(now, t).unwrap();
        exchange(&mut hub, l2, &mut peer, now);
        assert!(hub.relays().is_empty(), "{:?}", hub.relays());
        assert_eq!(hub.link(l1).unwrap().stats().violations.total(), 0);
        assert_eq!(hub.link(l2).unwrap().stats().violations.total(), 0);
    });
}

// ---------------------------------------------------------------------------------------
// Span flood.

#[test]
fn span_flood_is_refused_with_param_and_counted() {
    big_stack(|| {
        // A node with room for 16 spans (one is its own) and 32 transactions per link.
        let mut hub = Hub::new(Default::default());
        hub.advertise(span_of(1)).unwrap();
        let now = Instant::ZERO;
        let l = hub.add_link(now, &LinkConfig::default()).unwrap();
        let mut peer = Peer::new(now, &LinkConfig::default(), Default::default()).unwrap();
        exchange(&mut hub, l, &mut peer, now);
        let mut log = Vec::new();
        let mut opened = 0;
        for i in 0..30u8 {
            let body = Body::Span(span_of(100 + i));
            let msg = Outgoing::new(Command::LnkSpan).with_body(&body);
            match peer.open(now, &msg, Flags::empty(), None) {
                Ok(_) => opened += 1,
                Err(_) => {
                    exchange_log(&mut hub, l, &mut peer, now, &mut log);
                }
            }
            exchange_log(&mut hub, l, &mut peer, now, &mut log);
        }
        assert_eq!(opened, 30);
        assert_eq!(hub.spans().len(), 16);
        let s = *hub.stats();
        assert_eq!(s.spans_accepted, 15);
        assert_eq!(s.spans_refused_full, 15);
        assert_eq!(hub.link_stats(l).unwrap().spans_refused, 15);
        // Each refusal is LNK_ERROR|CREATE|DELETE|REPLY|REVTRANS with PARAM: the peer sees its
        // span closed with PARAM... after it closes its own side.
        let refused = log
            .iter()
            .filter(|e| e.contains("Message") && e.contains("error: 35"))
            .count();
        assert_eq!(refused, 15, "{log:?}");
        // The peer closes the refused ones; the hub's link ends them and stays clean.
        let _ = peer;
        assert_eq!(hub.link(l).unwrap().stats().violations.total(), 0);
    });
}

#[test]
fn unknown_commands_are_relayed_with_their_extended_header() {
    big_stack(|| {
        let mut net = Net::new(3);
        net.connect(1, 0);
        net.connect(2, 0);
        net.settle();
        net.auto_answer = false;
        // A command this crate has no structure for, with a 3-block header (2 blocks of
        // opaque extended header) and aux data.
        let cmd = Command::Unknown {
            proto: 3,
            code: 0x042,
        };
        let ext: Vec<u8> = (0..128u32).map(|i| (i * 7 + 1) as u8).collect();
        let msg = Outgoing::new(cmd).with_ext(&ext).with_aux(b"opaque");
        let now = net.now;
        let txn = net.nodes[1]
            .open(now, addr(3), &msg, Flags::DELETE)
            .unwrap();
        // Catch the far leaf's event with the frame's extended header.
        net.drain(1);
        let mut got = None;
        for _ in 0..100 {
            // Move bytes one hop at a time and look at leaf 2's events ourselves.
            for w in 0..net.wires.len() {
                let (a, la, b, lb) = (
                    net.wires[w].0,
                    net.wires[w].1,
                    net.wires[w].2,
                    net.wires[w].3,
                );
                let ab = std::mem::take(&mut net.wires[w].4);
                let used = net.nodes[b].handle_input(now, lb, &ab);
                net.wires[w].4 = ab[used..].to_vec();
                let ba = std::mem::take(&mut net.wires[w].5);
                let used = net.nodes[a].handle_input(now, la, &ba);
                net.wires[w].5 = ba[used..].to_vec();
            }
            if let Some(NodeEvent::Opened { txn, msg, via }) = net.nodes[2].poll_event() {
                got = Some((
                    txn,
                    via,
                    msg.command(),
                    msg.header.cmd.size_blocks(),
                    msg.ext.to_vec(),
                    msg.aux.to_vec(),
                ));
                break;
            }
            net.drain(0);
            net.drain(1);
        }
        let (far, via, command, blocks, got_ext, aux) = got.expect("relayed to the far leaf");
        assert_eq!(via, Via::Circuit { to: addr(3) });
        assert_eq!(command, cmd);
        assert_eq!(blocks, 3);
        assert_eq!(got_ext, ext);
        assert_eq!(aux, b"opaque");
        // The answer goes back the same way.
        net.nodes[2].reply(now, far, 0).unwrap();
        net.settle();
        assert!(net.log[1].contains(&Rec::Closed(txn, 0, TxnEnd::Completed)));
        assert_eq!(net.nodes[0].stats().frames_relayed, 2);
    });
}

#[test]
fn remove_link_with_a_frame_waiting_for_the_application() {
    big_stack(|| {
        let now = Instant::ZERO;
        let mut hub = Hub::new(Default::default());
        let l = hub.add_link(now, &LinkConfig::default()).unwrap();
        let mut peer = Peer::new(now, &LinkConfig::default(), Default::default()).unwrap();
        exchange(&mut hub, l, &mut peer, now);
        // The peer opens a transaction; the hub's application never takes the event.
        peer.open(
            now,
            &Outgoing::new(Command::DbgShell).with_aux(b"x"),
            Flags::empty(),
            None,
        )
        .unwrap();
        let mut buf = [0u8; 1024];
        let n = peer.poll_transmit(now, &mut buf);
        let used = hub.handle_input(now, l, &buf[..n]);
        assert_eq!(used, n);
        hub.remove_link(now, l).unwrap();
        let mut events = Vec::new();
        while let Some(e) = hub.poll_event() {
            events.push(format!("{e:?}"));
        }
        assert!(
            events.iter().any(|e| e.starts_with("LinkDown")),
            "{events:?}"
        );
        assert!(
            !events.iter().any(|e| e.starts_with("Opened")),
            "{events:?}"
        );
        assert_eq!(hub.links().count(), 0);
        assert_eq!(
            hub.remove_link(now, l),
            Err(dmsg_core::node::NodeError::UnknownLink(l))
        );
        // The slot is reused under a new id.
        let l2 = hub.add_link(now, &LinkConfig::default()).unwrap();
        assert_ne!(l, l2);
    });
}

#[test]
fn random_traffic_from_a_raw_peer_never_breaks_the_hub() {
    big_stack(|| {
        // A raw peer drives a hub with random (well-formed) transactions: direct, over the
        // spans the hub relays to it (routed to a leaf), stacked on its own transactions,
        // one-way over circuits, aborts, deletes; the leaf answers at random. Nothing may
        // panic, and once the peer has closed everything no route is left.
        let now = Instant::ZERO;
        let mut net = Net::new(2); // node 0 hub, node 1 leaf (advertises itself)
        net.auto_answer = true;
        let hub_peer_link = net.nodes[0].add_link(now, &LinkConfig::default()).unwrap();
        net.tap = Some((0, hub_peer_link));
        net.connect(1, 0);
        let mut peer = Peer::new(now, &LinkConfig::default(), Default::default()).unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut open: Vec<dmsg_core::link::TxnId> = Vec::new();
        let mut spans: Vec<dmsg_core::link::TxnId> = Vec::new();
        let mut to_hub: Vec<u8> = Vec::new();
        let mut to_peer: Vec<u8> = Vec::new();
        let mut buf = [0u8; 2048];
        for step in 0..3000 {
            // The peer acts.
            let r = rnd();
            let cmd = match r % 3 {
                0 => Command::DbgShell,
                1 => Command::BlkRead,
                _ => Command::Unknown {
                    proto: 7,
                    code: (r >> 8) as u16 & 0xFFF,
                },
            };
            let aux = vec![(r >> 16) as u8; ((r >> 24) % 200) as usize];
            let body_io = Body::BlkIo(Default::default());
            let msg = match cmd {
                Command::BlkRead => Outgoing::new(cmd).with_body(&body_io).with_aux(&aux),
                _ => Outgoing::new(cmd).with_aux(&aux),
            };
            let pick = |v: &Vec<dmsg_core::link::TxnId>, r: u64| {
                if v.is_empty() {
                    None
                } else {
                    Some(v[(r as usize >> 3) % v.len()])
                }
            };
            let flags = match (r >> 40) % 4 {
                0 => Flags::DELETE,
                1 => Flags::ABORT | Flags::DELETE,
                _ => Flags::empty(),
            };
            let _ = match (r >> 44) % 6 {
                0 => peer.open(now, &msg, flags, None).map(|t| open.push(t)),
                1 => match pick(&spans, r) {
                    Some(c) => peer.open(now, &msg, flags, Some(c)).map(|t| open.push(t)),
                    None => Ok(()),
                },
                2 => match pick(&open, r) {
                    Some(c) => peer.open(now, &msg, flags, Some(c)).map(|t| open.push(t)),
                    None => Ok(()),
                },
                3 => match pick(&open, r) {
                    Some(t) => peer.send(now, t, &msg, flags),
                    None => Ok(()),
                },
                4 => peer.send_one_way(now, &msg, false, pick(&spans, r)),
                _ => match pick(&open, r) {
                    Some(t) => peer.abort(now, t),
                    None => Ok(()),
                },
            };
            // Bytes both ways, and the rest of the network.
            loop {
                let n = peer.poll_transmit(now, &mut buf);
                if n == 0 {
                    break;
                }
                to_hub.extend_from_slice(&buf[..n]);
            }
            let used = net.nodes[0].handle_input(now, hub_peer_link, &to_hub);
            to_hub.drain(..used);
            net.settle();
            to_peer.append(&mut net.tap_bytes);
            let mut rest = &to_peer[..];
            loop {
                let used = peer.handle_input(now, rest);
                rest = &rest[used..];
                let mut any = false;
                while let Some(e) = peer.poll_event() {
                    any = true;
                    match e {
                        dmsg_core::link::Event::Opened { txn, msg }
                            if msg.command() == Command::LnkSpan =>
                        {
                            spans.push(txn);
                        }
                        dmsg_core::link::Event::Opened { txn, .. } => open.push(txn),
                        dmsg_core::link::Event::Closed { txn, .. } => {
                            open.retain(|t| *t != txn);
                            spans.retain(|t| *t != txn);
                        }
                        _ => {}
                    }
                }
                if rest.is_empty() || (used == 0 && !any) {
                    break;
                }
            }
            to_peer = rest.to_vec();
            if step % 500 == 499 {
                // Close everything the peer has open.
                for t in open.clone() {
                    let _ = peer.abort(now, t);
                }
            }
        }
        let hub = &net.nodes[0];
        assert_eq!(hub.link(hub_peer_link).unwrap().stats().ctl_dropped, 0);
        let st = hub.stats();
        assert!(st.routes_relayed > 10, "{st:?}");
        assert!(st.frames_relayed > 100, "{st:?}");
    });
}
