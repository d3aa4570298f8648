//! Unit tests of the session over an in-memory pair of sessions with real encoders and
//! decoders (so salts and CRCs are checked on every frame).

extern crate std;

use std::vec::Vec;

use super::*;
use crate::crc::DefaultCrc;
use crate::decode::{Decoder, DecoderConfig};
use crate::encode::Encoder;
use crate::wire::{Body, Cmd, Command, Flags, MsgId};

type S = Session<DefaultCrc, 8, 4096, 4, 2048>;

const DEC: DecoderConfig = DecoderConfig {
    max_aux_bytes: 1024,
    max_header_blocks: 8,
    check_sequence: true,
};

fn cfg() -> SessionConfig {
    SessionConfig {
        grace: Duration::from_secs(10),
        delayed_ack: Duration::from_millis(20),
        rto_initial: Duration::from_millis(100),
        rto_max: Duration::from_millis(800),
        dup_ack_threshold: 2,
        close_timeout: Duration::from_secs(5),
        time_wait: Duration::from_millis(300),
        salt_seed: 1,
    }
}

fn frame(msgid: u64, aux: &[u8]) -> Vec<u8> {
    let h = HeaderRepr::new(Cmd::new(Command::DbgShell, Flags::empty()), MsgId(msgid));
    let mut out = std::vec![0u8; 64 + align64(aux.len())];
    let n = Encoder::new(msgid as u32)
        .encode(&DefaultCrc::default(), &h, &Body::None, aux, &mut out)
        .unwrap();
    assert_eq!(n, out.len());
    out
}

/// An owned decoded frame.
#[derive(Clone, Debug)]
struct Owned {
    ext: Vec<u8>,
    aux: Vec<u8>,
}

impl Owned {
    fn repr(&self) -> HeaderRepr {
        HeaderRepr::parse(&Header::new_checked(&self.ext[..]).unwrap())
    }
    fn control(&self) -> Option<ControlFrame> {
        ControlFrame::parse(&self.repr()).map(|r| r.unwrap())
    }
}

fn decoder_after_conn() -> Decoder<[u8; 1536], DefaultCrc> {
    let mut d = Decoder::new([0u8; 1536], DEC, DefaultCrc::default()).unwrap();
    // The LNK_CONN that preceded the session on this transport (salt counter 0).
    let conn = frame(1, &[]);
    assert!(d.decode(&conn).unwrap().frame.is_some());
    d
}

struct Pair {
    a: S,
    b: S,
    now: Instant,
    dec_at_b: Decoder<[u8; 1536], DefaultCrc>,
    dec_at_a: Decoder<[u8; 1536], DefaultCrc>,
    got_a: Vec<u64>,
    got_b: Vec<u64>,
}

impl Pair {
    fn new() -> Pair {
        Pair::with_ids(0xA, 0xB)
    }

    fn with_ids(ida: u64, idb: u64) -> Pair {
        let mut a = S::new(cfg(), DefaultCrc::default());
        let mut b = S::new(cfg(), DefaultCrc::default());
        a.start(Instant::ZERO, ida, idb).unwrap();
        b.start(Instant::ZERO, idb, ida).unwrap();
        Pair {
            a,
            b,
            now: Instant::ZERO,
            dec_at_b: decoder_after_conn(),
            dec_at_a: decoder_after_conn(),
            got_a: Vec::new(),
            got_b: Vec::new(),
        }
    }

    /// Everything `from` has to send now, decoded by the other side's decoder.
    fn xmit(&mut self, from_a: bool) -> Vec<Owned> {
        let (s, dec) = if from_a {
            (&mut self.a, &mut self.dec_at_b)
        } else {
            (&mut self.b, &mut self.dec_at_a)
        };
        let mut bytes = Vec::new();
        let mut buf = [0u8; 100]; // smaller than most frames: exercises partial writes
        loop {
            let n = s.poll_transmit(self.now, &mut buf);
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
        }
        let mut frames = Vec::new();
        let mut input = &bytes[..];
        while !input.is_empty() {
            let out = dec.decode(input).expect("session output decodes");
            input = &input[out.consumed..];
            if let Some(f) = out.frame {
                frames.push(Owned {
                    ext: f.ext_bytes().to_vec(),
                    aux: f.aux().to_vec(),
                });
            }
        }
        frames
    }

