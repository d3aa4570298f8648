//! `dmsg decode`: walk a captured DMSG byte stream frame by frame.
//!
//! The input (a file or standard input, raw bytes or hex text; see [`crate::hexin`]) goes
//! through [`dmsg_core::decode::Decoder`] in one piece. Every frame it yields is printed; the
//! first error it reports ends the walk, and is printed with the offset of the frame it
//! rejected, the number of good frames before it, and what to do about it. [`walk`] does the
//! decoding and [`crate::render`] the printing, so both can be used without the command line.

use std::ffi::OsString;
use std::io::{self, Read};
use std::path::PathBuf;

use dmsg_core::crc::DefaultCrc;
use dmsg_core::decode::{ConfigError, DecodeError, Decoder, DecoderConfig};
use dmsg_core::wire::{
    align64, Body, ByteOrder, Header, HeaderRepr, WireError, AUX_MAX, HDR_MAX_BLOCKS, HEADER_LEN,
};

use crate::cli::{Arg, ArgReader, Io, UsageError};
use crate::hexin::{self, Detected, InputFormat};
use crate::{exit, render};

/// The help text of `dmsg decode`.
pub const HELP: &str = "\
dmsg decode: print the frames of a captured DMSG byte stream, checking every CRC

Usage: dmsg decode [FILE|-] [--json] [--hex|--raw] [--max-aux BYTES] [--no-seq]

Reads FILE, or standard input when FILE is '-' or missing. The input is one direction of one
connection: raw bytes (e.g. a TCP payload saved from a packet capture), or the same bytes as hex
text (hex digits and whitespace only). The format is detected; --hex or --raw forces it.

Prints one line per frame: index, byte offset, command and flags, msgid, circuit, error, aux
length, salt, and the CRC checks; LNK_CONN and LNK_SPAN add a line with their main fields, and
DBG_SHELL one with its text. The first bad frame ends the walk with its error, its offset and
what to do. A summary goes to standard error.

Options:
      --json             one JSON object per frame per line; a final {\"error\": ...} line if
                         the stream goes bad
      --hex              read the input as hex text
      --raw              read the input as raw bytes
      --max-aux BYTES    largest aux payload accepted (default and maximum 1048576; K and M
                         suffixes are 1024 and 1048576)
      --no-seq           do not check the salt's frame counter (for a capture that starts in
                         the middle of a connection)
  -h, --help             show this help

Exit status: 0 the stream decoded completely; 1 the stream is bad or ends inside a frame;
2 usage error, or the input could not be read.
";

/// Where the bytes come from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// Standard input.
    Stdin,
    /// A file.
    File(PathBuf),
}

/// The options of `dmsg decode`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DecodeArgs {
    /// The input.
    pub source: Source,
    /// JSON lines instead of text.
    pub json: bool,
    /// How to read the input.
    pub format: InputFormat,
    /// Largest aux payload accepted.
    pub max_aux: usize,
    /// Check the salt's frame counter.
    pub check_sequence: bool,
}

impl Default for DecodeArgs {
    fn default() -> Self {
        DecodeArgs {
            source: Source::Stdin,
            json: false,
            format: InputFormat::Auto,
            max_aux: AUX_MAX,
            check_sequence: true,
        }
    }
}

impl DecodeArgs {
    /// The decoder configuration these options ask for.
    pub fn config(&self) -> DecoderConfig {
        DecoderConfig {
            max_aux_bytes: self.max_aux,
            max_header_blocks: HDR_MAX_BLOCKS,
            check_sequence: self.check_sequence,
        }
    }
}

/// What the command line asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Parsed {
    /// Decode with these options.
    Run(DecodeArgs),
    /// Show the help.
    Help,
}

