//! The secure-channel variant of the benchmark (`dmsg+secure`): plain DMSG inside Noise IK
//! records (`spec/SECURE.md`), the same engine, with the handshake run on the blocking socket
//! before the link starts. The key pairs are fixed benchmark keys (the cost does not depend
//! on which keys); ephemeral keys come from the operating system as in the real runtime.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant as WallClock};

use dmsg_core::secure::{
    Keypair, SecureChannel, SecureConfig, SecureError, SecureEvent, HANDSHAKE1_WIRE,
    HANDSHAKE2_WIRE, MAX_RECORD_WIRE,
};
use rand_core::{OsRng, TryRngCore};

use super::engine::EngineError;
use super::link_kind::socket_pair;
use super::stats::Samples;
use crate::clock::Clock;

fn initiator_keys() -> Keypair {
    Keypair::from_secret([0x11; 32])
}

fn responder_keys() -> Keypair {
    Keypair::from_secret([0x22; 32])
}

fn secure_err(e: SecureError) -> EngineError {
    EngineError::Link(format!("secure channel: {e}"))
}

/// Runs the handshake on blocking `stream` (the connecting end is the initiator); returns
/// the established channel.
pub fn handshake(stream: &mut TcpStream, initiator: bool) -> Result<SecureChannel, EngineError> {
    let clock = Clock::new();
    let mut rng = OsRng.unwrap_err();
    let cfg = SecureConfig::default();
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = [0u8; MAX_RECORD_WIRE];
    let ch = if initiator {
        let mut ch = SecureChannel::initiator(
            cfg,
            initiator_keys(),
            responder_keys().public(),
            clock.now(),
            &mut rng,
        )
        .map_err(secure_err)?;
        let n = ch.poll_transmit(&mut buf).map_err(secure_err)?;
        stream.write_all(&buf[..n])?;
        let mut msg2 = [0u8; HANDSHAKE2_WIRE];
        stream.read_exact(&mut msg2)?;
        ch.handle_input(clock.now(), &msg2).map_err(secure_err)?;
        ch
    } else {
        let mut ch = SecureChannel::responder(cfg, responder_keys(), clock.now(), &mut rng)
            .map_err(secure_err)?;
        let mut msg1 = [0u8; HANDSHAKE1_WIRE];
        stream.read_exact(&mut msg1)?;
        ch.handle_input(clock.now(), &msg1).map_err(secure_err)?;
        match ch.poll_event() {
            Some(SecureEvent::PeerHello { peer }) if peer == initiator_keys().public() => {
                ch.accept(clock.now()).map_err(secure_err)?;
            }
            other => {
                return Err(EngineError::Link(format!(
                    "unexpected handshake step: {other:?}"
                )))
            }
        }
        let n = ch.poll_transmit(&mut buf).map_err(secure_err)?;
        stream.write_all(&buf[..n])?;
        ch
    };
    if !ch.is_established() {
        return Err(EngineError::Link("the handshake did not finish".into()));
    }
    Ok(ch)
}

/// Seals `plain` into records appended to `out`.
pub fn seal(
    ch: &mut SecureChannel,
    mut plain: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), EngineError> {
    let mut rec = [0u8; MAX_RECORD_WIRE];
    loop {
        let taken = ch.send(plain).map_err(secure_err)?;
        plain = &plain[taken..];
        let n = ch.poll_transmit(&mut rec).map_err(secure_err)?;
        out.extend_from_slice(&rec[..n]);
        if plain.is_empty() && !ch.wants_transmit() {
            return Ok(());
        }
        if taken == 0 && n == 0 {
            return Err(secure_err(SecureError::Closed));
        }
    }
}

/// Opens records from `wire[..*len]` into `plain` (up to its end); what was used is removed
/// from the front of `wire` (`*len` shrinks). Returns the plaintext bytes written.
pub fn open(
    ch: &mut SecureChannel,
    wire: &mut [u8],
    len: &mut usize,
    plain: &mut [u8],
) -> Result<usize, EngineError> {
    let now = dmsg_core::time::Instant::ZERO;
    let (mut used, mut written) = (0, 0);
    while written < plain.len() {
        let p = ch.plaintext();
        if !p.is_empty() {
            let k = p.len().min(plain.len() - written);
            plain[written..written + k].copy_from_slice(&p[..k]);
            ch.consume(k);
            written += k;
            continue;
        }
        if used == *len {
            break;
        }
        let n = ch
            .handle_input(now, &wire[used..*len])
            .map_err(secure_err)?;
        if n == 0 {
            break;
        }
        used += n;
    }
    wire.copy_within(used..*len, 0);
    *len -= used;
    Ok(written)
}

/// `count` complete handshakes over fresh loopback connections, timed at the initiator
/// from its first byte to the established channel (two loopback crossings included).
pub fn handshake_times(listener: &TcpListener, count: usize) -> Result<Samples, String> {
    let mut samples = Samples::default();
    for _ in 0..count {
        let (mut c, mut s) = socket_pair(listener).map_err(|e| format!("loopback: {e}"))?;
        let server = std::thread::spawn(move || handshake(&mut s, false).map(|_| ()));
        let t = WallClock::now();
        let r = handshake(&mut c, true);
        let d = t.elapsed();
        server
            .join()
            .map_err(|_| "the handshake thread panicked".to_string())?
            .map_err(|e| e.to_string())?;
        r.map_err(|e| e.to_string())?;
        samples.push(d);
    }
    Ok(samples)
}
