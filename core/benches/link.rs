//! Frames per second through two back-to-back `link::Connection`s, reliable session on versus
//! off.
//!
//! A sends one-way DBG_SHELL messages (and, in the `txn` variant, frames of one long
//! transaction) to B through the whole link: commands, `poll_transmit`, `handle_input`,
//! `poll_event` at B, and B's answers (the session's acks) back to A. Off: plain DMSG
//! (a session-capable connection with the session not configured, which is byte for byte a
//! plain one). On: both offer the session; every frame is encoded straight into the
//! retransmit window, stamped when sent, sequenced and acknowledged. After criterion's runs, a
//! plain timing loop prints the throughput ratio (on / off).
//!
//! `cargo bench -p dmsg-core --bench link`

use std::hint::black_box;
use std::time::Instant as WallClock;

use criterion::{Criterion, Throughput};
use dmsg_core::link::{Event, LinkConfig, Outgoing, ReliableConnection, SessionOffer, Side, TxnId};
use dmsg_core::time::{Duration, Instant};
use dmsg_core::wire::{Command, Flags};

/// 4 KiB aux, 32 KiB output queue, 8 transactions; 128 frames in 32 KiB of window.
type Link = ReliableConnection<{ 8 * 64 + 4096 }, 4096, 32768, 8, 128, 32768>;

struct Pair {
    a: Box<Link>,
    b: Box<Link>,
    wire: Vec<u8>,
    now: Instant,
    txn: Option<TxnId>,
    session: bool,
}

impl Pair {
    fn new(session: bool, txn: bool) -> Pair {
        let cfg = |id: u64| LinkConfig {
            session: session.then_some(SessionOffer::new(id)),
            salt_seed: id as u32,
            ..LinkConfig::default()
        };
        let now = Instant::ZERO;
        let mut p = Pair {
            a: Box::new(Link::new(now, &cfg(0xA), Default::default()).unwrap()),
            b: Box::new(Link::new(now, &cfg(0xB), Default::default()).unwrap()),
            wire: vec![0u8; 64 * 1024],
            now,
            txn: None,
            session,
        };
        for _ in 0..4 {
            p.a_to_b();
            p.b_to_a();
        }
        assert_eq!(p.a.session_running(), session);
        if txn {
            let t =
                p.a.open(now, &Outgoing::new(Command::DbgShell), Flags::empty(), None)
                    .unwrap();
            p.a_to_b();
            p.txn = Some(t);
        }
        p
    }

    /// Everything A has to send goes to B; B's events are drained. Returns aux bytes seen.
    fn a_to_b(&mut self) -> u64 {
        let mut got = 0;
        loop {
            let n = self.a.poll_transmit(self.now, &mut self.wire);
            if n == 0 {
                break;
            }
            let mut input = &self.wire[..n];
            while !input.is_empty() {
                let used = self.b.handle_input(self.now, input);
                input = &input[used..];
                while let Some(ev) = self.b.poll_event() {
                    match ev {
                        Event::OneWay { msg } | Event::Message { msg, .. } => {
                            got += msg.aux.len() as u64 + 1
                        }
                        Event::Opened { msg, .. } => got += msg.aux.len() as u64 + 1,
                        _ => {}
                    }
                }
                // B's answers (PING replies, LNK_CONN answers) travel with the acks.
            }
        }
        got
    }

    fn b_to_a(&mut self) {
        loop {
            let n = self.b.poll_transmit(self.now, &mut self.wire);
            if n == 0 {
                break;
            }
            let mut input = &self.wire[..n];
            while !input.is_empty() {
                let used = self.a.handle_input(self.now, input);
                input = &input[used..];
                while self.a.poll_event().is_some() {}
            }
        }
    }

    /// Sends `n` frames with `aux` from A to B, window by window.
    fn run(&mut self, n: u64, aux: &[u8]) -> u64 {
        let msg = Outgoing::new(Command::DbgShell).with_aux(aux);
        let mut got = 0;
        let mut i = 0;
        while i < n {
            while i < n {
                let r = match self.txn {
                    Some(t) => self.a.send(self.now, t, &msg, Flags::empty()),
                    None => self.a.send_one_way(self.now, &msg, false, None),
                };
                if r.is_err() {
                    break;
                }
                i += 1;
            }
            got += self.a_to_b();
            if self.session {
                // B's delayed ack fires and frees A's window.
                self.now = self.now + Duration::from_millis(20);
                self.b.handle_timeout(self.now);
                self.b_to_a();
                debug_assert_eq!(self.a.session().in_flight(), 0);
            }
        }
        debug_assert_eq!(
            self.a.open_transactions(Side::Ours),
            self.txn.is_some() as usize
        );
        got
    }
}

const BATCH: u64 = 256;
const AUX_SIZES: [usize; 3] = [0, 256, 1024];

fn bench(c: &mut Criterion) {
    for aux_len in AUX_SIZES {
        let aux = vec![0x5Au8; aux_len];
        let mut g = c.benchmark_group(format!("link_aux{aux_len}"));
        g.throughput(Throughput::Elements(BATCH));
        for (name, session, txn) in [
            ("one_way_plain", false, false),
            ("one_way_session", true, false),
            ("txn_plain", false, true),
            ("txn_session", true, true),
        ] {
            let mut p = Pair::new(session, txn);
            g.bench_function(name, |b| b.iter(|| black_box(p.run(BATCH, &aux))));
        }
        g.finish();
    }
}

/// Frames per second of each of `fs`, measured in alternation (10 rounds of about 50 ms
/// each) and keeping each one's best round, so load on the machine hits all alike.
fn rates<const N: usize>(fs: &mut [&mut dyn FnMut(u64) -> u64; N]) -> [f64; N] {
    let mut best = [0f64; N];
    for _ in 0..10 {
        for (k, f) in fs.iter_mut().enumerate() {
            let mut frames = 0u64;
            let t0 = WallClock::now();
            while t0.elapsed().as_millis() < 50 {
                black_box(f(BATCH));
                frames += BATCH;
            }
            best[k] = best[k].max(frames as f64 / t0.elapsed().as_secs_f64());
        }
    }
    best
}

fn report() {
    println!();
    println!("link with session / without (frames/s, best of 10 interleaved rounds):");
    for aux_len in AUX_SIZES {
        let aux = vec![0x5Au8; aux_len];
        let mut off = Pair::new(false, false);
        let mut on = Pair::new(true, false);
        let mut toff = Pair::new(false, true);
        let mut ton = Pair::new(true, true);
        let [p, s, tp, ts] = rates(&mut [
            &mut |n| off.run(n, &aux),
            &mut |n| on.run(n, &aux),
            &mut |n| toff.run(n, &aux),
            &mut |n| ton.run(n, &aux),
        ]);
        println!(
            "  aux {aux_len:>4} B: one-way off {p:>9.0}/s on {s:>9.0}/s ratio {:.2}   \
             in a transaction off {tp:>9.0}/s on {ts:>9.0}/s ratio {:.2}",
            s / p,
            ts / tp
        );
    }
    println!(
        "size: {} B with the session storage ({} B of it the session)",
        core::mem::size_of::<Link>(),
        core::mem::size_of::<
            dmsg_core::session::Session<dmsg_core::crc::DefaultCrc, 128, 32768, 0, 0>,
        >()
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    report();
}
