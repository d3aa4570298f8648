//! Frames per second through the session layer versus plain encode/decode.
//!
//! Plain: `Encoder::encode` -> `Decoder::decode`, per frame.
//! Session: `Encoder::encode_unsealed` (the session computes the header CRC when it sends)
//! straight into the retransmit window with `Session::send_with` -> `poll_transmit` ->
//! `Decoder::decode` -> `Session::on_frame` at the peer, and the peer's ACK back (one per
//! window) through the same path. Two older variants encode into a buffer first and copy it
//! in with `Session::send` (unsealed, and sealed: a wasted header CRC). After criterion's
//! runs, a plain timing loop prints the throughput ratios (session / plain) and the memory of
//! one session.
//!
//! `cargo bench -p dmsg-core --bench session`

use std::hint::black_box;
use std::time::Instant as WallClock;

use criterion::{Criterion, Throughput};
use dmsg_core::crc::DefaultCrc;
use dmsg_core::decode::{Decoder, DecoderConfig};
use dmsg_core::encode::Encoder;
use dmsg_core::session::{DefaultSession, McuSession, Reserve, SessionConfig, Verdict};
use dmsg_core::time::{Duration, Instant};
use dmsg_core::wire::{Body, Cmd, Command, Flags, HeaderRepr, MsgId};

const DEC: DecoderConfig = DecoderConfig {
    max_aux_bytes: 2048,
    max_header_blocks: 8,
    check_sequence: true,
};

type Sess = DefaultSession<DefaultCrc>;

fn header(i: u64) -> HeaderRepr {
    HeaderRepr::new(Cmd::new(Command::DbgShell, Flags::empty()), MsgId(i))
}

/// Plain codec: encode and decode `n` frames.
struct Plain {
    enc: Encoder,
    dec: Decoder<Vec<u8>, DefaultCrc>,
    buf: Vec<u8>,
}

impl Plain {
    fn new() -> Plain {
        Plain {
            enc: Encoder::new(1),
            dec: Decoder::new(vec![0u8; DEC.storage_len()], DEC, DefaultCrc::default()).unwrap(),
            buf: vec![0u8; 4096],
        }
    }

    fn run(&mut self, n: u64, aux: &[u8]) -> u64 {
        let crc = DefaultCrc::default();
        let mut got = 0;
        for i in 0..n {
            let len = self
                .enc
                .encode(&crc, &header(i), &Body::None, aux, &mut self.buf)
                .unwrap();
            let out = self.dec.decode(&self.buf[..len]).unwrap();
            got += out.frame.map_or(0, |f| f.aux().len() as u64 + 1);
        }
        got
    }
}

/// How A's frames get into its session.
#[derive(Clone, Copy)]
enum Feed {
    /// `send_with`: encoded (unsealed) straight into the window.
    Direct,
    /// `encode_unsealed` into a buffer, then `send` copies it.
    Copy,
    /// `encode` (with a header CRC the session recomputes) into a buffer, then `send`.
    Sealed,
}

/// Two sessions and a decoder each way.
struct Pair {
    a: Sess,
    b: Sess,
    enc: Encoder,
    dec_b: Decoder<Vec<u8>, DefaultCrc>,
    dec_a: Decoder<Vec<u8>, DefaultCrc>,
    frame: Vec<u8>,
    wire: Vec<u8>,
    now: Instant,
    feed: Feed,
}

impl Pair {
    fn new(feed: Feed) -> Pair {
        let crc = DefaultCrc::default();
        let mut a = Sess::new(SessionConfig::default(), crc);
        let mut b = Sess::new(SessionConfig::default(), crc);
        a.start(Instant::ZERO, 0xA, 0xB).unwrap();
        b.start(Instant::ZERO, 0xB, 0xA).unwrap();
        let mut dec_b = Decoder::new(vec![0u8; DEC.storage_len()], DEC, crc).unwrap();
        let mut dec_a = Decoder::new(vec![0u8; DEC.storage_len()], DEC, crc).unwrap();
        // Both decoders saw a LNK_CONN first (salt counter 0).
        let mut conn = [0u8; 64];
        Encoder::new(9)
            .encode(&crc, &header(0), &Body::None, &[], &mut conn)
            .unwrap();
        assert!(dec_b.decode(&conn).unwrap().frame.is_some());
        assert!(dec_a.decode(&conn).unwrap().frame.is_some());
        Pair {
            a,
            b,
            enc: Encoder::new(1),
            dec_b,
            dec_a,
            frame: vec![0u8; 4096],
            wire: vec![0u8; 16 * 1024],
            now: Instant::ZERO,
            feed,
        }
    }

