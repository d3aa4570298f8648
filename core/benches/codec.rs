//! Codec throughput next to plain CRC-32C over the same bytes.
//!
//! Two streams: 16 KiB of LNK_PING frames (header only, 256 frames) and 16 BLK_WRITE frames of
//! 4 KiB aux each. For each: decode + verify (both CRCs, salt sequence, header parse), plain
//! `SoftCrc32c16` over the whole stream, the same CRC done per frame (one call for the header,
//! one for the aux: the least a decoder must do), and encode. Decoding can never beat one CRC pass over
//! the same bytes, so the ratio decode/crc says how much the decoder adds on top of the CRC.
//!
//! `cargo bench -p dmsg-core --bench codec -- --warm-up-time 1 --measurement-time 2`
//!
//! After criterion's own figures, `main` measures each pair again in one run, interleaved,
//! with `Instant`, and prints the ratios (absolute figures are noisy; ratios are comparable).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use dmsg_core::crc::{Crc32c, SoftCrc32c16};
use dmsg_core::decode::{Decoder, DecoderConfig};
use dmsg_core::encode::Encoder;
use dmsg_core::wire::body::BlkIoRepr;
use dmsg_core::wire::{Body, Cmd, Command, Flags, HeaderRepr, MsgId};

/// A stream of identical frames, and what it was made from.
struct Workload {
    name: &'static str,
    header: HeaderRepr,
    body: Body,
    aux: Vec<u8>,
    frames: usize,
    stream: Vec<u8>,
    config: DecoderConfig,
}

impl Workload {
    fn new(
        name: &'static str,
        header: HeaderRepr,
        body: Body,
        aux: Vec<u8>,
        frames: usize,
    ) -> Self {
        let config = DecoderConfig {
            max_aux_bytes: aux.len(),
            max_header_blocks: header.cmd.size_blocks(),
            check_sequence: true,
        };
        let mut w = Workload {
            name,
            header,
            body,
            aux,
            frames,
            stream: vec![0u8; 1 << 20],
            config,
        };
        let mut stream = std::mem::take(&mut w.stream);
        let len = encode_all(&w, &mut Encoder::new(7), &mut stream);
        stream.truncate(len);
        w.stream = stream;
        w
    }

    fn decoder(&self) -> Decoder<Box<[u8]>, SoftCrc32c16> {
        let storage = vec![0u8; self.config.storage_len()].into_boxed_slice();
        Decoder::new(storage, self.config, SoftCrc32c16).expect("valid config")
    }
}

/// 16 KiB of LNK_PING: 256 header-only frames.
fn header_only() -> Workload {
    let ping = HeaderRepr::new(Cmd::new(Command::LnkPing, Flags::empty()), MsgId(0));
    Workload::new("header-only", ping, Body::None, Vec::new(), 256)
}

/// 16 BLK_WRITE frames, each a 128-byte header and 4 KiB of aux.
fn aux_4k() -> Workload {
    let write = HeaderRepr::new(Cmd::new(Command::BlkWrite, Flags::empty()), MsgId(0x10));
    let body = Body::BlkIo(BlkIoRepr {
        keyid: 1,
        offset: 0,
        bytes: 4096,
        flags: 0,
    });
    let aux = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    Workload::new("4KiB-aux", write, body, aux, 16)
}

/// Encodes the workload's frames into `out`; returns the bytes written.
fn encode_all(w: &Workload, enc: &mut Encoder, out: &mut [u8]) -> usize {
    let mut at = 0;
    for _ in 0..w.frames {
        at += enc
            .encode(&SoftCrc32c16, &w.header, &w.body, &w.aux, &mut out[at..])
            .expect("frame fits");
    }
    at
}

/// Decodes and verifies the whole stream, parsing every header; returns a checksum of what
/// was seen so nothing is optimised away.
fn decode_all(dec: &mut Decoder<Box<[u8]>, SoftCrc32c16>, stream: &[u8]) -> u64 {
    dec.reset();
    let mut input = stream;
    let mut seen = 0u64;
    while !input.is_empty() {
        let out = dec.decode(input).expect("valid stream");
        input = &input[out.consumed..];
        if let Some(f) = out.frame {
            let r = f.repr();
            seen = seen.wrapping_add(r.msgid.0 ^ u64::from(r.salt) ^ f.aux().len() as u64);
        }
    }
    seen
}

fn crc_all(stream: &[u8]) -> u32 {
    SoftCrc32c16.checksum(stream)
}

/// The least CRC work a decoder must do: one CRC over each frame's header and one over its
/// aligned aux, as separate calls (the per-call cost matters for small frames).
fn crc_per_frame(w: &Workload, stream: &[u8]) -> u32 {
    let hlen = w.header.cmd.header_len();
    let mut acc = 0;
    for frame in stream.chunks_exact(stream.len() / w.frames) {
        acc ^= SoftCrc32c16.checksum(&frame[..hlen]);
        if frame.len() > hlen {
            acc ^= SoftCrc32c16.checksum(&frame[hlen..]);
        }
    }
    acc
}