    /// Hands frames to `to` and records delivered msgids.
    fn feed(&mut self, to_b: bool, frames: &[Owned]) -> Vec<Verdict> {
        let now = self.now;
        let (s, got) = if to_b {
            (&mut self.b, &mut self.got_b)
        } else {
            (&mut self.a, &mut self.got_a)
        };
        let mut vs = Vec::new();
        for f in frames {
            let v = s.on_frame_parts(now, &f.ext, &f.aux);
            if v == Verdict::Deliver {
                got.push(f.repr().msgid.0);
                while let Some(h) = s.poll_deliver(now) {
                    got.push(h.repr().msgid.0);
                }
            }
            vs.push(v);
        }
        vs
    }

    /// Exchanges frames and runs timers until nothing moves (bounded).
    fn settle(&mut self) {
        for _ in 0..200 {
            let fa = self.xmit(true);
            let fb = self.xmit(false);
            if fa.is_empty() && fb.is_empty() {
                let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min();
                match next {
                    Some(t) if t > self.now + Duration::from_secs(30) => return,
                    Some(t) => {
                        self.now = t.max(self.now);
                        self.a.handle_timeout(self.now);
                        self.b.handle_timeout(self.now);
                    }
                    None => return,
                }
            }
            self.feed(true, &fa);
            self.feed(false, &fb);
        }
        panic!("pair did not settle");
    }

    fn events(s: &mut S) -> Vec<SessionEvent> {
        core::iter::from_fn(|| s.poll_event()).collect()
    }

    fn reconnect(&mut self) {
        self.a.transport_connected(self.now);
        self.b.transport_connected(self.now);
        self.dec_at_a.reset();
        self.dec_at_b.reset();
    }
}

#[test]
fn start_checks_ids_and_state() {
    let mut s = S::new(cfg(), DefaultCrc::default());
    assert_eq!(
        s.send(Instant::ZERO, &frame(1, b"")),
        Err(SessionError::NotRunning)
    );
    assert_eq!(s.close(Instant::ZERO), Err(SessionError::NotRunning));
    assert_eq!(s.start(Instant::ZERO, 0, 1), Err(SessionError::InvalidId));
    assert_eq!(s.ids(), None);
    s.start(Instant::ZERO, 5, 6).unwrap();
    assert_eq!(
        s.start(Instant::ZERO, 5, 6),
        Err(SessionError::AlreadyRunning)
    );
    assert_eq!(s.ids(), Some((5, 6)));
    assert_eq!(s.next_seq(), Seq::new(5).unwrap());
    assert_eq!(s.expected_seq(), Seq::new(6).unwrap());
    assert_eq!(
        (s.state(), s.outcome()),
        (State::Established, Outcome::Running)
    );
}

#[test]
fn data_is_delivered_in_order_and_acked_by_piggyback_or_delayed_ack() {
    let mut p = Pair::new();
    for i in 0..3 {
        p.a.send(p.now, &frame(100 + i, b"hello")).unwrap();
    }
    let fa = p.xmit(true);
    assert_eq!(fa.len(), 3);
    assert_eq!(p.feed(true, &fa), [Verdict::Deliver; 3]);
    assert_eq!(p.got_b, [100, 101, 102]);
    // B sends data: it carries the ack.
    p.b.send(p.now, &frame(200, b"")).unwrap();
    let fb = p.xmit(false);
    assert_eq!(fb.len(), 1);
    let (seq, ack) = unpack_link_verifier(fb[0].repr().link_verifier);
    assert_eq!(seq, Seq::new(0xB));
    assert_eq!(ack, Seq::new(0xA + 3));
    p.feed(false, &fb);
    assert_eq!(p.a.in_flight(), 0);
    assert_eq!(p.a.stats().frames_acked, 3);
    // A owes B an ack; it goes out only when the delayed-ack timer fires.
    assert!(p.xmit(true).is_empty());
    assert_eq!(p.a.poll_timeout(), Some(p.now + Duration::from_millis(20)));
    p.now = p.now + Duration::from_millis(20);
    p.a.handle_timeout(p.now);
    let acks = p.xmit(true);
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].control().unwrap().op, ControlOp::Ack);
    assert_eq!(p.feed(true, &acks), [Verdict::Control]);
    assert_eq!(p.b.in_flight(), 0);
    assert_eq!(p.a.stats().acks_sent, 1);
}

