//! The secure channel's cost: encrypted against plaintext throughput of 4 KiB frames, and
//! the handshake time.
//!
//! Workload: 16 BLK_WRITE frames with 4 KiB of aux each (about 66 KiB). Plaintext: the
//! stream goes straight into the frame decoder (what a link does today). Encrypted: the
//! sender's `SecureChannel` seals it into records, the receiver's opens them and hands the
//! plaintext to the same decoder. Handshake: both constructors, message 1, accept,
//! message 2, both sides established (two X25519 key generations and eight X25519 operations).
//!
//! `cargo bench -p dmsg-core --features secure --bench secure -- --warm-up-time 1 --measurement-time 2`
//!
//! After criterion's figures, `main` times both paths again interleaved in one run and
//! prints the throughput ratio (encrypted / plaintext), the record layer alone (seal + open,
//! no decoding) and the handshake time.

use std::hint::black_box;
use std::time::{Duration as WallDuration, Instant as WallClock};

use criterion::{Criterion, Throughput};
use dmsg_core::crc::SoftCrc32c16;
use dmsg_core::decode::{Decoder, DecoderConfig};
use dmsg_core::encode::Encoder;
use dmsg_core::secure::{Keypair, SecureChannel, SecureConfig};
use dmsg_core::time::Instant;
use dmsg_core::wire::body::BlkIoRepr;
use dmsg_core::wire::{Body, Cmd, Command, Flags, HeaderRepr, MsgId};
use rand_core::{CryptoRng, RngCore};

/// SplitMix64; a stand-in for the driver's OS RNG so runs are repeatable (bench only).
struct BenchRng(u64);

impl RngCore for BenchRng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

impl CryptoRng for BenchRng {}

type Dec = Decoder<Box<[u8]>, SoftCrc32c16>;

struct Bench {
    stream: Vec<u8>,
    frames: usize,
    dec: Dec,
    tx: Box<SecureChannel>,
    rx: Box<SecureChannel>,
    wire: Vec<u8>,
}

fn handshake(
    rng: &mut BenchRng,
    a: &Keypair,
    b: &Keypair,
) -> (Box<SecureChannel>, Box<SecureChannel>) {
    let now = Instant::ZERO;
    let cfg = SecureConfig::default();
    let mut i = Box::new(SecureChannel::initiator(cfg, a.clone(), b.public(), now, rng).unwrap());
    let mut r = Box::new(SecureChannel::responder(cfg, b.clone(), now, rng).unwrap());
    let mut buf = [0u8; 256];
    let n = i.poll_transmit(&mut buf).unwrap();
    r.handle_input(now, &buf[..n]).unwrap();
    r.accept(now).unwrap();
    let n = r.poll_transmit(&mut buf).unwrap();
    i.handle_input(now, &buf[..n]).unwrap();
    assert!(i.is_established() && r.is_established());
    (i, r)
}

impl Bench {
    fn new() -> Bench {
        let hdr = HeaderRepr::new(Cmd::new(Command::BlkWrite, Flags::empty()), MsgId(0x10));
        let body = Body::BlkIo(BlkIoRepr {
            keyid: 1,
            offset: 0,
            bytes: 4096,
            flags: 0,
        });
        let aux: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let frames = 16;
        let mut stream = vec![0u8; 1 << 20];
        let mut enc = Encoder::new(7);
        let mut at = 0;
        for _ in 0..frames {
            at += enc
                .encode(&SoftCrc32c16, &hdr, &body, &aux, &mut stream[at..])
                .unwrap();
        }
        stream.truncate(at);
        let config = DecoderConfig {
            max_aux_bytes: aux.len(),
            max_header_blocks: hdr.cmd.size_blocks(),
            check_sequence: false,
        };
        let dec = Decoder::new(
            vec![0u8; config.storage_len()].into_boxed_slice(),
            config,
            SoftCrc32c16,
        )
        .unwrap();
        let mut rng = BenchRng(1);
        let (a, b) = (Keypair::generate(&mut rng), Keypair::generate(&mut rng));
        let (tx, rx) = handshake(&mut rng, &a, &b);
        Bench {
            stream,
            frames,
            dec,
            tx,
            rx,
            wire: vec![0u8; 1 << 20],
        }
    }