/// Parses a byte count: decimal or `0x` hex, with an optional `K`/`KiB` (1024) or `M`/`MiB`
/// (1048576) suffix.
///
/// ```
/// use dmsg_std::decode_cmd::parse_size;
/// assert_eq!(parse_size("4096"), Some(4096));
/// assert_eq!(parse_size("64K"), Some(65536));
/// assert_eq!(parse_size("1MiB"), Some(1 << 20));
/// assert_eq!(parse_size("0x400"), Some(1024));
/// assert_eq!(parse_size("lots"), None);
/// ```
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (digits, unit) =
        if let Some(d) = s.strip_suffix("KiB").or_else(|| s.strip_suffix(['K', 'k'])) {
            (d, 1024)
        } else if let Some(d) = s.strip_suffix("MiB").or_else(|| s.strip_suffix(['M', 'm'])) {
            (d, 1024 * 1024)
        } else {
            (s, 1)
        };
    let n = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(h) => usize::from_str_radix(h, 16).ok()?,
        None => digits.parse::<usize>().ok()?,
    };
    n.checked_mul(unit)
}

/// Parses the arguments after `dmsg decode`.
pub fn parse_args(args: &[OsString]) -> Result<Parsed, UsageError> {
    let mut r = ArgReader::new("decode", args);
    let mut out = DecodeArgs::default();
    let mut source: Option<Source> = None;
    let mut format_flag: Option<&str> = None;
    while let Some(arg) = r.next_arg() {
        match arg {
            Arg::Option(name @ ("-h" | "--help"), v) => {
                r.no_value(name, v)?;
                return Ok(Parsed::Help);
            }
            Arg::Option(name @ "--json", v) => {
                r.no_value(name, v)?;
                out.json = true;
            }
            Arg::Option(name @ ("--hex" | "--raw"), v) => {
                r.no_value(name, v)?;
                if let Some(prev) = format_flag.filter(|p| *p != name) {
                    return Err(r.error(format!(
                        "{prev} and {name} contradict each other; give at most one"
                    )));
                }
                format_flag = Some(name);
                out.format = if name == "--hex" {
                    InputFormat::Hex
                } else {
                    InputFormat::Raw
                };
            }
            Arg::Option(name @ "--no-seq", v) => {
                r.no_value(name, v)?;
                out.check_sequence = false;
            }
            Arg::Option(name @ "--max-aux", v) => {
                let v = r.value(name, v)?;
                let n = parse_size(v).ok_or_else(|| {
                    r.error(format!(
                        "--max-aux '{v}' is not a byte count (examples: 4096, 64K, 1M)"
                    ))
                })?;
                if n > AUX_MAX {
                    return Err(r.error(format!(
                        "--max-aux {n} exceeds the protocol's limit of {AUX_MAX} bytes (1 MiB)"
                    )));
                }
                out.max_aux = n;
            }
            Arg::Option(name, _) => {
                return Err(r.error(format!("unknown option {name}")));
            }
            Arg::Positional(p) => {
                if source.is_some() {
                    return Err(r.error(format!(
                        "more than one input given ('{}'); decode one stream at a time",
                        p.to_string_lossy()
                    )));
                }
                source = Some(if p == "-" {
                    Source::Stdin
                } else {
                    Source::File(PathBuf::from(p))
                });
            }
        }
    }
    out.source = source.unwrap_or(Source::Stdin);
    Ok(Parsed::Run(out))
}

/// One verified frame, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    /// Position in the stream, from 0.
    pub index: usize,
    /// Byte offset of the frame's first byte.
    pub offset: usize,
    /// The base header.
    pub header: HeaderRepr,
    /// The sender's byte order.
    pub order: ByteOrder,
    /// The extended header's body, or why it could not be parsed.
    pub body: Result<Body, WireError>,
    /// The aux data, without padding.
    pub aux: Vec<u8>,
    /// Bytes the frame takes on the wire.
    pub wire_len: usize,
}

/// How the walk through a stream ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// Every byte belonged to a good frame.
    Clean,
    /// The input ended inside a frame.
    Truncated {
        /// Offset of the incomplete frame.
        offset: usize,
        /// Bytes of it that were present.
        bytes: usize,
        /// The frame's full length, if its base header was complete and valid.
        announced: Option<usize>,
    },
    /// The decoder rejected a frame; nothing after it can be trusted.
    Failed {
        /// The decoder's error.
        error: DecodeError,
        /// Offset of the rejected frame's first byte.
        offset: usize,
        /// Its base header, for CRC and sequence errors (from `Decoder::rejected_header`).
        rejected: Option<HeaderRepr>,
        /// Its byte order, when its magic was valid.
        order: Option<ByteOrder>,
    },
}