#[test]
fn full_window_is_backpressure_and_stores_nothing() {
    let mut p = Pair::new();
    let big = frame(1, &[7u8; 1000]);
    // 8 slots, one kept for the FIN: 7 frames fit by count, 4 by bytes (4 × 1088 > 4096).
    for _ in 0..3 {
        p.a.send(p.now, &big).unwrap();
    }
    assert!(!p.a.can_send(big.len()));
    assert_eq!(p.a.send(p.now, &big), Err(SessionError::WindowFull));
    let small = frame(2, b"");
    for _ in 0..4 {
        p.a.send(p.now, &small).unwrap();
    }
    assert_eq!(p.a.send(p.now, &small), Err(SessionError::WindowFull));
    assert_eq!(p.a.in_flight(), 7);
    assert_eq!(p.a.stats().frames_accepted, 7);
    assert_eq!(
        p.a.send(p.now, &frame(3, &[0u8; 1024])[..]).unwrap_err(),
        SessionError::WindowFull
    );
    let mut s = Session::<DefaultCrc, 4, 512, 0, 0>::new(cfg(), DefaultCrc::default());
    s.start(Instant::ZERO, 1, 2).unwrap();
    assert_eq!(
        s.send(Instant::ZERO, &big),
        Err(SessionError::FrameTooLarge {
            len: 1088,
            capacity: 512
        })
    );
    // Acks make room again.
    p.settle();
    assert_eq!(p.a.in_flight(), 0);
    assert!(p.a.can_send(big.len()));
}

#[test]
fn malformed_and_control_frames_are_refused_by_send() {
    let mut p = Pair::new();
    let mut two = frame(1, b"");
    two.extend_from_slice(&frame(2, b""));
    assert_eq!(p.a.send(p.now, &two), Err(SessionError::BadFrame));
    assert_eq!(p.a.send(p.now, &two[..63]), Err(SessionError::BadFrame));
    assert_eq!(p.a.send(p.now, &[0u8; 64]), Err(SessionError::BadFrame));
    let ack = ControlFrame {
        op: ControlOp::Ack,
        sender_id: 1,
        receiver_id: 2,
        seq: None,
        ack: None,
    };
    let mut buf = [0u8; 64];
    ack.emit(&DefaultCrc::default(), 0, &mut buf);
    assert_eq!(p.a.send(p.now, &buf), Err(SessionError::BadFrame));
    assert_eq!(p.a.in_flight(), 0);
}

#[test]
fn partial_writes_produce_the_same_bytes() {
    let mut whole = Pair::new();
    let mut piecewise = Pair::new();
    for p in [&mut whole, &mut piecewise] {
        p.a.send(p.now, &frame(1, &[1u8; 300])).unwrap();
        p.a.send(p.now, &frame(2, b"x")).unwrap();
    }
    let mut a = [0u8; 2048];
    let n = whole.a.poll_transmit(whole.now, &mut a);
    let mut b = Vec::new();
    let mut piece = [0u8; 7];
    loop {
        let k = piecewise.a.poll_transmit(piecewise.now, &mut piece);
        if k == 0 {
            break;
        }
        b.extend_from_slice(&piece[..k]);
    }
    assert_eq!(&a[..n], &b[..]);
    assert_eq!(n, 384 + 128);
}

#[test]
fn duplicates_are_dropped_and_future_frames_held_until_the_gap_fills() {
    let mut p = Pair::new();
    for i in 0..4 {
        p.a.send(p.now, &frame(i, b"")).unwrap();
    }
    let f = p.xmit(true);
    // 0 arrives, then 2 and 3 (held), then 0 again (duplicate), then 1 fills the gap.
    assert_eq!(p.feed(true, &f[0..1]), [Verdict::Deliver]);
    assert_eq!(p.feed(true, &f[2..4]), [Verdict::Held, Verdict::Held]);
    assert_eq!(p.feed(true, &f[2..3]), [Verdict::Duplicate]);
    assert_eq!(p.feed(true, &f[0..1]), [Verdict::Duplicate]);
    assert_eq!(p.b.held(), 2);
    assert_eq!(p.feed(true, &f[1..2]), [Verdict::Deliver]);
    assert_eq!(p.got_b, [0, 1, 2, 3]);
    assert_eq!(p.b.held(), 0);
    assert_eq!(p.b.stats().duplicates_dropped, 2);
    assert_eq!(p.b.stats().future_held, 2);
    assert_eq!(p.b.expected_seq(), Seq::new(0xA + 4).unwrap());
}

