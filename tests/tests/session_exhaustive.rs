//! Exhaustive breadth-first exploration of two sessions: the FIN handshake, and resume after a
//! disconnect, for small configurations.
//!
//! A world is both sessions (plain data), the frames in flight each way (FIFO, like TCP), the
//! virtual clock and what each application sent and received. From every world every step is
//! tried: either application sends its next message or closes, the head frame of either direction is delivered or lost, the earliest timer fires, the
//! transport drops (all in-flight frames lost) or comes back. Losses, timer firings and
//! disconnects are bounded, so the space is finite. After every step both sides' output is
//! drained into the channels, as the drive contract requires of a driver. Checked:
//! - safety, on every step: no message delivered twice or out of order, nothing accepted after
//!   close, every frame written is a valid frame (CRC) with the right salt counter;
//! - liveness: from **every** reachable world a terminal world (both sessions CLOSED) is
//!   reachable; the witness is a fair loss-free schedule, and when neither side died on the way
//!   both must close cleanly with every message delivered.
//!
//! The default bounds keep a debug run to a few seconds; `EXH_LOSSES=n`, `EXH_TIMEOUTS=n` raise
//! them (use `--release`), `EXH_MAX=n` caps the number of states.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};

use dmsg_core::crc::DefaultCrc;
use dmsg_core::decode::{Decoder, DecoderConfig};
use dmsg_core::encode::Encoder;
use dmsg_core::session::{Outcome, Session, SessionConfig, SessionError, Verdict};
use dmsg_core::time::{Duration, Instant};
use dmsg_core::wire::{Body, Cmd, Command, Flags, Header, HeaderRepr, MsgId};

/// Room for two 64-byte messages and the FIN, and one held frame.
type S = Session<DefaultCrc, 3, 128, 1, 64>;

fn config() -> SessionConfig {
    SessionConfig {
        grace: Duration::from_millis(2_000),
        delayed_ack: Duration::from_millis(20),
        rto_initial: Duration::from_millis(100),
        rto_max: Duration::from_millis(400),
        dup_ack_threshold: 2,
        close_timeout: Duration::from_millis(3_000),
        time_wait: Duration::from_millis(300),
        salt_seed: 3,
    }
}

fn msg(msgid: u64) -> [u8; 64] {
    let mut out = [0u8; 64];
    let h = HeaderRepr::new(Cmd::new(Command::DbgShell, Flags::empty()), MsgId(msgid));
    Encoder::new(msgid as u32)
        .encode(&DefaultCrc::default(), &h, &Body::None, &[], &mut out)
        .unwrap();
    out
}

/// Bounds of one exploration.
#[derive(Clone, Copy, Debug)]
struct Bounds {
    msgs: [u8; 2],
    losses: u8,
    timeouts: u8,
    disconnects: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct World {
    s: [S; 2],
    /// Frames in flight towards end 0 and end 1.
    chan: [VecDeque<[u8; 64]>; 2],
    now: Instant,
    link_up: bool,
    sent: [u8; 2],
    closed: [bool; 2],
    delivered: [Vec<u64>; 2],
    /// Salt counter each end must use next on the current transport.
    salt_next: [u8; 2],
    losses_left: u8,
    timeouts_left: u8,
    disconnects_left: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    App(usize),
    Deliver(usize),
    Lose(usize),
    Timeout,
    Disconnect,
    Reconnect,
}

const STEPS: [Step; 9] = [
    Step::App(0),
    Step::App(1),
    Step::Deliver(0),
    Step::Deliver(1),
    Step::Lose(0),
    Step::Lose(1),
    Step::Timeout,
    Step::Disconnect,
    Step::Reconnect,
];

fn msgid(end: usize, k: u8) -> u64 {
    (end as u64 + 1) * 100 + k as u64
}

impl World {
    fn new(b: Bounds) -> World {
        let mut s = [
            S::new(config(), DefaultCrc::default()),
            S::new(config(), DefaultCrc::default()),
        ];
        s[0].start(Instant::ZERO, 0xA, 0xB).unwrap();
        s[1].start(Instant::ZERO, 0xB, 0xA).unwrap();
        World {
            s,
            chan: [VecDeque::new(), VecDeque::new()],
            now: Instant::ZERO,
            link_up: true,
            sent: [0, 0],
            closed: [false, false],
            delivered: [Vec::new(), Vec::new()],
            salt_next: [1, 1], // each LNK_CONN was frame 0
            losses_left: b.losses,
            timeouts_left: b.timeouts,
            disconnects_left: b.disconnects,
        }
    }

    fn terminal(&self) -> bool {
        self.s.iter().all(|s| s.outcome() != Outcome::Running)
    }

