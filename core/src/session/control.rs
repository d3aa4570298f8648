//! The session's control frames and its LNK_CONN negotiation fields.
//!
//! A control frame is a 64-byte LNK_PAD (one-way, "ignored by target") whose `reserved02`
//! carries [`CONTROL_TAG`] plus an opcode. See `spec/SESSION.md` for the byte table.

use crate::crc::Crc32c;
use crate::wire::body::ConnRepr;
use crate::wire::{ByteOrder, Cmd, Command, Flags, Header, HeaderRepr, MsgId, HEADER_LEN};

use super::seq::{pack_link_verifier, unpack_link_verifier, Seq};

/// Bit of [`ConnRepr::ext_offer`] that offers the reliable session, version 1. Both LNK_CONNs
/// must carry it (and a non-zero [`ConnRepr::session_id`]) for the session to run.
pub const SESSION_V1: u32 = 1 << 0;

/// High byte of `reserved02` that marks a LNK_PAD as a session control frame (ASCII `S`).
pub const CONTROL_TAG: u16 = 0x5300;

/// Offset of the header CRC in the base header.
const HDR_CRC_OFF: usize = 0x3C;

/// What a control frame asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum ControlOp {
    /// Acknowledgement only (unsequenced): "I expect `ack` next".
    Ack = 1,
    /// End of the sender's frames (sequenced like data).
    Fin = 2,
    /// First frame on a new transport: "resume session (sender, receiver); I expect `ack`".
    Resume = 3,
    /// Answer to a recognised RESUME: "resumed; I expect `ack`".
    ResumeOk = 4,
    /// "I have no such session" (or "I abandoned it"): the receiver's session ends.
    Reset = 5,
}

impl ControlOp {
    /// The opcode of `reserved02`'s low byte, if it is one.
    pub const fn from_u8(v: u8) -> Option<ControlOp> {
        match v {
            1 => Some(ControlOp::Ack),
            2 => Some(ControlOp::Fin),
            3 => Some(ControlOp::Resume),
            4 => Some(ControlOp::ResumeOk),
            5 => Some(ControlOp::Reset),
            _ => None,
        }
    }

    /// The protocol's name (`"RESUME_OK"`).
    pub const fn name(self) -> &'static str {
        match self {
            ControlOp::Ack => "ACK",
            ControlOp::Fin => "FIN",
            ControlOp::Resume => "RESUME",
            ControlOp::ResumeOk => "RESUME_OK",
            ControlOp::Reset => "RESET",
        }
    }
}

/// A session control frame as plain values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ControlFrame {
    /// The request.
    pub op: ControlOp,
    /// The sender's session identity (`aux_descr`).
    pub sender_id: u64,
    /// The receiver's session identity as the sender knows it (`msgid`).
    pub receiver_id: u64,
    /// Sequence number: only FIN has one.
    pub seq: Option<Seq>,
    /// The sequence number the sender expects next from the receiver (cumulative ack).
    pub ack: Option<Seq>,
}

/// Why a LNK_PAD that carries [`CONTROL_TAG`] is not a valid control frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ControlError {
    /// The opcode byte is not one of [`ControlOp`].
    UnknownOp(u8),
    /// A FIN without a sequence number.
    FinWithoutSeq,
}

impl ControlFrame {
    /// Classifies a received header: `None` if it is not a session control frame (an ordinary
    /// frame, to be sequenced like any other), otherwise the parsed frame or why it is bad.
    pub fn parse(h: &HeaderRepr) -> Option<Result<ControlFrame, ControlError>> {
        if h.cmd.command() != Command::LnkPad || h.reserved02 & 0xFF00 != CONTROL_TAG {
            return None;
        }
        let code = (h.reserved02 & 0xFF) as u8;
        let Some(op) = ControlOp::from_u8(code) else {
            return Some(Err(ControlError::UnknownOp(code)));
        };
        let (seq, ack) = unpack_link_verifier(h.link_verifier);
        if op == ControlOp::Fin && seq.is_none() {
            return Some(Err(ControlError::FinWithoutSeq));
        }
        // Only FIN occupies a sequence number; a stray one on another op is ignored.
        let seq = if op == ControlOp::Fin { seq } else { None };
        Some(Ok(ControlFrame {
            op,
            sender_id: h.aux_descr,
            receiver_id: h.msgid.0,
            seq,
            ack,
        }))
    }