#[test]
fn a_full_reorder_buffer_drops_and_retransmission_recovers() {
    let mut p = Pair::new();
    for i in 0..7 {
        p.a.send(p.now, &frame(i, b"")).unwrap();
    }
    let f = p.xmit(true);
    // Frame 0 is lost; 1..=4 are held (4 slots), 5 and 6 dropped.
    let vs = p.feed(true, &f[1..]);
    assert_eq!(&vs[..4], &[Verdict::Held; 4]);
    assert_eq!(&vs[4..], &[Verdict::Dropped(DropReason::ReorderFull); 2]);
    assert_eq!(p.b.stats().future_dropped, 2);
    p.settle();
    assert_eq!(p.got_b, (0..7).collect::<Vec<_>>());
    assert!(p.a.stats().frames_retransmitted >= 1);
}

#[test]
fn retransmission_timer_backs_off_and_is_bounded() {
    let mut p = Pair::new();
    p.a.send(p.now, &frame(1, b"")).unwrap();
    assert_eq!(p.xmit(true).len(), 1); // lost
    let mut gaps = Vec::new();
    for _ in 0..6 {
        let t = p.a.poll_timeout().unwrap();
        gaps.push((t - p.now).as_millis());
        p.now = t;
        p.a.handle_timeout(p.now);
        p.a.handle_timeout(p.now); // spurious second call: harmless
        assert_eq!(p.xmit(true).len(), 1); // lost again
    }
    assert_eq!(gaps, [100, 200, 400, 800, 800, 800]);
    assert_eq!(p.a.stats().rto_expiries, 6);
    assert_eq!(p.a.stats().frames_retransmitted, 6);
    // Delivered at last; the ack resets the timer.
    let f = p.xmit(true);
    assert!(f.is_empty());
    p.settle();
    assert_eq!(p.got_b, [1]);
    assert_eq!(p.a.in_flight(), 0);
    assert_eq!(p.a.poll_timeout(), None);
}

#[test]
fn duplicate_acks_trigger_one_fast_retransmission() {
    let mut p = Pair::new();
    for i in 0..4 {
        p.a.send(p.now, &frame(i, b"")).unwrap();
    }
    let f = p.xmit(true);
    // Frame 0 lost; each later frame makes B ack "0" at once.
    p.feed(true, &f[1..]);
    let acks = p.xmit(false);
    assert_eq!(acks.len(), 1, "one ACK carries the repeated ack");
    p.feed(false, &acks);
    p.feed(true, &f[1..2]); // a duplicate held frame: another immediate ACK
    let acks = p.xmit(false);
    p.feed(false, &acks);
    assert_eq!(p.a.stats().fast_retransmits, 1);
    let re = p.xmit(true);
    assert_eq!(re.len(), 1);
    assert_eq!(re[0].repr().msgid, MsgId(0));
    p.feed(true, &re);
    assert_eq!(p.got_b, [0, 1, 2, 3]);
}

#[test]
fn fin_handshake_closes_both_sides_cleanly_and_resets_sequence_state() {
    let mut p = Pair::new();
    p.a.send(p.now, &frame(1, b"last words")).unwrap();
    p.a.close(p.now).unwrap();
    assert_eq!(p.a.state(), State::FinWait1);
    assert_eq!(p.a.send(p.now, &frame(2, b"")), Err(SessionError::Closing));
    assert_eq!(p.a.close(p.now), Err(SessionError::Closing));
    let f = p.xmit(true);
    assert_eq!(f.len(), 2);
    assert_eq!(f[1].control().unwrap().op, ControlOp::Fin);
    p.feed(true, &f);
    assert_eq!(p.got_b, [1]); // data before the FIN
    assert_eq!(p.b.state(), State::CloseWait);
    assert_eq!(Pair::events(&mut p.b), [SessionEvent::PeerClosing]);
    // B can still send in CLOSE_WAIT.
    p.b.send(p.now, &frame(3, b"reply")).unwrap();
    p.b.close(p.now).unwrap();
    assert_eq!(p.b.state(), State::LastAck);
    let fb = p.xmit(false);
    p.feed(false, &fb);
    assert_eq!(p.got_a, [3]);
    // A's FIN was acked by B's frames and B's FIN arrived: TIME_WAIT.
    assert_eq!(p.a.state(), State::TimeWait);
    assert_eq!(Pair::events(&mut p.a), [SessionEvent::ClosedCleanly]);
    p.settle();
    assert_eq!((p.a.state(), p.b.state()), (State::Closed, State::Closed));
    assert_eq!(p.a.outcome(), Outcome::ClosedCleanly);
    assert_eq!(p.b.outcome(), Outcome::ClosedCleanly);
    assert_eq!(Pair::events(&mut p.b), [SessionEvent::ClosedCleanly]);
    assert_eq!(p.a.next_seq(), Seq::new(0xA).unwrap());
    assert_eq!(p.a.expected_seq(), Seq::new(0xB).unwrap());
    assert_eq!(p.a.poll_timeout(), None);
    assert_eq!(
        p.a.send(p.now, &frame(4, b"")),
        Err(SessionError::NotRunning)
    );
}