    fn drain_events(&mut self) {
        for s in &mut self.s {
            while s.poll_event().is_some() {}
        }
    }

    /// Applies `step`; `Ok(false)` when it is not enabled, `Err` when a safety property fails.
    fn step(&mut self, step: Step, b: Bounds, budgeted: bool) -> Result<bool, String> {
        let now = self.now;
        let did = match step {
            Step::App(i) => {
                if self.sent[i] < b.msgs[i] {
                    match self.s[i].send(now, &msg(msgid(i, self.sent[i]))) {
                        Ok(_) => {
                            self.sent[i] += 1;
                            true
                        }
                        Err(SessionError::WindowFull) => false,
                        Err(SessionError::Closing | SessionError::NotRunning) => false,
                        Err(e) => return Err(format!("send: {e:?}")),
                    }
                } else if !self.closed[i] && self.s[i].state().can_send() {
                    self.s[i].close(now).map_err(|e| format!("close: {e:?}"))?;
                    self.closed[i] = true;
                    if self.s[i].send(now, &msg(999)) != Err(SessionError::Closing) {
                        return Err(format!("end {i} accepted a frame after close"));
                    }
                    true
                } else {
                    false
                }
            }
            Step::Deliver(i) => match self.chan[i].pop_front() {
                None => false,
                Some(f) => {
                    let v = self.s[i].on_frame_parts(now, &f, &[]);
                    if v == Verdict::Deliver {
                        let h = HeaderRepr::parse(&Header::new_checked(&f[..]).unwrap());
                        self.record(i, h.msgid.0)?;
                        while let Some(held) = self.s[i].poll_deliver(now) {
                            let id = held.repr().msgid.0;
                            self.record(i, id)?;
                        }
                    }
                    true
                }
            },
            Step::Lose(i) => {
                if (budgeted && self.losses_left == 0) || self.chan[i].is_empty() {
                    false
                } else {
                    self.chan[i].pop_front();
                    self.losses_left -= 1;
                    true
                }
            }
            Step::Timeout => {
                let next = self.s.iter().filter_map(|s| s.poll_timeout()).min();
                match next {
                    Some(t) if !budgeted || self.timeouts_left > 0 => {
                        if budgeted {
                            self.timeouts_left -= 1;
                        }
                        self.now = self.now.max(t);
                        for s in &mut self.s {
                            s.handle_timeout(self.now);
                        }
                        true
                    }
                    _ => false,
                }
            }
            Step::Disconnect => {
                if !self.link_up || self.disconnects_left == 0 {
                    false
                } else {
                    self.disconnects_left -= 1;
                    self.link_up = false;
                    self.chan = [VecDeque::new(), VecDeque::new()];
                    for s in &mut self.s {
                        s.transport_lost(now);
                    }
                    true
                }
            }
            Step::Reconnect => {
                if self.link_up {
                    false
                } else {
                    self.link_up = true;
                    self.salt_next = [0, 0];
                    for s in &mut self.s {
                        s.transport_connected(now);
                    }
                    true
                }
            }
        };
        // The drive contract: after every input, drain `poll_transmit` and `poll_event`.
        if did {
            for i in 0..2 {
                while self.transmit_one(i)? {}
            }
        }
        self.drain_events();
        Ok(did)
    }

    /// Moves one frame from end `i`'s `poll_transmit` into the channel; false if none.
    fn transmit_one(&mut self, i: usize) -> Result<bool, String> {
        let mut out = [0u8; 64];
        let n = self.s[i].poll_transmit(self.now, &mut out);
        if n == 0 {
            return Ok(false);
        }
        if n != 64 {
            return Err(format!("a frame of {n} bytes"));
        }
        let cfg = DecoderConfig {
            max_aux_bytes: 0,
            max_header_blocks: 1,
            check_sequence: false,
        };
        let mut d = Decoder::new([0u8; 64], cfg, DefaultCrc::default()).unwrap();
        let f = d.decode(&out).map_err(|e| format!("bad frame: {e}"))?;
        let salt = f.frame.expect("whole frame").repr().salt;
        if salt & 0xFF != self.salt_next[i] as u32 {
            return Err(format!(
                "end {i} salt counter {} where {} was due",
                salt & 0xFF,
                self.salt_next[i]
            ));
        }
        self.salt_next[i] = self.salt_next[i].wrapping_add(1);
        if self.link_up {
            self.chan[1 - i].push_back(out);
        }
        Ok(true)
    }