/// The result of decoding a whole input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Walk {
    /// The good frames, in order.
    pub frames: Vec<FrameInfo>,
    /// How the stream ended.
    pub end: StreamEnd,
    /// Length of the input in bytes.
    pub input_len: usize,
}

impl Walk {
    /// The exit code this outcome calls for: [`exit::OK`] or [`exit::BAD_STREAM`].
    pub fn exit_code(&self) -> u8 {
        match self.end {
            StreamEnd::Clean => exit::OK,
            _ => exit::BAD_STREAM,
        }
    }

    /// Frames that carry aux data.
    pub fn frames_with_aux(&self) -> usize {
        self.frames
            .iter()
            .filter(|f| f.header.aux_bytes > 0)
            .count()
    }
}

/// The byte order of a frame whose first bytes are `bytes`, if its magic is valid.
fn order_at(bytes: &[u8]) -> Option<ByteOrder> {
    Header::new_checked(bytes.get(..HEADER_LEN)?)
        .ok()
        .map(|h| h.byte_order())
}

/// Decodes `bytes` as one stream with `config`.
pub fn walk(bytes: &[u8], config: DecoderConfig) -> Result<Walk, ConfigError> {
    let storage = vec![0u8; config.storage_len()].into_boxed_slice();
    let mut dec = Decoder::new(storage, config, DefaultCrc::default())?;
    let mut frames = Vec::new();
    let mut pos = 0usize;
    loop {
        match dec.decode(&bytes[pos..]) {
            Ok(out) => {
                pos += out.consumed;
                match out.frame {
                    Some(f) => {
                        let repr = f.repr();
                        frames.push(FrameInfo {
                            index: frames.len(),
                            offset: pos.saturating_sub(f.wire_len()),
                            header: repr,
                            order: f.byte_order(),
                            body: f.body(),
                            aux: f.aux().to_vec(),
                            wire_len: f.wire_len(),
                        });
                    }
                    // Everything used (or, defensively, no progress): the input is done.
                    None if pos >= bytes.len() || out.consumed == 0 => break,
                    None => {}
                }
            }
            Err(error) => {
                let start = dec.frame_offset() as usize;
                let rejected = dec.rejected_header();
                let end = StreamEnd::Failed {
                    error,
                    offset: start,
                    rejected: rejected.map(|(h, _)| h),
                    order: rejected
                        .map(|(_, o)| o)
                        .or_else(|| order_at(&bytes[start..])),
                };
                return Ok(Walk {
                    frames,
                    end,
                    input_len: bytes.len(),
                });
            }
        }
    }
    let pending = dec.buffered() + (bytes.len() - pos);
    let end = if pending == 0 {
        StreamEnd::Clean
    } else {
        let offset = bytes.len() - pending;
        let announced = Header::new_checked(&bytes[offset..]).ok().map(|h| {
            h.cmd()
                .header_len()
                .saturating_add(align64(h.aux_bytes() as usize))
        });
        StreamEnd::Truncated {
            offset,
            bytes: pending,
            announced,
        }
    };
    Ok(Walk {
        frames,
        end,
        input_len: bytes.len(),
    })
}

/// Reads the whole input named by `source`.
fn read_source(source: &Source, stdin: &mut dyn Read) -> Result<Vec<u8>, String> {
    match source {
        Source::Stdin => {
            let mut buf = Vec::new();
            stdin
                .read_to_end(&mut buf)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            Ok(buf)
        }
        Source::File(path) => std::fs::read(path).map_err(|e| {
            let what = match e.kind() {
                io::ErrorKind::NotFound => {
                    "no such file; check the path, or give '-' to read standard input"
                }
                io::ErrorKind::PermissionDenied => "permission denied; check the file's mode",
                io::ErrorKind::IsADirectory => "it is a directory; name a capture file",
                _ => "check that it is a readable file",
            };
            format!("cannot read '{}': {e}: {what}", path.display())
        }),
    }
}

