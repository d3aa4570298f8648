//! # dmsg-std
//!
//! The host side of dmsg: the `dmsg` command-line program, built on [`dmsg_core`].
//!
//! The program's subcommands live in modules here so they can be tested without a process:
//! - [`cli`]: subcommand dispatch, the shared argument reader and the top-level help.
//! - [`decode_cmd`]: `dmsg decode`, which walks a captured byte stream frame by frame.
//! - [`render`]: the text and JSON output of `dmsg decode`.
//! - [`hexin`]: reading input that is raw bytes or hex text.
//! - [`json`]: the small JSON writer behind `--json`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cli;
pub mod decode_cmd;
pub mod hexin;
pub mod json;
pub mod render;

/// Exit codes of the `dmsg` program.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The input is not a good DMSG stream (decode error, or it ends inside a frame).
    pub const BAD_STREAM: u8 = 1;
    /// Usage error, or the input could not be read.
    pub const USAGE: u8 = 2;
}