    /// Socket bytes straight into the decoder; returns frames seen.
    fn plaintext(&mut self) -> usize {
        self.dec.reset();
        let mut input = &self.stream[..];
        let mut frames = 0;
        while !input.is_empty() {
            let out = self.dec.decode(input).unwrap();
            input = &input[out.consumed..];
            frames += usize::from(out.frame.is_some());
        }
        frames
    }

    /// Seal at the sender, open at the receiver, no decoding; returns plaintext bytes.
    fn records_only(&mut self) -> usize {
        let mut rest = &self.stream[..];
        let mut wlen = 0;
        while !rest.is_empty() {
            let n = self.tx.send(rest).unwrap();
            rest = &rest[n..];
            wlen += self.tx.poll_transmit(&mut self.wire[wlen..]).unwrap();
        }
        let mut input = &self.wire[..wlen];
        let mut got = 0;
        while !input.is_empty() {
            let n = self.rx.handle_input(Instant::ZERO, input).unwrap();
            input = &input[n..];
            got += self.rx.plaintext().len();
            self.rx.consume(usize::MAX);
        }
        got
    }

    /// Seal at the sender, open at the receiver, decode; returns frames seen.
    fn encrypted(&mut self) -> usize {
        let mut rest = &self.stream[..];
        let mut wlen = 0;
        while !rest.is_empty() {
            let n = self.tx.send(rest).unwrap();
            rest = &rest[n..];
            wlen += self.tx.poll_transmit(&mut self.wire[wlen..]).unwrap();
        }
        self.dec.reset();
        let mut input = &self.wire[..wlen];
        let mut frames = 0;
        loop {
            let n = self.rx.handle_input(Instant::ZERO, input).unwrap();
            input = &input[n..];
            let mut progressed = n > 0;
            while !self.rx.plaintext().is_empty() {
                let (consumed, got) = {
                    let out = self.dec.decode(self.rx.plaintext()).unwrap();
                    (out.consumed, out.frame.is_some())
                };
                self.rx.consume(consumed);
                frames += usize::from(got);
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        frames
    }
}

fn main() {
    let mut b = Bench::new();
    assert_eq!(b.plaintext(), b.frames);
    assert_eq!(b.encrypted(), b.frames);
    let bytes = b.stream.len() as u64;

    let mut c = Criterion::default().configure_from_args();
    {
        let mut g = c.benchmark_group("secure/4KiB-frames");
        g.throughput(Throughput::Bytes(bytes));
        g.bench_function("plaintext", |bn| bn.iter(|| black_box(b.plaintext())));
        g.bench_function("encrypted", |bn| bn.iter(|| black_box(b.encrypted())));
        g.bench_function("records-only", |bn| bn.iter(|| black_box(b.records_only())));
        g.finish();
    }
    let mut rng = BenchRng(2);
    let (ka, kb) = (Keypair::generate(&mut rng), Keypair::generate(&mut rng));
    c.bench_function("secure/handshake", |bn| {
        bn.iter(|| black_box(handshake(&mut rng, &ka, &kb)))
    });
    c.final_summary();

    // `cargo test --benches` runs each benchmark once without `--bench`; skip the summary.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    // Interleaved rounds in one run, so both paths see the same machine state.
    let (mut tp, mut te, mut tr) = (WallDuration::ZERO, WallDuration::ZERO, WallDuration::ZERO);
    for _ in 0..200 {
        let t = WallClock::now();
        black_box(b.plaintext());
        tp += t.elapsed();
        let t = WallClock::now();
        black_box(b.encrypted());
        te += t.elapsed();
        let t = WallClock::now();
        black_box(b.records_only());
        tr += t.elapsed();
    }
    let mbs = |d: WallDuration| (bytes * 200) as f64 / d.as_secs_f64() / 1e6;
    let rounds = 200;
    let t = WallClock::now();
    for _ in 0..rounds {
        black_box(handshake(&mut rng, &ka, &kb));
    }
    let hs = t.elapsed() / rounds;
    println!(
        "secure summary: 4 KiB frames plaintext {:.0} MB/s, encrypted {:.0} MB/s \
         (seal+open alone {:.0} MB/s), encrypted/plaintext throughput ratio {:.2}x; \
         handshake {:.0} us",
        mbs(tp),
        mbs(te),
        mbs(tr),
        tp.as_secs_f64() / te.as_secs_f64(),
        hs.as_secs_f64() * 1e6
    );
}
