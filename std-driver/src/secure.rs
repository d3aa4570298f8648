//! The secure channel on the std driver's connections (`spec/SECURE.md`): the node's key
//! pair and keys directory ([`SecureSetup`]), the per-connection glue between socket bytes
//! and the DMSG byte stream (`SecureWire`), and the counters a runtime keeps
//! ([`SecureCounters`]).
//!
//! # Who is who
//! - **Our key pair** is `DIR/<name>.key` (and `.pub`), `<name>` being the node's label
//!   (`hub` for `dmsg hub`), written by `dmsg keygen --dir DIR --name <name>`.
//! - **Dialling** (Noise initiator), the peer is named by `--peer NAME`, by default the host
//!   part of the address as given (`hub1` for `hub1:987`, `10.0.0.5` for `10.0.0.5`), like
//!   DragonFly's per-host files: `DIR/NAME.pub` = the peer must prove that key,
//!   `DIR/NAME.none` = plaintext DMSG, neither = refused before a byte is sent (logged,
//!   counted in [`SecureCounters::dial_refused`], retried with backoff).
//! - **Accepting** (Noise responder): `DIR/<peer ip>.none` keeps that address plaintext
//!   (a DragonFly host); every other connection must run the handshake, and the initiator's
//!   authenticated static key must be in some `DIR/*.pub` ([`KeysDir::find_key`]), else it is
//!   refused (`PeerRefused`, logged with the key). At most
//!   [`SecureSetup::max_half_open`] accepted connections may be in their handshake at once;
//!   further ones are closed at accept and counted in
//!   [`SecureCounters::half_open_refused`] (established links are not affected).

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::path::Path;

use dmsg_core::secure::{
    Keypair, PublicKey, SecureChannel, SecureConfig, SecureError, SecureFailures, HANDSHAKE2_WIRE,
    MAX_RECORD_WIRE,
};
use dmsg_core::time::Instant;
use rand_core::{OsRng, TryRngCore};

use crate::keys::{load_secret, KeyError, KeysDir, PeerPolicy, RefuseReason};

/// Accepted connections that may be in their handshake at once unless told otherwise.
pub const DEFAULT_MAX_HALF_OPEN: usize = 64;

/// A node's secure-channel settings: its key pair, its keys directory, the channel
/// settings and the bound on half-open handshakes.
#[derive(Clone)]
pub struct SecureSetup {
    keys: KeysDir,
    local: Keypair,
    /// Handshake deadline and rekey interval of every channel.
    pub config: SecureConfig,
    /// Accepted connections that may be in their handshake at once.
    pub max_half_open: usize,
}

impl std::fmt::Debug for SecureSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureSetup")
            .field("keys", &self.keys.path())
            .field("public", &self.local.public())
            .field("config", &self.config)
            .field("max_half_open", &self.max_half_open)
            .finish()
    }
}

/// How an accepted connection starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AcceptAs {
    /// `<ip>.none`: plaintext DMSG.
    Plaintext,
    /// The handshake; the initiator's key decides.
    Secure,
    /// Refused at once, with the reason.
    Refuse(String),
}