/// `dmsg decode` with its raw arguments; returns the exit code.
pub fn main(args: &[OsString], io: &mut Io<'_>) -> u8 {
    match parse_args(args) {
        Ok(Parsed::Help) => crate::cli::print_or_usage(io, HELP),
        Ok(Parsed::Run(a)) => run(&a, io),
        Err(e) => {
            let _ = writeln!(io.stderr, "{e}");
            exit::USAGE
        }
    }
}

/// `dmsg decode` with parsed options; returns the exit code.
pub fn run(args: &DecodeArgs, io: &mut Io<'_>) -> u8 {
    let usage = |io: &mut Io<'_>, msg: &str| {
        let _ = writeln!(io.stderr, "dmsg decode: {msg}");
        exit::USAGE
    };
    let raw = match read_source(&args.source, io.stdin) {
        Ok(b) => b,
        Err(msg) => return usage(io, &msg),
    };
    let (bytes, detected) = match hexin::load(raw, args.format) {
        Ok(x) => x,
        Err(e) => return usage(io, &e.to_string()),
    };
    let walk = match walk(&bytes, args.config()) {
        Ok(w) => w,
        Err(e) => return usage(io, &format!("bad decoder configuration: {e}")),
    };
    let code = walk.exit_code();
    match print(&walk, &bytes, detected, args, io) {
        Ok(()) => code,
        // The reader went away (e.g. `| head`): the stream's verdict still stands.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => code,
        Err(e) => {
            let _ = writeln!(io.stderr, "dmsg decode: cannot write the output: {e}");
            exit::USAGE
        }
    }
}

