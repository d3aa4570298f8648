//! Text and JSON output of `dmsg decode`: frame lines, body lines, and error reports.

use std::fmt::Write as _;

use dmsg_core::decode::DecodeError;
use dmsg_core::errcode::{txn, RecvErrorCode};
use dmsg_core::wire::body::peer_type;
use dmsg_core::wire::{Body, ByteOrder, Command, HeaderRepr, Label, AUX_MAX};

use crate::decode_cmd::{FrameInfo, StreamEnd, Walk};
use crate::hexin::Detected;
use crate::json::Object;

/// The outcome of one CRC (or sequence) check, as printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Check {
    /// Checked and correct.
    Ok,
    /// Checked and wrong.
    Bad,
    /// Not checked (the decoder stopped before it).
    Unchecked,
}

impl Check {
    fn word(self) -> &'static str {
        match self {
            Check::Ok => "ok",
            Check::Bad => "BAD",
            Check::Unchecked => "unchecked",
        }
    }
}

/// `"1 frame"`, `"2 frames"`.
fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The protocol's name of a peer type, if it has one.
pub fn peer_type_name(t: u8) -> Option<&'static str> {
    peer_type::name(t)
}

/// `bytes` as the inside of a double-quoted string: printable text as it is, `\n`, `\t`,
/// `\r`, `\"`, `\\`, and every other byte as `\xNN`.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => s.push_str("\\n"),
                '\t' => s.push_str("\\t"),
                '\r' => s.push_str("\\r"),
                '"' => s.push_str("\\\""),
                '\\' => s.push_str("\\\\"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        let _ = write!(s, "\\x{b:02x}");
                    }
                }
                c => s.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    s
}

/// The text of a DBG_SHELL aux payload (without its terminating NUL), if it is printable:
/// valid UTF-8 with no control characters other than newline, tab and carriage return.
pub fn shell_text(aux: &[u8]) -> Option<&str> {
    let body = aux.strip_suffix(&[0]).unwrap_or(aux);
    let text = std::str::from_utf8(body).ok()?;
    text.chars()
        .all(|c| !c.is_control() || matches!(c, '\n' | '\t' | '\r'))
        .then_some(text)
}

fn label(l: &Label) -> String {
    format!("\"{}\"", escape_bytes(l.as_bytes()))
}

fn error_field(code: u32) -> String {
    match txn::name(code) {
        Some(n) => format!("err={code:#x}({n})"),
        None => format!("err={code:#x}"),
    }
}

/// One header line: `#2 @448 LNK_SPAN|CREATE msgid=… circuit=… err=0x0(OK) aux=0
/// salt=3c986902 hdr_crc=38880cdb ok aux_crc=-`, then `be` for a big-endian sender.
/// `seq` is `(expected, check)` for a frame rejected on its sequence number.
pub fn header_line(
    index: usize,
    offset: usize,
    h: &HeaderRepr,
    order: Option<ByteOrder>,
    hdr_crc: Check,
    aux_crc: Check,
    seq: Option<u8>,
) -> String {
    let mut s = format!(
        "#{index} @{offset} {} msgid={} circuit={} {} aux={} salt={:08x}",
        h.cmd,
        h.msgid,
        h.circuit,
        error_field(h.error),
        h.aux_bytes,
        h.salt
    );
    if let Some(expected) = seq {
        let _ = write!(s, " seq={} BAD(expected {expected})", h.salt & 0xFF);
    }
    let _ = write!(s, " hdr_crc={:08x} {}", h.hdr_crc, hdr_crc.word());
    if h.aux_bytes == 0 {
        s.push_str(" aux_crc=-");
    } else {
        let _ = write!(s, " aux_crc={:08x} {}", h.aux_crc, aux_crc.word());
    }
    if order == Some(ByteOrder::Big) {
        s.push_str(" be");
    }
    s
}

/// The header line of a decoded (hence verified) frame.
pub fn frame_line(f: &FrameInfo) -> String {
    header_line(
        f.index,
        f.offset,
        &f.header,
        Some(f.order),
        Check::Ok,
        Check::Ok,
        None,
    )
}