#[test]
fn simultaneous_close_goes_through_closing() {
    let mut p = Pair::new();
    p.a.close(p.now).unwrap();
    p.b.close(p.now).unwrap();
    let fa = p.xmit(true);
    let fb = p.xmit(false);
    p.feed(true, &fa);
    p.feed(false, &fb);
    // Each FIN carried the ack of the FIN it crossed? No: they crossed, so each side is
    // in CLOSING until the other's ack arrives.
    assert_eq!((p.a.state(), p.b.state()), (State::Closing, State::Closing));
    p.settle();
    assert_eq!((p.a.state(), p.b.state()), (State::Closed, State::Closed));
    assert_eq!(p.a.outcome(), Outcome::ClosedCleanly);
    assert_eq!(p.b.outcome(), Outcome::ClosedCleanly);
}

#[test]
fn fin_ahead_of_a_gap_is_held_and_processed_after_the_data() {
    let mut p = Pair::new();
    p.a.send(p.now, &frame(1, b"")).unwrap();
    p.a.close(p.now).unwrap();
    let f = p.xmit(true);
    assert_eq!(p.feed(true, &f[1..]), [Verdict::Control]); // held FIN
    assert_eq!(p.b.state(), State::Established);
    assert_eq!(p.feed(true, &f[..1]), [Verdict::Deliver]);
    assert_eq!(p.b.state(), State::CloseWait);
    assert_eq!(p.got_b, [1]);
}

#[test]
fn closing_states_time_out_with_a_typed_reason() {
    let mut p = Pair::new();
    p.a.send(p.now, &frame(9, b"")).unwrap();
    p.a.close(p.now).unwrap();
    let _lost = p.xmit(true);
    let mut last = p.now;
    while p.a.outcome() == Outcome::Running {
        let t = p.a.poll_timeout().unwrap();
        assert!(t >= last);
        last = t;
        p.now = t;
        p.a.handle_timeout(t);
        let _ = p.xmit(true); // every retransmission is lost
    }
    assert_eq!(p.now, Instant::ZERO + cfg().close_timeout);
    assert_eq!(
        Pair::events(&mut p.a),
        [SessionEvent::Died {
            reason: DeathReason::CloseTimeout(State::FinWait1),
            unacked: 1
        }]
    );
    let un: Vec<_> = p.a.unacked().map(|u| u.header.msgid.0).collect();
    assert_eq!(un, [9]);
}

#[test]
fn resume_after_a_short_outage_resends_what_was_not_acked() {
    let mut p = Pair::new();
    for i in 0..3 {
        p.a.send(p.now, &frame(i, b"abc")).unwrap();
    }
    let f = p.xmit(true);
    p.feed(true, &f[..1]); // 1 and 2 die with the transport
    p.now = p.now + Duration::from_secs(1);
    p.a.transport_lost(p.now);
    p.b.transport_lost(p.now);
    p.a.send(p.now, &frame(3, b"")).unwrap(); // accepted while down
    assert!(p.xmit(true).is_empty());
    p.now = p.now + Duration::from_secs(2);
    p.reconnect();
    assert_eq!(p.a.transport(), TransportState::Resuming);
    // A's first frame on the new transport is RESUME, with salt counter 0.
    let fa = p.xmit(true);
    assert_eq!(fa.len(), 1);
    let r = fa[0].control().unwrap();
    assert_eq!(
        (r.op, r.sender_id, r.receiver_id, r.ack),
        (ControlOp::Resume, 0xA, 0xB, Seq::new(0xB))
    );
    assert_eq!(fa[0].repr().salt & 0xFF, 0);
    p.settle();
    assert_eq!(p.got_b, [0, 1, 2, 3]);
    assert_eq!(p.a.in_flight(), 0);
    let ev = Pair::events(&mut p.a);
    assert_eq!(
        ev,
        [SessionEvent::Resumed {
            outage: Duration::from_secs(2),
            pending: 3
        }]
    );
    assert_eq!(p.a.stats().resumes, 1);
    assert_eq!(p.b.stats().resumes, 1);
}