    /// The base header that carries this frame (salt and CRC left 0).
    pub fn header(&self) -> HeaderRepr {
        HeaderRepr {
            reserved02: CONTROL_TAG | self.op as u16,
            msgid: MsgId(self.receiver_id),
            link_verifier: pack_link_verifier(self.seq, self.ack),
            aux_descr: self.sender_id,
            ..HeaderRepr::new(Cmd::new(Command::LnkPad, Flags::empty()), MsgId(0))
        }
    }

    /// Writes the whole 64-byte frame (little-endian) with `salt` and its header CRC.
    pub fn emit<C: Crc32c>(&self, crc: &C, salt: u32, out: &mut [u8; HEADER_LEN]) {
        out.fill(0);
        let repr = HeaderRepr {
            salt,
            ..self.header()
        };
        repr.emit(&mut Header::new_unchecked(&mut out[..], ByteOrder::Little));
        let sum = crc.checksum(&out[..]);
        out[HDR_CRC_OFF..HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
    }

    /// The RESET that answers this RESUME (or any control frame) when the receiver has no such
    /// session: the identities swapped, no sequence or ack.
    pub fn reset_reply(&self) -> ControlFrame {
        ControlFrame {
            op: ControlOp::Reset,
            sender_id: self.receiver_id,
            receiver_id: self.sender_id,
            seq: None,
            ack: None,
        }
    }
}

/// For a node that has **no** session for a received RESUME (it restarted, or the session
/// already ended): writes the RESET to send back into `out` and returns its length (64), or
/// `None` if `resume` is not a RESUME. `salt` is the frame's salt: the number of frames
/// already sent on this transport in the low byte (normally 0: the RESET is the first).
///
/// ```
/// use dmsg_core::crc::DefaultCrc;
/// use dmsg_core::session::{stateless_reset, ControlFrame, ControlOp};
/// let resume = ControlFrame { op: ControlOp::Resume, sender_id: 7, receiver_id: 9, seq: None, ack: None };
/// let mut out = [0u8; 64];
/// assert_eq!(stateless_reset(&DefaultCrc::default(), &resume.header(), 0, &mut out), Some(64));
/// ```
pub fn stateless_reset<C: Crc32c>(
    crc: &C,
    resume: &HeaderRepr,
    salt: u32,
    out: &mut [u8; HEADER_LEN],
) -> Option<usize> {
    match ControlFrame::parse(resume) {
        Some(Ok(f)) if f.op == ControlOp::Resume => {
            f.reset_reply().emit(crc, salt, out);
            Some(HEADER_LEN)
        }
        _ => None,
    }
}

/// The session identity a LNK_CONN offers, if it offers [`SESSION_V1`] with a non-zero id.
pub const fn offered_session(conn: &ConnRepr) -> Option<u64> {
    if conn.ext_offer & SESSION_V1 != 0 && conn.session_id != 0 {
        Some(conn.session_id)
    } else {
        None
    }
}

/// Whether a link runs the session: `Some((our_id, peer_id))` when both our LNK_CONN and the
/// peer's offer it. A DragonFly peer sends zero in both fields, so this is `None` there.
pub const fn negotiate(ours: &ConnRepr, theirs: &ConnRepr) -> Option<(u64, u64)> {
    match (offered_session(ours), offered_session(theirs)) {
        (Some(a), Some(b)) => Some((a, b)),
        _ => None,
    }
}

/// Rewrites the per-transmission fields of a stored frame in place: the salt's low byte
/// (`counter`), `link_verifier`, and the header CRC. The aux data and its CRC are untouched.
/// `frame` must be a frame the session validated on [`super::Session::send`].
pub(crate) fn stamp<C: Crc32c>(crc: &C, frame: &mut [u8], counter: u8, link_verifier: u64) {
    let Ok(mut h) = Header::new_checked(&mut *frame) else {
        debug_assert!(false, "stamping a frame that was validated on send");
        return;
    };
    let hlen = h.cmd().header_len();
    let order = h.byte_order();
    let salt = (h.salt() & 0xFFFF_FF00) | counter as u32;
    h.set_salt(salt);
    h.set_link_verifier(link_verifier);
    // Zero the field and sum the header in one piece (no short tails for the table CRC).
    h.set_hdr_crc(0);
    let ext = h.into_inner();
    let sum = crc.checksum(&ext[..hlen]);
    Header::new_unchecked(&mut ext[..], order).set_hdr_crc(sum);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crc::DefaultCrc;
    use crate::decode::{Decoder, DecoderConfig};
    use crate::encode::Encoder;
    use crate::wire::Body;

    const CFG: DecoderConfig = DecoderConfig {
        max_aux_bytes: 1024,
        max_header_blocks: 8,
        check_sequence: true,
    };

    #[test]
    fn control_frames_round_trip_through_the_decoder() {
        let c = DefaultCrc::default();
        let f = ControlFrame {
            op: ControlOp::Fin,
            sender_id: 0xAAAA_BBBB_CCCC_DDDD,
            receiver_id: 0x1111_2222_3333_4444,
            seq: Seq::new(5),
            ack: Seq::new(u32::MAX),
        };
        let mut out = [0u8; 64];
        f.emit(&c, 0x1234_5600, &mut out);
        let mut d = Decoder::new([0u8; 2048], CFG, c).unwrap();
        let frame = d.decode(&out).unwrap().frame.unwrap();
        let h = frame.repr();
        assert_eq!(h.cmd.command(), Command::LnkPad);
        assert_eq!(h.reserved02, 0x5302);
        assert_eq!(h.link_verifier, 0xFFFF_FFFF_0000_0005);
        assert_eq!(ControlFrame::parse(&h), Some(Ok(f)));
        assert_eq!(f.reset_reply().receiver_id, f.sender_id);
    }

    #[test]
    fn plain_pads_and_other_commands_are_not_control_frames() {
        let pad = HeaderRepr::new(Cmd::new(Command::LnkPad, Flags::empty()), MsgId(0));
        assert_eq!(ControlFrame::parse(&pad), None);
        let ping = HeaderRepr {
            reserved02: 0x5301,
            ..HeaderRepr::new(Cmd::new(Command::LnkPing, Flags::empty()), MsgId(0))
        };
        assert_eq!(ControlFrame::parse(&ping), None);
        let bad = HeaderRepr {
            reserved02: 0x5399,
            ..pad
        };
        assert_eq!(
            ControlFrame::parse(&bad),
            Some(Err(ControlError::UnknownOp(0x99)))
        );
        let fin = HeaderRepr {
            reserved02: 0x5302,
            ..pad
        };
        assert_eq!(
            ControlFrame::parse(&fin),
            Some(Err(ControlError::FinWithoutSeq))
        );
    }

    #[test]
    fn stamping_keeps_the_frame_valid_in_both_byte_orders() {
        let c = DefaultCrc::default();
        for order in [ByteOrder::Little, ByteOrder::Big] {
            let mut enc = Encoder::with_byte_order(3, order);
            let h = HeaderRepr::new(Cmd::new(Command::DbgShell, Flags::empty()), MsgId(9));
            let mut buf = [0u8; 256];
            let n = enc.encode(&c, &h, &Body::None, b"abc", &mut buf).unwrap();
            let lv = pack_link_verifier(Seq::new(3), Seq::new(8));
            stamp(&c, &mut buf[..n], 0, lv);
            let mut d = Decoder::new([0u8; 4096], CFG, c).unwrap();
            let f = d.decode(&buf[..n]).unwrap().frame.unwrap();
            assert_eq!(f.repr().link_verifier, lv);
            assert_eq!(f.repr().salt & 0xFF, 0);
            assert_eq!(f.aux(), b"abc");
        }
    }

    #[test]
    fn negotiation_needs_both_offers_and_ids() {
        let dfly = ConnRepr::default();
        let ours = ConnRepr {
            ext_offer: SESSION_V1,
            session_id: 5,
            ..ConnRepr::default()
        };
        assert_eq!(negotiate(&ours, &dfly), None);
        let no_id = ConnRepr {
            session_id: 0,
            ..ours
        };
        assert_eq!(negotiate(&ours, &no_id), None);
        let theirs = ConnRepr {
            session_id: 6,
            ..ours
        };
        assert_eq!(negotiate(&ours, &theirs), Some((5, 6)));
    }
}