/// The indented lines that follow a frame's header line: the main fields of LNK_CONN,
/// LNK_SPAN and BLK bodies, a body that could not be parsed, and DBG_SHELL text.
pub fn detail_lines(f: &FrameInfo) -> Vec<String> {
    let mut out = Vec::new();
    match &f.body {
        Ok(Body::Conn(c)) => {
            let mut s = format!(
                "    conn peer_id={} media_id={} peer_type={} peer_mask={:016x} proto_version={} \
                 status={:#x} rnss={:08x} peer_label={}",
                c.peer_id,
                c.media_id,
                peer_type_text(c.peer_type),
                c.peer_mask,
                c.proto_version,
                c.status,
                c.rnss,
                label(&c.peer_label)
            );
            if c.ext_offer != 0 || c.ext_param != 0 {
                let _ = write!(
                    s,
                    " ext_offer={:#x} ext_param={:#x}",
                    c.ext_offer, c.ext_param
                );
            }
            out.push(s);
        }
        Ok(Body::Span(sp)) => out.push(format!(
            "    span peer_id={} pfs_id={} pfs_type={} peer_type={} dist={} proto_version={} \
             status={:#x} rnss={:08x} peer_label={} pfs_label={}",
            sp.peer_id,
            sp.pfs_id,
            sp.pfs_type,
            peer_type_text(sp.peer_type),
            sp.dist,
            sp.proto_version,
            sp.status,
            sp.rnss,
            label(&sp.peer_label),
            label(&sp.pfs_label)
        )),
        Ok(Body::BlkOpen(b)) => out.push(format!("    blk modes={:#x}", b.modes)),
        Ok(Body::BlkIo(b)) => out.push(format!(
            "    blk keyid={:#x} offset={:#x} bytes={} flags={:#x}",
            b.keyid, b.offset, b.bytes, b.flags
        )),
        Ok(Body::BlkError(b)) => {
            out.push(format!("    blk keyid={:#x} resid={}", b.keyid, b.resid))
        }
        Ok(_) => {}
        Err(e) => out.push(format!("    body not parsed: {e}")),
    }
    if f.header.cmd.command() == Command::DbgShell && !f.aux.is_empty() {
        out.push(match shell_text(&f.aux) {
            Some(t) => format!("    text \"{}\"", escape_bytes(t.as_bytes())),
            None => {
                const SHOWN: usize = 64;
                let mut s = format!("    aux {} bytes (not text):", f.aux.len());
                for b in f.aux.iter().take(SHOWN) {
                    let _ = write!(s, " {b:02x}");
                }
                if f.aux.len() > SHOWN {
                    s.push_str(" ...");
                }
                s
            }
        });
    }
    out
}

fn peer_type_text(t: u8) -> String {
    match peer_type_name(t) {
        Some(n) => format!("{t}({n})"),
        None => t.to_string(),
    }
}

fn header_json(
    mut o: Object,
    h: &HeaderRepr,
    order: Option<ByteOrder>,
    hdr_ok: bool,
    aux_ok: bool,
) -> Object {
    o = o
        .str("cmd", &h.cmd.command().to_string())
        .str_list("flags", h.cmd.flags().names())
        .u64("cmd_word", h.cmd.0.into())
        .u64("msgid", h.msgid.0)
        .str("msgid_hex", &h.msgid.to_string())
        .u64("circuit", h.circuit.0)
        .str("circuit_hex", &h.circuit.to_string())
        .u64("error", h.error.into())
        .opt_str("error_name", txn::name(h.error))
        .u64("aux_bytes", h.aux_bytes.into())
        .u64("salt", h.salt.into())
        .u64("seq", (h.salt & 0xFF).into())
        .u64("hdr_bytes", h.header_len() as u64);
    if let Some(order) = order {
        o = o.str(
            "byte_order",
            match order {
                ByteOrder::Little => "le",
                ByteOrder::Big => "be",
            },
        );
    }
    o.u64("hdr_crc", h.hdr_crc.into())
        .bool("hdr_crc_ok", hdr_ok)
        .u64("aux_crc", h.aux_crc.into())
        .bool("aux_crc_ok", aux_ok)
}

fn lossy(l: &Label) -> String {
    String::from_utf8_lossy(l.as_bytes()).into_owned()
}