fn bench_workload(c: &mut Criterion, w: &Workload) {
    let mut group = c.benchmark_group(format!("codec/{}", w.name));
    group.throughput(Throughput::Bytes(w.stream.len() as u64));
    let mut dec = w.decoder();
    assert_eq!(
        decode_all(&mut dec, &w.stream),
        decode_all(&mut w.decoder(), &w.stream)
    );
    assert_eq!(dec.stats().frames, w.frames as u64);
    group.bench_function("decode+verify", |b| {
        b.iter(|| decode_all(&mut dec, black_box(&w.stream)))
    });
    group.bench_function("crc32c SoftCrc32c16", |b| {
        b.iter(|| crc_all(black_box(&w.stream)))
    });
    group.bench_function("crc32c per frame", |b| {
        b.iter(|| crc_per_frame(w, black_box(&w.stream)))
    });
    let mut out = vec![0u8; w.stream.len()];
    group.bench_function("encode", |b| {
        b.iter(|| encode_all(black_box(w), &mut Encoder::new(7), &mut out))
    });
    group.finish();
}

/// Accumulated bytes and time of repeated runs of one operation.
struct Meter {
    bytes: u64,
    runs: u64,
    elapsed: Duration,
}

impl Meter {
    fn new() -> Meter {
        Meter {
            bytes: 0,
            runs: 0,
            elapsed: Duration::ZERO,
        }
    }

    /// Runs `f` (which processes `bytes` bytes) repeatedly for about `slice`.
    fn run<R>(&mut self, bytes: usize, slice: Duration, mut f: impl FnMut() -> R) {
        let start = Instant::now();
        loop {
            for _ in 0..8 {
                black_box(f());
            }
            self.runs += 8;
            self.bytes += 8 * bytes as u64;
            if start.elapsed() >= slice {
                break;
            }
        }
        self.elapsed += start.elapsed();
    }

    fn gbps(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e9
    }
}

/// Throughput of one workload, in GB/s.
struct Figures {
    decode: f64,
    crc: f64,
    crc_frames: f64,
    encode: f64,
}

/// Decode, CRC (whole stream and per frame) and encode throughput of `w`, measured
/// interleaved (10 slices of 50 ms each, about 0.5 s per figure) so that clock and thermal
/// drift hit all of them alike.
fn measure(w: &Workload) -> Figures {
    let slice = Duration::from_millis(50);
    let (mut dec_m, mut crc_m, mut enc_m) = (Meter::new(), Meter::new(), Meter::new());
    let mut frames_m = Meter::new();
    let mut dec = w.decoder();
    let mut out = vec![0u8; w.stream.len()];
    // Warm up caches and the branch predictor.
    for _ in 0..100 {
        black_box(decode_all(&mut dec, &w.stream));
        black_box(crc_all(&w.stream));
    }
    for _ in 0..10 {
        dec_m.run(w.stream.len(), slice, || {
            decode_all(&mut dec, black_box(&w.stream))
        });
        crc_m.run(w.stream.len(), slice, || crc_all(black_box(&w.stream)));
        frames_m.run(w.stream.len(), slice, || {
            crc_per_frame(w, black_box(&w.stream))
        });
        enc_m.run(w.stream.len(), slice, || {
            encode_all(black_box(w), &mut Encoder::new(7), &mut out)
        });
    }
    Figures {
        decode: dec_m.gbps(),
        crc: crc_m.gbps(),
        crc_frames: frames_m.gbps(),
        encode: enc_m.gbps(),
    }
}

fn summary(workloads: &[Workload]) {
    println!();
    println!("summary (same run, interleaved, ~0.5 s per figure, std::time::Instant), GB/s:");
    let mut figures = Vec::new();
    for w in workloads {
        let f = measure(w);
        println!(
            "  {:<12} {:>5} B/frame x {:>3}: decode+verify {:5.2}  crc32c {:5.2}  \
             crc32c per frame {:5.2}  encode {:5.2}",
            w.name,
            w.stream.len() / w.frames,
            w.frames,
            f.decode,
            f.crc,
            f.crc_frames,
            f.encode
        );
        figures.push((w.name, f));
    }
    let line = |label: &str, ratio: fn(&Figures) -> f64| {
        let parts: Vec<String> = figures
            .iter()
            .map(|(name, f)| format!("{name}: {:.2}", ratio(f)))
            .collect();
        println!("{label}  {}", parts.join("   "));
    };
    line("ratio decode/crc          ", |f| f.decode / f.crc);
    line("ratio decode/crc-per-frame", |f| f.decode / f.crc_frames);
    line("ratio encode/crc          ", |f| f.encode / f.crc);
    println!("(target: decode/crc >= 0.85 for 4 KiB aux)");
}

fn main() {
    let workloads = [header_only(), aux_4k()];
    let mut c = Criterion::default().configure_from_args();
    for w in &workloads {
        bench_workload(&mut c, w);
    }
    c.final_summary();
    // `cargo test --benches` runs each benchmark once without `--bench`; skip the summary.
    if std::env::args().any(|a| a == "--bench") {
        summary(&workloads);
    }
}
