//! # dmsg-core
//!
//! A sans-IO, `no_std`, allocation-free implementation of DMSG, the cluster-messaging protocol
//! of DragonFly BSD's HAMMER2 (64-byte CRC'd headers, CREATE/DELETE/REPLY/ABORT
//! transactions, LNK_CONN/LNK_SPAN route propagation), byte-compatible with DragonFly's own
//! `hammer2 service` daemon in plaintext mode.
//!
//! The crate consumes bytes and time values and produces bytes and events; it never touches a
//! socket, a clock, a thread or the heap, and every buffer has a size fixed by the caller.
//!
//! ## Layers
//! - [`wire`]: zero-copy views and plain `Repr`s of the base header and every extended header.
//! - [`decode`]: the incremental decoder (bytes in, verified frames out, typed errors).
//! - [`encode`]: the encoder (frames into caller buffers, whole or in pieces).
//! - [`crc`]: the pluggable CRC-32C.
//! - [`time`]: `Instant` and `Duration` as plain integers; the caller owns the clock.
//! - [`errcode`]: the protocol's numeric error codes.
//!
//! ## Example: a frame there and back
//! ```
//! use dmsg_core::crc::DefaultCrc;
//! use dmsg_core::decode::{Decoder, DecoderConfig};
//! use dmsg_core::encode::Encoder;
//! use dmsg_core::wire::{body::ConnRepr, Body, Cmd, Command, Flags, HeaderRepr, Label, MsgId};
//!
//! let conn = ConnRepr {
//!     peer_mask: u64::MAX,
//!     peer_type: 1,
//!     peer_label: Label::new("hub-1").unwrap(),
//!     ..ConnRepr::default()
//! };
//! let hdr = HeaderRepr::new(Cmd::new(Command::LnkConn, Flags::CREATE), MsgId(0x10));
//! let mut wire = [0u8; 384];
//! let n = Encoder::new(42).encode(&DefaultCrc::default(), &hdr, &Body::Conn(conn), &[], &mut wire).unwrap();
//!
//! let cfg = DecoderConfig { max_aux_bytes: 0, max_header_blocks: 8, check_sequence: true };
//! let mut dec = Decoder::new([0u8; 512], cfg, DefaultCrc::default()).unwrap();
//! let out = dec.decode(&wire[..n]).unwrap();
//! let frame = out.frame.unwrap();
//! assert_eq!(frame.repr().msgid, MsgId(0x10));
//! assert_eq!(frame.body().unwrap(), Body::Conn(conn));
//! ```
#![cfg_attr(not(any(test, feature = "arbitrary")), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod crc;
pub mod decode;
pub mod encode;
pub mod errcode;
pub mod link;
pub mod node;
#[cfg(feature = "secure")]
pub mod secure;
pub mod session;
pub mod span;
pub mod time;
pub mod wire;
