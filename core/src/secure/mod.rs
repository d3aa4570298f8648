//! The secure channel (feature `secure`): who may join, and nobody reads or forges frames.
//!
//! Sits between the socket bytes and the frame decoder. A Noise
//! `Noise_IK_25519_ChaChaPoly_BLAKE2s` handshake authenticates both static keys (the
//! initiator knows the responder's in advance; the responder learns the initiator's and
//! applies its policy), then the stream travels in length-prefixed ChaCha20-Poly1305 records
//! of at most [`MAX_RECORD_PLAINTEXT`] bytes with counter nonces and periodic rekeying. Any
//! flipped, dropped, reordered, replayed or truncated byte ends the channel with a typed
//! [`SecureError`] and a counter in [`SecureStats`]; a record that fails delivers nothing.
//!
//! Like the rest of the crate it is sans-IO and allocation-free: bytes and [`Instant`]s in,
//! bytes and events out, randomness from the caller's `rand_core` RNG, keys zeroized on drop.
//! The wire format and the design are in `spec/SECURE.md`.
//!
//! - [`keys`]: [`Keypair`], [`PublicKey`].
//! - [`noise`]: the IK handshake and Noise cipher states (checked against published vectors).
//! - [`SecureChannel`]: the channel a driver runs per connection.
//! - [`ResumeSecret`]: how a resumed session proves it is the same one.
//!
//! [`Instant`]: crate::time::Instant

mod channel;
mod error;
pub mod keys;
pub mod noise;
mod resume;
mod stats;

pub use channel::{
    SecureChannel, SecureConfig, SecureEvent, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_REKEY_AFTER,
    HANDSHAKE1_WIRE, HANDSHAKE2_WIRE, MAX_RECORD_PLAINTEXT, MAX_RECORD_WIRE, PROLOGUE, RECORD_FIN,
    RECORD_HEADER_LEN, RECORD_LEN_MASK,
};
pub use error::SecureError;
pub use keys::{Keypair, PublicKey, KEY_LEN};
pub use noise::Role;
/// The `rand_core` the channel's RNG parameters are written against, so a driver names the
/// same version (`dmsg_core::secure::rand_core::{CryptoRng, RngCore}`).
pub use rand_core;
pub use resume::ResumeSecret;
pub use stats::{SecureFailures, SecureStats};