fn print(
    walk: &Walk,
    bytes: &[u8],
    detected: Detected,
    args: &DecodeArgs,
    io: &mut Io<'_>,
) -> io::Result<()> {
    let problem = render::Problem::of(walk, bytes, detected);
    if args.json {
        for f in &walk.frames {
            writeln!(io.stdout, "{}", render::frame_json(f))?;
        }
        if let Some(p) = &problem {
            writeln!(io.stdout, "{}", p.json())?;
        }
        io.stdout.flush()?;
    } else {
        for f in &walk.frames {
            writeln!(io.stdout, "{}", render::frame_line(f))?;
            for line in render::detail_lines(f) {
                writeln!(io.stdout, "{line}")?;
            }
        }
        io.stdout.flush()?;
        if let Some(p) = &problem {
            for line in p.text_lines() {
                writeln!(io.stderr, "{line}")?;
            }
        }
        writeln!(io.stderr, "{}", render::summary(walk, detected))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmsg_core::encode::Encoder;
    use dmsg_core::wire::{Cmd, Command, Flags, MsgId};

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn stream(n: usize) -> Vec<u8> {
        let mut enc = Encoder::new(0x1234_5600);
        let mut out = vec![0u8; n * 128];
        let mut len = 0;
        for i in 0..n {
            let hdr = HeaderRepr::new(Cmd::new(Command::DbgShell, Flags::empty()), MsgId(0));
            let aux: &[u8] = if i % 2 == 0 { b"" } else { b"ping\0" };
            len += enc
                .encode(
                    &DefaultCrc::default(),
                    &hdr,
                    &Body::None,
                    aux,
                    &mut out[len..],
                )
                .unwrap();
        }
        out.truncate(len);
        out
    }

    #[test]
    fn parses_every_option() {
        let Parsed::Run(a) = parse_args(&os(&[
            "cap.bin",
            "--json",
            "--raw",
            "--max-aux=4K",
            "--no-seq",
        ]))
        .unwrap() else {
            panic!("expected Run")
        };
        assert_eq!(a.source, Source::File("cap.bin".into()));
        assert!(a.json && !a.check_sequence);
        assert_eq!(a.format, InputFormat::Raw);
        assert_eq!(a.max_aux, 4096);
        assert_eq!(
            parse_args(&os(&[])).unwrap(),
            Parsed::Run(DecodeArgs::default())
        );
        assert_eq!(
            parse_args(&os(&["-"])).unwrap(),
            Parsed::Run(DecodeArgs::default())
        );
        assert_eq!(parse_args(&os(&["x", "--help"])).unwrap(), Parsed::Help);
    }

    #[test]
    fn rejects_bad_options() {
        for bad in [
            &["--hex", "--raw"][..],
            &["--bogus"],
            &["a", "b"],
            &["--max-aux"],
            &["--max-aux", "2M"],
            &["--max-aux", "big"],
            &["--json=yes"],
        ] {
            let e = parse_args(&os(bad)).unwrap_err();
            assert!(e.to_string().contains("see dmsg decode --help"), "{e}");
        }
    }

    #[test]
    fn walk_reports_offsets_truncation_and_errors() {
        let s = stream(4);
        let w = walk(&s, DecoderConfig::default()).unwrap();
        assert_eq!(w.end, StreamEnd::Clean);
        let offsets: Vec<usize> = w.frames.iter().map(|f| f.offset).collect();
        assert_eq!(offsets, [0, 64, 192, 256]);

        let w = walk(&s[..200], DecoderConfig::default()).unwrap();
        assert_eq!(w.frames.len(), 2);
        assert_eq!(
            w.end,
            StreamEnd::Truncated {
                offset: 192,
                bytes: 8,
                announced: None
            }
        );
        let w = walk(&s[..300], DecoderConfig::default()).unwrap();
        assert_eq!(
            w.end,
            StreamEnd::Truncated {
                offset: 256,
                bytes: 44,
                announced: None
            }
        );
        let w = walk(&s[..100], DecoderConfig::default()).unwrap();
        assert_eq!(
            w.end,
            StreamEnd::Truncated {
                offset: 64,
                bytes: 36,
                announced: None
            }
        );
        let w = walk(&s[..64 + 70], DecoderConfig::default()).unwrap();
        assert_eq!(
            w.end,
            StreamEnd::Truncated {
                offset: 64,
                bytes: 70,
                announced: Some(128)
            }
        );

        let mut bad = s.clone();
        bad[64 + 64 + 1] ^= 1; // aux of frame #1
        let w = walk(&bad, DecoderConfig::default()).unwrap();
        assert_eq!(w.frames.len(), 1);
        match w.end {
            StreamEnd::Failed {
                error: DecodeError::AuxCrc { .. },
                offset: 64,
                rejected: Some(h),
                order: Some(ByteOrder::Little),
            } => assert_eq!(h.aux_bytes, 5),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn walk_never_panics_on_mangled_or_random_input() {
        let base = stream(6);
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..2000 {
            let mut b = if round % 3 == 0 {
                (0..(next() % 700))
                    .map(|_| next() as u8)
                    .collect::<Vec<_>>()
            } else {
                base.clone()
            };
            for _ in 0..(next() % 4) {
                if !b.is_empty() {
                    let i = (next() as usize) % b.len();
                    b[i] = next() as u8;
                }
            }
            let cut = if b.is_empty() {
                0
            } else {
                (next() as usize) % (b.len() + 1)
            };
            let cfg = DecoderConfig {
                max_aux_bytes: (next() % 2048) as usize,
                ..DecoderConfig::default()
            };
            let w = walk(&b[..cut], cfg).unwrap();
            let covered: usize = w.frames.iter().map(|f| f.wire_len).sum();
            match w.end {
                StreamEnd::Clean => assert_eq!(covered, cut),
                StreamEnd::Truncated { offset, bytes, .. } => {
                    assert_eq!(offset, covered);
                    assert_eq!(offset + bytes, cut);
                }
                StreamEnd::Failed { offset, .. } => assert_eq!(offset, covered),
            }
            let _ = render::Problem::of(&w, &b[..cut], Detected::Raw).map(|p| p.json());
            for f in &w.frames {
                let _ = render::frame_json(f);
                let _ = render::detail_lines(f);
            }
        }
    }
}