    /// Sends `n` frames from A to B, window by window, with B's ACKs flowing back.
    fn run(&mut self, n: u64, aux: &[u8]) -> u64 {
        let crc = DefaultCrc::default();
        let mut got = 0;
        let mut i = 0;
        while i < n {
            // Fill the window.
            while i < n {
                let h = header(i);
                let sent = match self.feed {
                    Feed::Direct => {
                        let enc = &mut self.enc;
                        let len = h.header_len() + dmsg_core::wire::align64(aux.len());
                        self.a
                            .send_with(self.now, len, Reserve::NONE, |buf| {
                                enc.encode_unsealed(&crc, &h, &Body::None, aux, buf)
                            })
                            .is_ok()
                    }
                    Feed::Copy | Feed::Sealed => {
                        let len = if matches!(self.feed, Feed::Sealed) {
                            self.enc.encode(&crc, &h, &Body::None, aux, &mut self.frame)
                        } else {
                            // The session computes the header CRC when it sends: skip it here.
                            self.enc
                                .encode_unsealed(&crc, &h, &Body::None, aux, &mut self.frame)
                        }
                        .unwrap();
                        self.a.send(self.now, &self.frame[..len]).is_ok()
                    }
                };
                if !sent {
                    break;
                }
                i += 1;
            }
            // A -> B.
            let len = self.a.poll_transmit(self.now, &mut self.wire);
            let mut input = &self.wire[..len];
            while !input.is_empty() {
                let out = self.dec_b.decode(input).unwrap();
                input = &input[out.consumed..];
                if let Some(f) = out.frame {
                    if self.b.on_frame(self.now, &f) == Verdict::Deliver {
                        got += f.aux().len() as u64 + 1;
                    }
                }
            }
            // B's delayed ack fires; B -> A.
            self.now = self.now + Duration::from_millis(20);
            self.b.handle_timeout(self.now);
            let len = self.b.poll_transmit(self.now, &mut self.wire);
            let mut input = &self.wire[..len];
            while !input.is_empty() {
                let out = self.dec_a.decode(input).unwrap();
                input = &input[out.consumed..];
                if let Some(f) = out.frame {
                    let _ = self.a.on_frame(self.now, &f);
                }
            }
            assert_eq!(self.a.in_flight(), 0, "everything acknowledged");
        }
        got
    }
}

const BATCH: u64 = 256;
const AUX_SIZES: [usize; 3] = [0, 256, 1024];

fn bench(c: &mut Criterion) {
    for aux_len in AUX_SIZES {
        let aux = vec![0x5Au8; aux_len];
        let mut g = c.benchmark_group(format!("frames_aux{aux_len}"));
        g.throughput(Throughput::Elements(BATCH));
        let mut plain = Plain::new();
        g.bench_function("plain_encode_decode", |b| {
            b.iter(|| black_box(plain.run(BATCH, &aux)))
        });
        let mut pair = Pair::new(Feed::Direct);
        g.bench_function("session_send_with_transmit_decode_ack", |b| {
            b.iter(|| black_box(pair.run(BATCH, &aux)))
        });
        let mut pair = Pair::new(Feed::Copy);
        g.bench_function("session_send_transmit_decode_ack", |b| {
            b.iter(|| black_box(pair.run(BATCH, &aux)))
        });
        let mut pair = Pair::new(Feed::Sealed);
        g.bench_function("session_sealed_encode", |b| {
            b.iter(|| black_box(pair.run(BATCH, &aux)))
        });
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
    println!("session / plain throughput (frames/s, best of 10 interleaved rounds):");
    for aux_len in AUX_SIZES {
        let aux = vec![0x5Au8; aux_len];
        let mut plain = Plain::new();
        let mut direct = Pair::new(Feed::Direct);
        let mut copy = Pair::new(Feed::Copy);
        let mut sealed = Pair::new(Feed::Sealed);
        let [p, d, s, s2] = rates(&mut [
            &mut |n| plain.run(n, &aux),
            &mut |n| direct.run(n, &aux),
            &mut |n| copy.run(n, &aux),
            &mut |n| sealed.run(n, &aux),
        ]);
        println!(
            "  aux {aux_len:>4} B: plain {p:>10.0}/s  send_with {d:>10.0}/s ratio {:.2}  \
             send (copy) {s:>10.0}/s ratio {:.2}  sealed+send {s2:>10.0}/s ratio {:.2}",
            d / p,
            s / p,
            s2 / p
        );
    }
    println!(
        "memory per session: DefaultSession (16 frames / 8 KiB window, 4 frames / 2 KiB reorder) = {} B, \
         McuSession (8 frames / 2 KiB, no reorder) = {} B",
        Sess::MEMORY,
        McuSession::<DefaultCrc>::MEMORY
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    report();
}