impl SecureSetup {
    /// Our key pair is `dir/<name>.key`; the directory's `.pub` / `.none` files are the
    /// per-peer policy. The errors say what is wrong and what to do (e.g. run
    /// `dmsg keygen`).
    pub fn load(dir: &Path, name: &str) -> Result<SecureSetup, String> {
        let keys = KeysDir::open(dir).map_err(|e| {
            format!(
                "keys directory {e}; create it and a key pair with `dmsg keygen --dir {} --name {name}`",
                dir.display()
            )
        })?;
        let path = dir.join(format!("{name}.key"));
        let local = match load_secret(&path) {
            Ok(k) => k,
            Err(KeyError::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "{}: no such key file; create this node's key pair with `dmsg keygen --dir {} --name {name}`",
                    path.display(),
                    dir.display()
                ))
            }
            Err(e) => return Err(e.to_string()),
        };
        let mut probe = [0u8; 32];
        OsRng.try_fill_bytes(&mut probe).map_err(|e| {
            format!("no operating-system randomness for the secure channel's ephemeral keys: {e}")
        })?;
        Ok(SecureSetup::new(keys, local))
    }

    /// A setup from a keys directory and our key pair, with default settings.
    pub fn new(keys: KeysDir, local: Keypair) -> SecureSetup {
        SecureSetup {
            keys,
            local,
            config: SecureConfig::default(),
            max_half_open: DEFAULT_MAX_HALF_OPEN,
        }
    }

    /// Our public key.
    pub fn public(&self) -> PublicKey {
        self.local.public()
    }

    /// The keys directory.
    pub fn keys(&self) -> &KeysDir {
        &self.keys
    }

    /// The dialler's policy for the peer named `peer`: `Ok(Some(key))` = secure channel with
    /// that key, `Ok(None)` = plaintext, `Err(reason)` = refuse (the reason says what to do).
    pub fn dial_policy(&self, peer: &str) -> Result<Option<PublicKey>, String> {
        let dir = self.keys.path().display();
        match self.keys.policy(peer) {
            Ok(PeerPolicy::Use(k)) => Ok(Some(k)),
            Ok(PeerPolicy::Plaintext) => Ok(None),
            Ok(PeerPolicy::Refuse(RefuseReason::NoKeyFile)) => Err(format!(
                "no {dir}/{peer}.pub or {dir}/{peer}.none: copy the peer's public key (its `dmsg keygen` .pub file) to {dir}/{peer}.pub, or create {dir}/{peer}.none for plaintext; --peer NAME picks another name"
            )),
            Ok(PeerPolicy::Refuse(r)) => Err(format!("peer '{peer}' in {dir}: {r}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// How a connection accepted from `ip` starts.
    pub(crate) fn accept_policy(&self, ip: IpAddr) -> AcceptAs {
        match self.keys.policy(&ip.to_string()) {
            Ok(PeerPolicy::Plaintext) => AcceptAs::Plaintext,
            Ok(PeerPolicy::Use(_)) | Ok(PeerPolicy::Refuse(RefuseReason::NoKeyFile)) => {
                AcceptAs::Secure
            }
            Ok(PeerPolicy::Refuse(r)) => AcceptAs::Refuse(format!("{ip}: {r}")),
            Err(e) => AcceptAs::Refuse(e.to_string()),
        }
    }

    /// The name of the peer holding `key`, if a `.pub` file in the directory holds it.
    pub(crate) fn who(&self, key: &PublicKey) -> Result<Option<String>, KeyError> {
        self.keys.find_key(key)
    }

    /// A channel for a connection we dialled to the holder of `remote`.
    pub(crate) fn initiator(
        &self,
        remote: PublicKey,
        now: Instant,
    ) -> Result<SecureWire, SecureError> {
        let ch = SecureChannel::initiator(
            self.config,
            self.local.clone(),
            remote,
            now,
            &mut OsRng.unwrap_err(),
        )?;
        Ok(SecureWire::new(ch))
    }

    /// A channel for an accepted connection.
    pub(crate) fn responder(&self, now: Instant) -> Result<SecureWire, SecureError> {
        let ch = SecureChannel::responder(
            self.config,
            self.local.clone(),
            now,
            &mut OsRng.unwrap_err(),
        )?;
        Ok(SecureWire::new(ch))
    }
}

/// Runs the initiator's handshake on a blocking, connected `stream` to the peer named
/// `peer` in the keys directory (for the single-link runtime of `dmsg shell` and
/// `dmsg tree`). `Ok(None)`: the directory says plaintext (`peer.none`). Errors say what
/// is wrong and what to do.
pub fn dial_handshake(
    stream: &mut TcpStream,
    setup: &SecureSetup,
    peer: &str,
) -> Result<Option<SecureChannel>, String> {
    let Some(key) = setup.dial_policy(peer)? else {
        return Ok(None);
    };
    let clock = crate::clock::Clock::new();
    let mut ch = setup
        .initiator(key, clock.now())
        .map_err(|e| format!("cannot start the secure channel: {e}"))?
        .ch;
    let io_err = |e: std::io::Error| {
        format!("the secure handshake with '{peer}' did not finish: {e}; does the peer run with --keys and hold our public key?")
    };
    let mut buf = [0u8; MAX_RECORD_WIRE];
    let n = ch.poll_transmit(&mut buf).map_err(|e| e.to_string())?;
    stream.write_all(&buf[..n]).map_err(io_err)?;
    let timeout = crate::clock::to_std(setup.config.handshake_timeout);
    stream
        .set_read_timeout(Some(timeout.max(std::time::Duration::from_millis(1))))
        .map_err(io_err)?;
    let mut msg2 = [0u8; HANDSHAKE2_WIRE];
    stream.read_exact(&mut msg2).map_err(io_err)?;
    stream.set_read_timeout(None).map_err(io_err)?;
    ch.handle_input(clock.now(), &msg2).map_err(|e| {
        format!("the secure handshake with '{peer}' failed: {e}; is {peer}.pub the peer's current public key?")
    })?;
    if !ch.is_established() {
        return Err(format!("the secure handshake with '{peer}' did not finish"));
    }
    Ok(Some(*ch))
}

/// What a runtime counts about its secure channels (in
/// [`Status::secure`](crate::node::Status::secure)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SecureCounters {
    /// Handshakes completed.
    pub handshakes: u64,
    /// Channel failures by kind, summed over channels (`peer_refused`: an authenticated key
    /// no `.pub` file holds; `handshake_timeout`: a handshake that never finished; ...).
    pub failures: SecureFailures,
    /// Accepted connections closed at once because
    /// [`SecureSetup::max_half_open`] handshakes were already running.
    pub half_open_refused: u64,
    /// Accepted connections refused by the keys directory before any handshake
    /// (`<ip>.pub` and `<ip>.none` both, a key file that does not parse).
    pub accept_refused: u64,
    /// Dials refused by the keys directory (no `<peer>.pub` or `<peer>.none`, ...).
    pub dial_refused: u64,
    /// Session resumes refused: the new connection's authenticated static key is not the one
    /// the session was created with (or one is plaintext and the other not).
    pub resume_refused: u64,
    /// Accepted connections in their handshake now.
    pub half_open: usize,
}

impl SecureCounters {
    /// Adds one channel's failure counters.
    pub(crate) fn add_failures(&mut self, f: &SecureFailures) {
        let t = &mut self.failures;
        t.handshake_timeout += f.handshake_timeout;
        t.handshake_malformed += f.handshake_malformed;
        t.handshake_auth += f.handshake_auth;
        t.weak_key += f.weak_key;
        t.peer_refused += f.peer_refused;
        t.record_too_large += f.record_too_large;
        t.record_malformed += f.record_malformed;
        t.record_auth += f.record_auth;
        t.truncated += f.truncated;
        t.data_after_close += f.data_after_close;
        t.nonce_exhausted += f.nonce_exhausted;
    }
}

/// One connection's secure channel and the ciphertext that waits for it.
pub(crate) struct SecureWire {
    pub ch: Box<SecureChannel>,
    /// Received ciphertext not yet taken by the channel.
    pub raw_in: Vec<u8>,
    /// Whether the channel's failure was reported (counted) already.
    pub reported: bool,
}

impl SecureWire {
    fn new(ch: SecureChannel) -> SecureWire {
        SecureWire {
            ch: Box::new(ch),
            raw_in: Vec::new(),
            reported: false,
        }
    }

    /// Feeds waiting ciphertext to the channel and appends authenticated plaintext to
    /// `plain` while it holds less than `cap` bytes. True when something moved.
    pub fn decrypt(
        &mut self,
        now: Instant,
        plain: &mut Vec<u8>,
        cap: usize,
    ) -> Result<bool, SecureError> {
        let mut moved = false;
        while plain.len() < cap {
            let p = self.ch.plaintext();
            if !p.is_empty() {
                let n = p.len().min(cap - plain.len());
                plain.extend_from_slice(&p[..n]);
                self.ch.consume(n);
                moved = true;
                continue;
            }
            if self.raw_in.is_empty() {
                break;
            }
            let used = self.ch.handle_input(now, &self.raw_in)?;
            if used == 0 {
                break;
            }
            self.raw_in.drain(..used);
            moved = true;
        }
        Ok(moved)
    }

    /// Seals `plain` into records; `sink` gets the ciphertext.
    pub fn encrypt(
        &mut self,
        mut plain: &[u8],
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<(), SecureError> {
        let mut rec = [0u8; MAX_RECORD_WIRE];
        loop {
            let n = self.ch.send(plain)?;
            plain = &plain[n..];
            let m = self.ch.poll_transmit(&mut rec)?;
            if m > 0 {
                sink(&rec[..m]);
            }
            if plain.is_empty() && !self.ch.wants_transmit() {
                return Ok(());
            }
            if n == 0 && m == 0 {
                // Nothing can move (handshake not done): cannot happen for a linked socket.
                return Err(SecureError::Closed);
            }
        }
    }

    /// Hands what the channel wants to send (handshake messages, a FIN record) to `sink`.
    pub fn flush(&mut self, sink: &mut dyn FnMut(&[u8])) -> Result<(), SecureError> {
        let mut rec = [0u8; MAX_RECORD_WIRE];
        while self.ch.wants_transmit() {
            let m = self.ch.poll_transmit(&mut rec)?;
            if m == 0 {
                break;
            }
            sink(&rec[..m]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::write_keypair;

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("dmsg-secure-unit-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn dial_policy_names_the_files_to_create_and_accept_policy_keeps_none_addresses_plaintext() {
        let d = temp_dir("policy");
        write_keypair(&d, "me", &Keypair::from_secret([1; 32]), false).unwrap();
        write_keypair(&d, "hub", &Keypair::from_secret([2; 32]), false).unwrap();
        std::fs::write(d.join("10.0.0.9.none"), "").unwrap();
        std::fs::write(d.join("10.0.0.7.none"), "").unwrap();
        std::fs::copy(d.join("hub.pub"), d.join("10.0.0.7.pub")).unwrap();
        let s = SecureSetup::load(&d, "me").unwrap();
        assert_eq!(
            s.dial_policy("hub").unwrap(),
            Some(Keypair::from_secret([2; 32]).public())
        );
        assert_eq!(s.dial_policy("10.0.0.9").unwrap(), None);
        let e = s.dial_policy("nobody").unwrap_err();
        assert!(e.contains("nobody.pub") && e.contains("nobody.none"), "{e}");
        assert_eq!(
            s.accept_policy("10.0.0.9".parse().unwrap()),
            AcceptAs::Plaintext
        );
        assert_eq!(
            s.accept_policy("10.0.0.1".parse().unwrap()),
            AcceptAs::Secure
        );
        assert!(matches!(
            s.accept_policy("10.0.0.7".parse().unwrap()),
            AcceptAs::Refuse(_)
        ));
        let e = SecureSetup::load(&d, "other").unwrap_err();
        assert!(
            e.contains("dmsg keygen --dir") && e.contains("--name other"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn wires_carry_bytes_through_records_and_a_flipped_bit_delivers_nothing() {
        let d = temp_dir("wire");
        write_keypair(&d, "a", &Keypair::from_secret([3; 32]), false).unwrap();
        write_keypair(&d, "b", &Keypair::from_secret([4; 32]), false).unwrap();
        let (sa, sb) = (
            SecureSetup::load(&d, "a").unwrap(),
            SecureSetup::load(&d, "b").unwrap(),
        );
        let now = Instant::ZERO;
        let mut a = sa.initiator(sb.public(), now).unwrap();
        let mut b = sb.responder(now).unwrap();
        let mut wire = Vec::new();
        a.flush(&mut |c| wire.extend_from_slice(c)).unwrap();
        b.raw_in.append(&mut wire);
        let mut plain = Vec::new();
        b.decrypt(now, &mut plain, 1 << 16).unwrap();
        let Some(dmsg_core::secure::SecureEvent::PeerHello { peer }) = b.ch.poll_event() else {
            panic!("no PeerHello")
        };
        assert_eq!(sb.who(&peer).unwrap().as_deref(), Some("a"));
        b.ch.accept(now).unwrap();
        b.flush(&mut |c| wire.extend_from_slice(c)).unwrap();
        a.raw_in.append(&mut wire);
        a.decrypt(now, &mut plain, 1 << 16).unwrap();
        assert!(a.ch.is_established() && b.ch.is_established());
        // 5000 bytes: three records.
        let msg: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        a.encrypt(&msg, &mut |c| wire.extend_from_slice(c)).unwrap();
        assert_eq!(wire.len(), 5000 + 3 * 18);
        b.raw_in.extend_from_slice(&wire);
        b.decrypt(now, &mut plain, 1 << 16).unwrap();
        assert_eq!(plain, msg);
        // The same again with one bit flipped in the last record: the first two arrive,
        // the third fails and delivers nothing.
        plain.clear();
        wire.clear();
        a.encrypt(&msg, &mut |c| wire.extend_from_slice(c)).unwrap();
        let n = wire.len();
        wire[n - 20] ^= 0x10;
        b.raw_in.extend_from_slice(&wire);
        assert_eq!(
            b.decrypt(now, &mut plain, 1 << 16),
            Err(SecureError::RecordAuth)
        );
        assert_eq!(plain, &msg[..4096]);
        let _ = std::fs::remove_dir_all(&d);
    }
}