fn body_json(body: &Body) -> Option<Object> {
    Some(match body {
        Body::Conn(c) => Object::new()
            .str("kind", "conn")
            .str("peer_id", &c.peer_id.to_string())
            .str("media_id", &c.media_id.to_string())
            .u64("peer_type", c.peer_type.into())
            .opt_str("peer_type_name", peer_type_name(c.peer_type))
            .u64("peer_mask", c.peer_mask)
            .u64("proto_version", c.proto_version.into())
            .u64("status", c.status.into())
            .u64("rnss", c.rnss.into())
            .str("peer_label", &lossy(&c.peer_label))
            .u64("ext_offer", c.ext_offer.into())
            .u64("ext_param", c.ext_param.into()),
        Body::Span(s) => Object::new()
            .str("kind", "span")
            .str("peer_id", &s.peer_id.to_string())
            .str("pfs_id", &s.pfs_id.to_string())
            .u64("pfs_type", s.pfs_type.into())
            .u64("peer_type", s.peer_type.into())
            .opt_str("peer_type_name", peer_type_name(s.peer_type))
            .u64("dist", s.dist.into())
            .u64("proto_version", s.proto_version.into())
            .u64("status", s.status.into())
            .u64("rnss", s.rnss.into())
            .str("peer_label", &lossy(&s.peer_label))
            .str("pfs_label", &lossy(&s.pfs_label)),
        Body::BlkOpen(b) => Object::new()
            .str("kind", "blk_open")
            .u64("modes", b.modes.into()),
        Body::BlkIo(b) => Object::new()
            .str("kind", "blk_io")
            .u64("keyid", b.keyid)
            .u64("offset", b.offset)
            .u64("bytes", b.bytes.into())
            .u64("flags", b.flags.into()),
        Body::BlkError(b) => Object::new()
            .str("kind", "blk_error")
            .u64("keyid", b.keyid)
            .u64("resid", b.resid.into()),
        _ => return None,
    })
}

/// One decoded frame as a JSON object (one line).
pub fn frame_json(f: &FrameInfo) -> String {
    let mut o = Object::new()
        .u64("index", f.index as u64)
        .u64("offset", f.offset as u64);
    o = header_json(o, &f.header, Some(f.order), true, true);
    o = o.u64("wire_bytes", f.wire_len as u64);
    match &f.body {
        Ok(b) => {
            if let Some(body) = body_json(b) {
                o = o.object("body", body);
            }
        }
        Err(e) => o = o.str("body_error", &e.to_string()),
    }
    if f.header.cmd.command() == Command::DbgShell && !f.aux.is_empty() {
        let body = f.aux.strip_suffix(&[0]).unwrap_or(&f.aux);
        o = o.str("text", &String::from_utf8_lossy(body));
    }
    o.finish()
}

/// The one-line summary printed on standard error in text mode.
pub fn summary(walk: &Walk, detected: Detected) -> String {
    let mut s = format!(
        "{}, {}, {} with aux",
        plural(walk.frames.len(), "frame"),
        plural(walk.input_len, "byte"),
        walk.frames_with_aux()
    );
    if detected == Detected::Hex {
        s.push_str(" (read as hex text)");
    }
    s
}

/// Why a stream is bad, ready to print as text or JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// `"decode"` for a decoder error, `"truncated"` for input that ends inside a frame.
    pub kind: &'static str,
    /// The protocol's error class, e.g. `"XCRC"` (`"EOF"` for truncated input).
    pub class: &'static str,
    /// The protocol's numeric receive error code.
    pub code: u32,
    /// What went wrong and where.
    pub message: String,
    /// What to do about it.
    pub hint: String,
    /// Offset of the frame that is bad or incomplete.
    pub offset: usize,
    /// Good frames before it.
    pub frames_before: usize,
    /// Bytes of the incomplete frame (truncated input only).
    pub partial_bytes: Option<usize>,
    /// Length the incomplete frame's header announces (truncated input only, if known).
    pub announced: Option<usize>,
    /// The rejected frame's header line and JSON, for CRC and sequence errors.
    pub rejected: Option<(String, Object)>,
}