#[test]
fn peer_resume_processed_before_ours_is_answered_with_resume_ok_only() {
    let mut p = Pair::new();
    p.b.send(p.now, &frame(5, b"")).unwrap();
    let _lost = p.xmit(false);
    p.a.transport_lost(p.now);
    p.b.transport_lost(p.now);
    p.reconnect();
    let rb = p.xmit(false);
    assert_eq!(p.feed(false, &rb), [Verdict::Control]);
    assert_eq!(p.a.transport(), TransportState::Up);
    let fa = p.xmit(true);
    assert_eq!(fa[0].control().unwrap().op, ControlOp::ResumeOk);
    assert_eq!(fa[0].repr().salt & 0xFF, 0);
    p.feed(true, &fa);
    assert_eq!(p.b.transport(), TransportState::Up);
    p.settle();
    assert_eq!(p.got_a, [5]);
    // A duplicate RESUME is answered again and changes nothing else.
    let mut buf = [0u8; 64];
    ControlFrame {
        op: ControlOp::Resume,
        sender_id: 0xB,
        receiver_id: 0xA,
        seq: None,
        ack: p.a.next_seq().into(),
    }
    .emit(&DefaultCrc::default(), 0, &mut buf);
    assert_eq!(p.a.on_frame_parts(p.now, &buf, &[]), Verdict::Control);
    assert_eq!(p.a.stats().duplicate_resumes, 1);
}

#[test]
fn outage_beyond_grace_kills_the_session_and_lists_unacked_frames() {
    let mut p = Pair::new();
    for i in 0..3 {
        p.a.send(p.now, &frame(10 + i, b"")).unwrap();
    }
    let f = p.xmit(true);
    p.feed(true, &f[..1]);
    let ack = p.xmit(false);
    p.now = p.now + Duration::from_millis(20);
    p.b.handle_timeout(p.now);
    let ack2 = p.xmit(false);
    assert!(ack.is_empty() && ack2.len() == 1);
    p.feed(false, &ack2);
    p.a.transport_lost(p.now);
    let lost = p.now;
    assert_eq!(p.a.poll_timeout(), Some(lost + cfg().grace));
    p.now = lost + Duration::from_secs(5);
    p.a.transport_connected(p.now); // reconnects, but the peer never answers
    p.dec_at_b.reset();
    let _ = p.xmit(true);
    p.a.transport_lost(p.now);
    p.a.handle_timeout(lost + Duration::from_secs(9));
    assert_eq!(p.a.outcome(), Outcome::Running);
    p.a.handle_timeout(lost + cfg().grace);
    assert_eq!(p.a.outcome(), Outcome::Died(DeathReason::GraceExpired));
    assert_eq!(
        Pair::events(&mut p.a),
        [SessionEvent::Died {
            reason: DeathReason::GraceExpired,
            unacked: 2
        }]
    );
    let un: Vec<_> =
        p.a.unacked()
            .map(|u| (u.header.msgid.0, u.transmissions))
            .collect();
    assert_eq!(un, [(11, 1), (12, 1)]);
    assert_eq!(
        p.a.send(p.now, &frame(1, b"")),
        Err(SessionError::NotRunning)
    );
    p.a.reset();
    assert_eq!(p.a.unacked().count(), 0);
    assert_eq!(p.a.outcome(), Outcome::NotStarted);
}

#[test]
fn a_restarted_peer_answers_reset_and_the_session_dies() {
    let mut p = Pair::new();
    p.a.send(p.now, &frame(1, b"")).unwrap();
    p.a.transport_lost(p.now);
    p.a.transport_connected(p.now);
    p.dec_at_b.reset();
    let resume = p.xmit(true);
    // The peer restarted: no session. Its link layer answers statelessly.
    let mut out = [0u8; 64];
    let n = stateless_reset(&DefaultCrc::default(), &resume[0].repr(), 0, &mut out).unwrap();
    assert_eq!(p.a.on_frame_parts(p.now, &out[..n], &[]), Verdict::Control);
    assert_eq!(p.a.outcome(), Outcome::Died(DeathReason::PeerReset));
    assert_eq!(p.a.unacked().count(), 1);
    // A session with other identities answers a RESUME with RESET too.
    let mut other = S::new(cfg(), DefaultCrc::default());
    other.start(p.now, 0x77, 0x78).unwrap();
    other.transport_connected(p.now);
    assert_eq!(
        other.on_frame_parts(p.now, &resume[0].ext, &[]),
        Verdict::Control
    );
    let mut buf = [0u8; 64];
    assert_eq!(other.poll_transmit(p.now, &mut buf), 64);
    let h = HeaderRepr::parse(&Header::new_checked(&buf[..]).unwrap());
    let c = ControlFrame::parse(&h).unwrap().unwrap();
    assert_eq!(
        (c.op, c.sender_id, c.receiver_id),
        (ControlOp::Reset, 0xB, 0xA)
    );
    assert_eq!(other.outcome(), Outcome::Running);
}