    /// Records a delivery at end `i`: it must be the next message end `1 - i` sent.
    fn record(&mut self, i: usize, id: u64) -> Result<(), String> {
        let k = self.delivered[i].len() as u8;
        if id != msgid(1 - i, k) || k >= self.sent[1 - i] {
            return Err(format!(
                "end {i} delivered {id} after {:?} (peer sent {})",
                self.delivered[i],
                self.sent[1 - i]
            ));
        }
        self.delivered[i].push(id);
        Ok(())
    }

    /// A fair schedule without losses or disconnects, until both sessions are CLOSED.
    fn witness(mut self, b: Bounds) -> Result<(), String> {
        for _ in 0..5_000 {
            if self.terminal() {
                let died = self
                    .s
                    .iter()
                    .any(|s| matches!(s.outcome(), Outcome::Died(_)));
                if !died {
                    for i in 0..2 {
                        if self.delivered[i].len() != b.msgs[1 - i] as usize
                            || self.s[i].outcome() != Outcome::ClosedCleanly
                        {
                            return Err(format!("clean end without all data: {self:?}"));
                        }
                    }
                }
                return Ok(());
            }
            let mut moved = false;
            for st in [
                Step::Reconnect,
                Step::App(0),
                Step::App(1),
                Step::Deliver(0),
                Step::Deliver(1),
            ] {
                moved |= self.step(st, b, false)?;
            }
            if !moved && !self.step(Step::Timeout, b, false)? {
                return Err(format!("stuck: no step and no timer: {self:?}"));
            }
        }
        Err("no terminal state within 5000 rounds".into())
    }
}

/// Hash of a world, with the random upper salt bits and the CRC of frames in flight masked
/// (they never influence behaviour).
fn fingerprint(w: &World) -> u64 {
    let mut h = DefaultHasher::new();
    let World {
        s,
        chan,
        now,
        link_up,
        sent,
        closed,
        delivered,
        salt_next,
        losses_left,
        timeouts_left,
        disconnects_left,
    } = w;
    (s, now, link_up, sent, closed, delivered, salt_next).hash(&mut h);
    (losses_left, timeouts_left, disconnects_left).hash(&mut h);
    for c in chan {
        c.len().hash(&mut h);
        for f in c {
            let mut m = *f;
            m[5..8].fill(0);
            m[0x3C..0x40].fill(0);
            m.hash(&mut h);
        }
    }
    h.finish()
}

struct Report {
    states: usize,
    transitions: usize,
    terminal: usize,
    depth: usize,
}

fn explore(name: &str, mut b: Bounds) -> Report {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u8>().ok());
    if let Some(v) = env("EXH_LOSSES") {
        b.losses = v;
    }
    if let Some(v) = env("EXH_TIMEOUTS") {
        b.timeouts = v;
    }
    let start = World::new(b);
    let max_states: usize = std::env::var("EXH_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    let mut seen = HashSet::new();
    seen.insert(fingerprint(&start));
    let mut frontier = VecDeque::from([(start, 0usize)]);
    let mut r = Report {
        states: 0,
        transitions: 0,
        terminal: 0,
        depth: 0,
    };
    while let Some((w, depth)) = frontier.pop_front() {
        r.states += 1;
        if r.states > max_states {
            panic!("{name}: more than {max_states} states");
        }
        if r.states % 250_000 == 0 {
            println!("{name}: {} states so far, depth {depth}", r.states);
        }
        r.depth = r.depth.max(depth);
        if w.terminal() {
            r.terminal += 1;
        }
        if let Err(e) = w.clone().witness(b) {
            panic!("{name}: from a reachable state no terminal state: {e}");
        }
        for st in STEPS {
            let mut next = w.clone();
            match next.step(st, b, true) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(e) => panic!("{name}: safety violated by {st:?} at depth {depth}: {e}\n{w:?}"),
            }
            r.transitions += 1;
            if seen.insert(fingerprint(&next)) {
                frontier.push_back((next, depth + 1));
            }
        }
    }
    println!(
        "{name}: {} states, {} transitions, {} terminal, depth {} ({b:?})",
        r.states, r.transitions, r.terminal, r.depth
    );
    r
}

#[test]
fn fin_handshake_every_interleaving_closes_both_sides_without_duplicates() {
    let r = explore(
        "fin",
        Bounds {
            msgs: [1, 1],
            losses: 2,
            timeouts: 1,
            disconnects: 0,
        },
    );
    assert!(r.states > 1_000 && r.terminal > 0);
}

#[test]
fn resume_every_interleaving_with_a_disconnect_delivers_exactly_once_or_dies() {
    let r = explore(
        "resume",
        Bounds {
            msgs: [1, 0],
            losses: 1,
            timeouts: 1,
            disconnects: 1,
        },
    );
    assert!(r.states > 1_000 && r.terminal > 0);
}