/// True when `bytes` look like text: printable ASCII and whitespace only.
fn looks_like_text(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_graphic() || matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

const MAGIC_HINT: &str = "plaintext captures start with bytes 32 48 (48 32 from a big-endian \
                          sender); an encrypted link cannot be decoded";
const TEXT_HINT: &str = "; this input looks like text but is not plain hex: hex input may hold \
                         only hex digits and whitespace (no 0x prefixes, offsets or ASCII \
                         columns)";

impl Problem {
    /// The problem with `walk`, if the stream did not end cleanly. `bytes` is the decoded input.
    pub fn of(walk: &Walk, bytes: &[u8], detected: Detected) -> Option<Problem> {
        let k = walk.frames.len();
        match walk.end {
            StreamEnd::Clean => None,
            StreamEnd::Truncated {
                offset,
                bytes: n,
                announced,
            } => {
                let partial = bytes.get(offset..offset + n).unwrap_or(&[]);
                let mut message = format!(
                    "truncated: {} of an incomplete frame at offset {offset}",
                    plural(n, "byte")
                );
                let mut hint = String::new();
                let bad_magic = partial.len() >= 2
                    && !matches!(
                        u16::from_le_bytes([partial[0], partial[1]]),
                        0x4832 | 0x3248
                    );
                if let Some(total) = announced {
                    let _ = write!(message, " (its header announces {total} bytes)");
                }
                if bad_magic {
                    let _ = write!(
                        message,
                        "; its first bytes {:02x} {:02x} are not a DMSG magic either",
                        partial[0], partial[1]
                    );
                    hint.push_str(if offset == 0 {
                        "this is not a DMSG stream, or the peer uses an encrypted link; "
                    } else {
                        "the stream lost sync after the previous frame; "
                    });
                    hint.push_str(MAGIC_HINT);
                    if offset == 0 && detected == Detected::Raw && looks_like_text(partial) {
                        hint.push_str(TEXT_HINT);
                    }
                } else if k == 0 && partial.iter().all(u8::is_ascii_whitespace) {
                    hint.push_str(
                        "the input holds only whitespace, so it is neither hex text nor a DMSG \
                         stream: check that the capture was saved",
                    );
                } else if k == 0 {
                    hint.push_str(
                        "the input ends before its first frame is complete: the capture was cut \
                         short, or a hex copy lost its end",
                    );
                } else {
                    let _ = write!(
                        hint,
                        "the input ends in the middle of a frame: the capture was cut short, \
                         or a hex copy lost its end; the {} before it {} complete",
                        plural(k, "frame"),
                        if k == 1 { "is" } else { "are" }
                    );
                }
                Some(Problem {
                    kind: "truncated",
                    class: RecvErrorCode::Eof.name(),
                    code: RecvErrorCode::Eof.value(),
                    message,
                    hint,
                    offset,
                    frames_before: k,
                    partial_bytes: Some(n),
                    announced,
                    rejected: None,
                })
            }
            StreamEnd::Failed {
                error,
                offset,
                rejected,
                order,
            } => {
                let (message, hint) = describe(&error, offset, k, bytes, detected);
                let rejected = rejected.map(|h| rejected_lines(&error, k, offset, &h, order));
                Some(Problem {
                    kind: "decode",
                    class: error.code().name(),
                    code: error.code().value(),
                    message,
                    hint,
                    offset,
                    frames_before: k,
                    partial_bytes: None,
                    announced: None,
                    rejected,
                })
            }
        }
    }

    /// The lines printed on standard error in text mode.
    pub fn text_lines(&self) -> Vec<String> {
        let mut v = vec![format!("dmsg decode: error: {}", self.message)];
        if let Some((line, _)) = &self.rejected {
            v.push(format!("  rejected: {line}"));
        }
        v.push(format!("  hint: {}", self.hint));
        v
    }

    /// The final `{"error": {...}}` line of JSON mode.
    pub fn json(&self) -> String {
        let mut o = Object::new()
            .str("kind", self.kind)
            .str("class", self.class)
            .u64("code", self.code.into())
            .str("message", &self.message)
            .str("hint", &self.hint)
            .u64("offset", self.offset as u64)
            .u64("frames_before", self.frames_before as u64);
        if let Some(n) = self.partial_bytes {
            o = o.u64("bytes", n as u64);
        }
        if let Some(n) = self.announced {
            o = o.u64("announced", n as u64);
        }
        if let Some((_, rejected)) = &self.rejected {
            o = o.object("rejected", rejected.clone());
        }
        Object::new().object("error", o).finish()
    }
}

/// The rejected frame's header as a text line and a JSON object.
fn rejected_lines(
    error: &DecodeError,
    index: usize,
    offset: usize,
    h: &HeaderRepr,
    order: Option<ByteOrder>,
) -> (String, Object) {
    let aux_unchecked = if h.aux_bytes == 0 {
        Check::Ok
    } else {
        Check::Unchecked
    };
    let (hdr, aux, seq) = match *error {
        DecodeError::HeaderCrc { .. } => (Check::Bad, aux_unchecked, None),
        DecodeError::AuxCrc { .. } => (Check::Ok, Check::Bad, None),
        DecodeError::Sequence { expected, .. } => (Check::Ok, Check::Ok, Some(expected)),
        _ => (Check::Unchecked, aux_unchecked, None),
    };
    let line = header_line(index, offset, h, order, hdr, aux, seq);
    let mut o = Object::new()
        .u64("index", index as u64)
        .u64("offset", offset as u64);
    o = header_json(o, h, order, hdr == Check::Ok, aux == Check::Ok);
    if let Some(expected) = seq {
        o = o.u64("seq_expected", expected.into());
    }
    (line, o)
}

/// The message and the hint for a decoder error.
fn describe(
    error: &DecodeError,
    offset: usize,
    k: usize,
    bytes: &[u8],
    detected: Detected,
) -> (String, String) {
    let code = error.code();
    let at = format!(
        "in frame #{k} at offset {offset} ({} before it)",
        plural(k, "good frame")
    );
    match *error {
        DecodeError::BadMagic { magic } if offset == 0 => {
            let mut hint = String::from(MAGIC_HINT);
            if detected == Detected::Raw && looks_like_text(&bytes[..bytes.len().min(64)]) {
                hint.push_str(TEXT_HINT);
            }
            (
                format!(
                    "{code}: bad magic {magic:#06x} at offset 0: not a DMSG stream, or the \
                     peer uses an encrypted link"
                ),
                hint,
            )
        }
        DecodeError::BadMagic { magic } => (
            format!(
                "{code}: bad magic {magic:#06x} at offset {offset}, after {}: the stream \
                 lost sync",
                plural(k, "good frame")
            ),
            String::from(
                "bytes were lost or inserted after the previous frame, or the input joins two \
                 streams (e.g. both directions of a connection): decode each direction on its \
                 own",
            ),
        ),
        DecodeError::BadHeaderSize { .. } => (
            format!("{error}, {at}"),
            String::from(
                "no valid frame has this header size: the header is corrupt or the stream lost \
                 sync",
            ),
        ),
        DecodeError::AuxTooLarge { max, .. } => (
            format!("{error}, {at}"),
            if max as usize >= AUX_MAX {
                String::from(
                    "the protocol allows at most 1 MiB of aux data: the header is corrupt or \
                     the stream lost sync",
                )
            } else {
                format!(
                    "if the sender really sends this much aux data, raise --max-aux (at most \
                     {AUX_MAX}); otherwise the header is corrupt"
                )
            },
        ),
        DecodeError::HeaderCrc { .. } => (
            format!("{error}, {at}"),
            String::from(
                "the frame's header bytes changed after it was sent (a corrupt or edited \
                 capture, or a bit error); the frames before it are intact, and the rejected \
                 header's fields may be wrong",
            ),
        ),
        DecodeError::AuxCrc { .. } => (
            format!("{error}, {at}"),
            String::from(
                "the frame's aux data changed after it was sent (a corrupt or edited capture, \
                 or a bit error); its header is intact",
            ),
        ),
        DecodeError::Sequence { .. } => (
            format!("{error}, {at}"),
            String::from(
                "a frame was lost or injected just before this one, or the capture does not \
                 start at the connection's first frame; --no-seq skips this check",
            ),
        ),
        _ => (
            format!("{error}, {at}"),
            String::from("the stream cannot be decoded past this frame"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_labels_and_text() {
        assert_eq!(escape_bytes(b"a\"b\\c\n\t\r"), r#"a\"b\\c\n\t\r"#);
        assert_eq!(
            escape_bytes(b"\x00\x7f\xff caf\xc3\xa9"),
            r"\x00\x7f\xff café"
        );
    }

    #[test]
    fn shell_text_needs_printable_utf8() {
        assert_eq!(shell_text(b"tree\0"), Some("tree"));
        assert_eq!(shell_text(b"a\tb\n"), Some("a\tb\n"));
        assert_eq!(shell_text(b"a\0b\0"), None);
        assert_eq!(shell_text(b"\xff\0"), None);
        assert_eq!(shell_text(b"\x1b[1m"), None);
    }
}