#[test]
fn abort_tells_the_peer() {
    let mut p = Pair::new();
    p.a.abort(p.now);
    assert_eq!(p.a.outcome(), Outcome::Died(DeathReason::Aborted));
    let f = p.xmit(true);
    assert_eq!(f[0].control().unwrap().op, ControlOp::Reset);
    p.feed(true, &f);
    assert_eq!(p.b.outcome(), Outcome::Died(DeathReason::PeerReset));
}

#[test]
fn frames_after_death_or_while_down_are_dropped() {
    let mut p = Pair::new();
    p.a.send(p.now, &frame(1, b"")).unwrap();
    let f = p.xmit(true);
    p.b.transport_lost(p.now);
    assert_eq!(
        p.feed(true, &f),
        [Verdict::Dropped(DropReason::TransportDown)]
    );
    p.b.abort(p.now);
    assert_eq!(p.feed(true, &f), [Verdict::Dropped(DropReason::NotRunning)]);
    assert_eq!(
        p.a.on_frame_parts(p.now, &[0u8; 10], &[]),
        Verdict::Dropped(DropReason::Malformed)
    );
    let plain = frame(3, b"");
    assert_eq!(
        p.a.on_frame_parts(p.now, &plain, &[]),
        Verdict::Dropped(DropReason::Unsequenced)
    );
}

#[test]
fn handle_timeout_is_idempotent_and_early_calls_do_nothing() {
    let mut p = Pair::new();
    p.a.send(p.now, &frame(1, b"")).unwrap();
    let _ = p.xmit(true);
    let before = p.a.clone();
    p.a.handle_timeout(p.now);
    p.a.handle_timeout(p.now + Duration::from_millis(50));
    assert_eq!(p.a, before);
    let t = p.a.poll_timeout().unwrap();
    p.a.handle_timeout(t);
    let once = p.a.clone();
    p.a.handle_timeout(t);
    assert_eq!(p.a, once);
}

#[test]
fn sequence_numbers_wrap_past_u32_max_skipping_zero() {
    let mut p = Pair::with_ids(0x1_FFFF_FFFE, 0x2_FFFF_FFFD);
    let mut seqs = Vec::new();
    for round in 0..3 {
        for i in 0..3 {
            seqs.push(p.a.send(p.now, &frame(round * 3 + i, b"w")).unwrap().get());
            p.b.send(p.now, &frame(100 + round * 3 + i, b"")).unwrap();
        }
        p.settle();
    }
    assert_eq!(seqs, [u32::MAX - 1, u32::MAX, 1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(p.got_b, (0..9).collect::<Vec<_>>());
    assert_eq!(p.got_a, (100..109).collect::<Vec<_>>());
}

#[test]
fn memory_of_small_configurations_stays_small() {
    type Mcu = McuSession<crate::crc::SoftCrc32c1>;
    type Mcu2 = Session<crate::crc::SoftCrc32c1, 8, 2048, 2, 1024>;
    std::println!(
        "McuSession = {} B, 8/2KiB+2/1KiB = {} B, DefaultSession = {} B",
        Mcu::MEMORY,
        Mcu2::MEMORY,
        DefaultSession::<DefaultCrc>::MEMORY
    );
    // Fixed part: timers, counters, the control-frame buffer, the event queue.
    let fixed = 640;
    assert!(Mcu::MEMORY <= 2048 + 16 * 8 + fixed, "{}", Mcu::MEMORY);
    assert!(
        Mcu2::MEMORY <= 2048 + 16 * 8 + 1024 + 20 * 2 + fixed,
        "{}",
        Mcu2::MEMORY
    );
    assert!(DefaultSession::<DefaultCrc>::MEMORY <= 8192 + 16 * 16 + 2048 + 20 * 4 + fixed);
}

#[test]
fn unsealed_frames_are_sealed_when_sent() {
    let mut p = Pair::new();
    let h = HeaderRepr::new(Cmd::new(Command::DbgShell, Flags::empty()), MsgId(42));
    let mut buf = [0u8; 128];
    let n = Encoder::new(5)
        .encode_unsealed(&DefaultCrc::default(), &h, &Body::None, b"hi", &mut buf)
        .unwrap();
    assert_eq!(&buf[0x3C..0x40], &[0u8; 4]);
    p.a.send(p.now, &buf[..n]).unwrap();
    let f = p.xmit(true); // the decoder checks the header CRC
    assert_eq!(p.feed(true, &f), [Verdict::Deliver]);
    assert_eq!(p.got_b, [42]);
}

#[test]
fn send_with_encodes_into_the_window_and_keeps_the_reserve() {
    let mut p = Pair::new();
    let crc = DefaultCrc::default();
    let mut enc = Encoder::new(9);
    let h = HeaderRepr::new(Cmd::new(Command::DbgShell, Flags::empty()), MsgId(7));
    let keep = Reserve {
        frames: 2,
        bytes: 128,
    };
    let seq =
        p.a.send_with(p.now, 128, keep, |buf| {
            enc.encode_unsealed(&crc, &h, &Body::None, b"direct", buf)
        })
        .unwrap();
    assert_eq!(seq, p.a.next_seq().add(u32::MAX - 1));
    // 8 slots: one for the FIN, two kept: five frames with this reserve.
    for _ in 0..4 {
        assert!(p.a.can_send_with(64, keep));
        p.a.send_with(p.now, 64, keep, |buf| {
            enc.encode_unsealed(&crc, &h, &Body::None, &[], buf)
        })
        .unwrap();
    }
    assert!(!p.a.can_send_with(64, keep));
    assert_eq!(p.a.send_room(keep), 0);
    assert_eq!(
        p.a.send_with(p.now, 64, keep, |_| unreachable!()),
        Err(SessionError::WindowFull)
    );
    // The reserve itself is for frames sent without one.
    assert!(p.a.can_send_many(2, 64));
    assert!(!p.a.can_send_many(3, 64));
    // A writer that fails or writes something else stores nothing.
    let mut s = S::new(cfg(), crc);
    s.start(p.now, 1, 2).unwrap();
    assert_eq!(
        s.send_with(p.now, 64, Reserve::NONE, |_| Err(
            crate::encode::EncodeError::BodyMismatch
        )),
        Err(SessionError::Encode(
            crate::encode::EncodeError::BodyMismatch
        ))
    );
    assert_eq!(
        s.send_with(p.now, 128, Reserve::NONE, |buf| {
            enc.encode_unsealed(&crc, &h, &Body::None, &[], buf)
        }),
        Err(SessionError::BadFrame)
    );
    assert_eq!(
        s.send_with(p.now, 4096, keep, |_| unreachable!()),
        Err(SessionError::FrameTooLarge {
            len: 4096,
            capacity: 4096 - 128
        })
    );
    assert_eq!(s.in_flight(), 0);
    assert!(!s.wants_transmit());
    // The frames written in place arrive intact.
    assert!(p.a.wants_transmit());
    assert_eq!(p.a.pending_bytes(), 128 + 4 * 64);
    let f = p.xmit(true);
    assert_eq!(p.feed(true, &f), [Verdict::Deliver; 5]);
    assert_eq!(f[0].aux, b"direct");
    assert_eq!(p.a.pending_bytes(), 0);
}

#[test]
fn a_busy_receiver_refuses_in_order_frames_but_takes_acks() {
    let mut p = Pair::new();
    p.a.send(p.now, &frame(1, b"one")).unwrap();
    p.a.send(p.now, &frame(2, b"two")).unwrap();
    p.b.send(p.now, &frame(9, b"b")).unwrap();
    let fa = p.xmit(true);
    let fb = p.xmit(false);
    // A is busy: B's data frame is refused, but its ack of nothing yet is processed...
    assert_eq!(
        p.a.on_frame_parts_busy(p.now, &fb[0].ext, &fb[0].aux),
        Verdict::Dropped(DropReason::Busy)
    );
    assert_eq!(p.a.stats().busy_refused, 1);
    assert!(p.a.wants_transmit(), "an ack goes out at once");
    // ...and B takes A's frames normally; its acks reach a busy A.
    assert_eq!(p.feed(true, &fa), [Verdict::Deliver; 2]);
    p.now = p.now + Duration::from_millis(25);
    p.b.handle_timeout(p.now);
    let acks = p.xmit(false);
    for f in &acks {
        let _ = p.a.on_frame_parts_busy(p.now, &f.ext, &f.aux);
    }
    assert_eq!(p.a.in_flight(), 0, "acks processed while busy");
    // B resends the refused frame; A, no longer busy, delivers it once.
    p.settle();
    assert_eq!(p.got_a, [9]);
    assert_eq!(p.got_b, [1, 2]);
}
