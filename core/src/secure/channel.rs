//! [`SecureChannel`]: the sans-IO secure channel between socket bytes and the frame decoder.

use heapless::Deque;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroize;

use super::error::SecureError;
use super::keys::{Keypair, PublicKey};
use super::noise::{
    IkHandshake, NoiseError, Role, Transport, MSG1_OVERHEAD, MSG2_OVERHEAD, TAG_LEN,
};
use super::resume::ResumeSecret;
use super::stats::SecureStats;
use crate::time::{Duration, Instant};

/// Largest plaintext carried by one record.
pub const MAX_RECORD_PLAINTEXT: usize = 2048;
/// Bytes of the record header (big-endian `u16`: FIN bit and ciphertext length).
pub const RECORD_HEADER_LEN: usize = 2;
/// Largest record on the wire: header, plaintext bound and tag.
pub const MAX_RECORD_WIRE: usize = RECORD_HEADER_LEN + MAX_RECORD_PLAINTEXT + TAG_LEN;
/// The FIN bit of a record header: the sender's authenticated close.
pub const RECORD_FIN: u16 = 0x8000;
/// Mask of the length bits of a record header.
pub const RECORD_LEN_MASK: u16 = 0x7FFF;
/// Length of handshake message 1 on the wire, header included (empty payload).
pub const HANDSHAKE1_WIRE: usize = RECORD_HEADER_LEN + MSG1_OVERHEAD;
/// Length of handshake message 2 on the wire, header included (empty payload).
pub const HANDSHAKE2_WIRE: usize = RECORD_HEADER_LEN + MSG2_OVERHEAD;
/// The Noise prologue: binds the handshake to this protocol and its version.
pub const PROLOGUE: &[u8] = b"dmsg-rs secure channel v1";
/// Default number of records per key and direction before a rekey.
pub const DEFAULT_REKEY_AFTER: u64 = 1 << 20;
/// Default handshake deadline (DragonFly allows its key exchange 10 seconds, too).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of a [`SecureChannel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SecureConfig {
    /// The handshake must complete within this time from construction.
    pub handshake_timeout: Duration,
    /// Records per key and direction before both sides rekey (1 ..= 2^63; nonces restart at
    /// 0 under the new key, so a (key, nonce) pair never repeats).
    pub rekey_after: u64,
}

impl Default for SecureConfig {
    fn default() -> Self {
        SecureConfig {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            rekey_after: DEFAULT_REKEY_AFTER,
        }
    }
}

impl SecureConfig {
    fn validate(&self) -> Result<(), SecureError> {
        if self.rekey_after == 0 || self.rekey_after > 1 << 63 {
            return Err(SecureError::InvalidConfig);
        }
        Ok(())
    }
}

/// What the channel reports to its driver, from [`SecureChannel::poll_event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SecureEvent {
    /// Responder only: the initiator proved it holds the static key `peer`. The driver
    /// applies its policy and calls [`SecureChannel::accept`] or [`SecureChannel::refuse`].
    PeerHello {
        /// The initiator's static public key.
        peer: PublicKey,
    },
    /// The handshake is complete; records flow.
    Established {
        /// The peer's authenticated static public key.
        peer: PublicKey,
    },
    /// The peer closed its sending direction with an authenticated FIN record.
    PeerClosed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Handshake,
    AwaitApproval,
    Established,
    Failed(SecureError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LocalFin {
    Open,
    Requested,
    Sent,
}

/// One end of a secure channel: a Noise IK handshake, then length-prefixed
/// ChaCha20-Poly1305 records with counter nonces. Sans-IO and allocation-free; about
/// `2 * MAX_RECORD_WIRE` bytes of buffers.
///
/// Ciphertext goes in with [`handle_input`](Self::handle_input) and out with
/// [`poll_transmit`](Self::poll_transmit); plaintext comes out with
/// [`plaintext`](Self::plaintext) / [`consume`](Self::consume) (or [`recv`](Self::recv)) and
/// goes in with [`send`](Self::send). Time is passed in; the handshake has a deadline
/// ([`poll_timeout`](Self::poll_timeout)). Any error ends the channel for good.
///
/// ```
/// use dmsg_core::secure::{Keypair, SecureChannel, SecureConfig, SecureEvent};
/// use dmsg_core::time::Instant;
/// # struct Rng(u64);
/// # impl rand_core::RngCore for Rng {
/// #     fn next_u32(&mut self) -> u32 { self.next_u64() as u32 }
/// #     fn next_u64(&mut self) -> u64 { self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); self.0 >> 11 }
/// #     fn fill_bytes(&mut self, d: &mut [u8]) { for b in d { *b = self.next_u64() as u8 } }
/// # }
/// # impl rand_core::CryptoRng for Rng {}
/// # let mut rng = Rng(1); // stands for the driver's cryptographic RNG
/// let now = Instant::ZERO;
/// let (leaf_keys, hub_keys) = (Keypair::generate(&mut rng), Keypair::generate(&mut rng));
/// let leaf_pub = leaf_keys.public();
/// let mut leaf = SecureChannel::initiator(SecureConfig::default(), leaf_keys, hub_keys.public(), now, &mut rng)?;
/// let mut hub = SecureChannel::responder(SecureConfig::default(), hub_keys, now, &mut rng)?;
///
/// let mut wire = [0u8; 4096];
/// let n = leaf.poll_transmit(&mut wire)?;
/// assert_eq!(hub.handle_input(now, &wire[..n])?, n);
/// // The hub's policy decides on the authenticated static key of the leaf.
/// assert_eq!(hub.poll_event(), Some(SecureEvent::PeerHello { peer: leaf_pub }));
/// hub.accept(now)?;
/// let n = hub.poll_transmit(&mut wire)?;
/// leaf.handle_input(now, &wire[..n])?;
/// assert!(leaf.is_established() && hub.is_established());
///
/// leaf.send(b"LNK_CONN frame bytes")?;
/// let n = leaf.poll_transmit(&mut wire)?;
/// hub.handle_input(now, &wire[..n])?;
/// assert_eq!(hub.plaintext(), b"LNK_CONN frame bytes");
/// # Ok::<(), dmsg_core::secure::SecureError>(())
/// ```
// Copyable only in fuzz builds (`--cfg fuzzing`), so a fuzz target can restore an
// established state per input; no other build can duplicate key material.
#[cfg_attr(fuzzing, derive(Clone))]
pub struct SecureChannel {
    cfg: SecureConfig,
    role: Role,
    phase: Phase,
    hs: Option<IkHandshake>,
    transport: Option<Transport>,
    peer: Option<PublicKey>,
    deadline: Instant,
    rx: [u8; MAX_RECORD_WIRE],
    rx_len: usize,
    plain: (usize, usize),
    tx: [u8; MAX_RECORD_WIRE],
    tx_staged: usize,
    tx_out: (usize, usize),
    local_fin: LocalFin,
    peer_fin: bool,
    events: Deque<SecureEvent, 4>,
    stats: SecureStats,
}

impl SecureChannel {
    /// The connecting side: holds `local` and knows the responder's static key `remote`.
    /// Handshake message 1 is queued at once ([`poll_transmit`](Self::poll_transmit)).
    /// Errors: [`SecureError::InvalidConfig`], or [`SecureError::WeakKey`] for a low-order
    /// `remote` key.
    pub fn initiator<R: RngCore + CryptoRng + ?Sized>(
        cfg: SecureConfig,
        local: Keypair,
        remote: PublicKey,
        now: Instant,
        rng: &mut R,
    ) -> Result<SecureChannel, SecureError> {
        cfg.validate()?;
        let e = Keypair::generate(rng);
        let mut ch = SecureChannel::blank(cfg, Role::Initiator, now);
        let mut hs = IkHandshake::initiator(PROLOGUE, local, remote, e);
        // Fails only for a low-order `remote` key (WeakKey): nothing to count yet.
        let n = hs
            .write_message(&[], &mut ch.tx[RECORD_HEADER_LEN..])
            .map_err(handshake_error)?;
        ch.tx[..RECORD_HEADER_LEN].copy_from_slice(&(n as u16).to_be_bytes());
        ch.tx_out = (0, RECORD_HEADER_LEN + n);
        ch.hs = Some(hs);
        ch.peer = Some(remote);
        Ok(ch)
    }

    /// The accepting side: holds `local`, learns the initiator's static key from message 1.
    pub fn responder<R: RngCore + CryptoRng + ?Sized>(
        cfg: SecureConfig,
        local: Keypair,
        now: Instant,
        rng: &mut R,
    ) -> Result<SecureChannel, SecureError> {
        cfg.validate()?;
        let e = Keypair::generate(rng);
        let mut ch = SecureChannel::blank(cfg, Role::Responder, now);
        ch.hs = Some(IkHandshake::responder(PROLOGUE, local, e));
        Ok(ch)
    }

    fn blank(cfg: SecureConfig, role: Role, now: Instant) -> SecureChannel {
        SecureChannel {
            cfg,
            role,
            phase: Phase::Handshake,
            hs: None,
            transport: None,
            peer: None,
            deadline: now + cfg.handshake_timeout,
            rx: [0; MAX_RECORD_WIRE],
            rx_len: 0,
            plain: (0, 0),
            tx: [0; MAX_RECORD_WIRE],
            tx_staged: 0,
            tx_out: (0, 0),
            local_fin: LocalFin::Open,
            peer_fin: false,
            events: Deque::new(),
            stats: SecureStats::default(),
        }
    }

    /// Which side this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether the handshake is complete and the channel has not failed.
    pub fn is_established(&self) -> bool {
        self.phase == Phase::Established
    }

    /// The error that ended the channel, if any.
    pub fn error(&self) -> Option<SecureError> {
        match self.phase {
            Phase::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Counters.
    pub fn stats(&self) -> &SecureStats {
        &self.stats
    }

    /// The peer's static public key: the configured one (initiator), or the one the
    /// initiator proved in message 1 (responder). Apply per-peer policy to it.
    pub fn peer_static(&self) -> Option<PublicKey> {
        self.peer
    }

    /// The Noise handshake hash, once established: unique per handshake, equal on both
    /// sides (a channel binding).
    pub fn handshake_hash(&self) -> Option<[u8; 32]> {
        match (&self.transport, self.phase) {
            (Some(t), Phase::Established) => Some(t.handshake_hash),
            _ => None,
        }
    }

    /// A secret both sides derive from this handshake, independent of the record keys; the
    /// session layer keeps it to prove on a later connection that it is the same session
    /// (see `spec/SECURE.md`, "Resuming a session").
    pub fn resume_secret(&self) -> Option<ResumeSecret> {
        match (&self.transport, self.phase) {
            (Some(t), Phase::Established) => Some(ResumeSecret::new(t.resume_secret)),
            _ => None,
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<SecureEvent> {
        self.events.pop_front()
    }

    /// The handshake deadline while the handshake runs; `None` afterwards.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Handshake | Phase::AwaitApproval => Some(self.deadline),
            _ => None,
        }
    }

    /// Fails the channel with [`SecureError::HandshakeTimeout`] if the handshake is still
    /// running at `now` past its deadline.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), SecureError> {
        self.check()?;
        self.check_deadline(now)
    }

    fn check(&self) -> Result<(), SecureError> {
        match self.phase {
            Phase::Failed(e) => Err(e),
            _ => Ok(()),
        }
    }

    fn check_deadline(&mut self, now: Instant) -> Result<(), SecureError> {
        if matches!(self.phase, Phase::Handshake | Phase::AwaitApproval) && now >= self.deadline {
            return Err(self.fail(SecureError::HandshakeTimeout));
        }
        Ok(())
    }

    fn fail(&mut self, e: SecureError) -> SecureError {
        if let Phase::Failed(first) = self.phase {
            return first;
        }
        self.stats.failures.count(e);
        self.phase = Phase::Failed(e);
        self.hs = None;
        self.transport = None;
        self.plain = (0, 0);
        self.rx_len = 0;
        self.tx_staged = 0;
        self.tx_out = (0, 0);
        self.rx.zeroize();
        self.tx.zeroize();
        e
    }

    /// Consumes ciphertext from the socket; returns how many bytes were taken. At most one
    /// handshake message or record is processed per call, and nothing is taken while
    /// decrypted plaintext waits to be read or while a responder waits for
    /// [`accept`](Self::accept), so call it in a loop with the rest of the input.
    ///
    /// A record's plaintext becomes visible only after its tag has verified; a record that
    /// fails ends the channel and delivers nothing.
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) -> Result<usize, SecureError> {
        self.check()?;
        self.check_deadline(now)?;
        if self.plain.0 < self.plain.1 || self.phase == Phase::AwaitApproval || data.is_empty() {
            return Ok(0);
        }
        if self.peer_fin {
            return Err(self.fail(SecureError::DataAfterClose));
        }
        let mut used = 0;
        if self.rx_len < RECORD_HEADER_LEN {
            let take = (RECORD_HEADER_LEN - self.rx_len).min(data.len());
            self.rx[self.rx_len..self.rx_len + take].copy_from_slice(&data[..take]);
            self.rx_len += take;
            used += take;
            if self.rx_len < RECORD_HEADER_LEN {
                self.stats.wire_in += used as u64;
                return Ok(used);
            }
        }
        let hdr = u16::from_be_bytes([self.rx[0], self.rx[1]]);
        let body = match self.body_len(hdr) {
            Ok(b) => b,
            Err(e) => return Err(self.fail(e)),
        };
        let want = RECORD_HEADER_LEN + body;
        let take = (want - self.rx_len).min(data.len() - used);
        self.rx[self.rx_len..self.rx_len + take].copy_from_slice(&data[used..used + take]);
        self.rx_len += take;
        used += take;
        self.stats.wire_in += used as u64;
        if self.rx_len < want {
            return Ok(used);
        }
        self.rx_len = 0;
        let r = match self.phase {
            Phase::Handshake => self.read_handshake(body),
            _ => self.open_record(hdr, body),
        };
        match r {
            Ok(()) => Ok(used),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// The body length a header announces, checked against what the phase allows.
    fn body_len(&self, hdr: u16) -> Result<usize, SecureError> {
        let len = usize::from(hdr & RECORD_LEN_MASK);
        if self.phase == Phase::Handshake {
            let expect = match self.role {
                Role::Responder => MSG1_OVERHEAD,
                Role::Initiator => MSG2_OVERHEAD,
            };
            if hdr & RECORD_FIN != 0 || len != expect {
                return Err(SecureError::HandshakeMalformed);
            }
            return Ok(len);
        }
        if len > MAX_RECORD_PLAINTEXT + TAG_LEN {
            return Err(SecureError::RecordTooLarge {
                len: hdr & RECORD_LEN_MASK,
            });
        }
        if len < TAG_LEN {
            return Err(SecureError::RecordMalformed);
        }
        Ok(len)
    }

    fn read_handshake(&mut self, body: usize) -> Result<(), SecureError> {
        let Some(hs) = self.hs.as_mut() else {
            return Err(SecureError::HandshakeMalformed);
        };
        let msg = &mut self.rx[RECORD_HEADER_LEN..RECORD_HEADER_LEN + body];
        hs.read_message(msg).map_err(handshake_error)?;
        match self.role {
            Role::Responder => {
                let peer = hs.remote_static().ok_or(SecureError::HandshakeMalformed)?;
                self.peer = Some(peer);
                self.phase = Phase::AwaitApproval;
                let _ = self.events.push_back(SecureEvent::PeerHello { peer });
                Ok(())
            }
            Role::Initiator => self.finish_handshake(),
        }
    }

    fn finish_handshake(&mut self) -> Result<(), SecureError> {
        let hs = self.hs.take().ok_or(SecureError::HandshakeMalformed)?;
        let t = hs.into_transport().map_err(handshake_error)?;
        let peer = t.remote_static;
        self.transport = Some(t);
        self.peer = Some(peer);
        self.phase = Phase::Established;
        self.stats.handshakes += 1;
        let _ = self.events.push_back(SecureEvent::Established { peer });
        Ok(())
    }

    fn open_record(&mut self, hdr: u16, body: usize) -> Result<(), SecureError> {
        let Some(t) = self.transport.as_mut() else {
            return Err(SecureError::RecordMalformed);
        };
        if t.recv.nonce() >= self.cfg.rekey_after {
            t.recv.rekey();
            self.stats.rekeys_in += 1;
        }
        let ad = hdr.to_be_bytes();
        let msg = &mut self.rx[RECORD_HEADER_LEN..RECORD_HEADER_LEN + body];
        let n = t.recv.decrypt_with_ad(&ad, msg).map_err(|e| match e {
            NoiseError::NonceExhausted => SecureError::NonceExhausted,
            _ => SecureError::RecordAuth,
        })?;
        self.plain = (RECORD_HEADER_LEN, RECORD_HEADER_LEN + n);
        self.stats.records_in += 1;
        self.stats.plaintext_in += n as u64;
        if hdr & RECORD_FIN != 0 {
            self.peer_fin = true;
            let _ = self.events.push_back(SecureEvent::PeerClosed);
        }
        Ok(())
    }

    /// Decrypted plaintext not yet consumed (from one authenticated record).
    pub fn plaintext(&self) -> &[u8] {
        &self.rx[self.plain.0..self.plain.1]
    }

    /// Marks `n` bytes of [`plaintext`](Self::plaintext) as read (clamped to what is there).
    pub fn consume(&mut self, n: usize) {
        self.plain.0 = self.plain.0.saturating_add(n).min(self.plain.1);
        if self.plain.0 == self.plain.1 {
            self.plain = (0, 0);
        }
    }

    /// Copies plaintext into `out` and consumes it; returns the number of bytes.
    pub fn recv(&mut self, out: &mut [u8]) -> usize {
        let p = self.plaintext();
        let n = p.len().min(out.len());
        out[..n].copy_from_slice(&p[..n]);
        self.consume(n);
        n
    }

    /// Responder: accepts the peer announced by [`SecureEvent::PeerHello`]; queues handshake
    /// message 2 and establishes the channel.
    pub fn accept(&mut self, now: Instant) -> Result<(), SecureError> {
        self.check()?;
        self.check_deadline(now)?;
        if self.phase != Phase::AwaitApproval {
            return Err(SecureError::Closed);
        }
        let r = (|| {
            let hs = self.hs.as_mut().ok_or(SecureError::HandshakeMalformed)?;
            let n = hs
                .write_message(&[], &mut self.tx[RECORD_HEADER_LEN..])
                .map_err(handshake_error)?;
            self.tx[..RECORD_HEADER_LEN].copy_from_slice(&(n as u16).to_be_bytes());
            self.tx_out = (0, RECORD_HEADER_LEN + n);
            self.finish_handshake()
        })();
        r.map_err(|e| self.fail(e))
    }

    /// Responder: refuses the peer announced by [`SecureEvent::PeerHello`]; the channel
    /// fails with [`SecureError::PeerRefused`] (counted) and sends nothing.
    pub fn refuse(&mut self) -> SecureError {
        self.fail(SecureError::PeerRefused)
    }

    /// Queues plaintext; returns how many bytes were taken (0 while the handshake runs or
    /// while a sealed record waits in [`poll_transmit`](Self::poll_transmit)).
    pub fn send(&mut self, data: &[u8]) -> Result<usize, SecureError> {
        self.check()?;
        if self.local_fin != LocalFin::Open {
            return Err(SecureError::Closed);
        }
        if self.phase != Phase::Established || self.tx_out.0 < self.tx_out.1 {
            return Ok(0);
        }
        let n = (MAX_RECORD_PLAINTEXT - self.tx_staged).min(data.len());
        let at = RECORD_HEADER_LEN + self.tx_staged;
        self.tx[at..at + n].copy_from_slice(&data[..n]);
        self.tx_staged += n;
        self.stats.plaintext_out += n as u64;
        Ok(n)
    }

    /// Closes the sending direction: the rest of the queued plaintext goes out in a final
    /// record carrying the authenticated FIN bit.
    pub fn close(&mut self) -> Result<(), SecureError> {
        self.check()?;
        if self.phase != Phase::Established {
            return Err(SecureError::Closed);
        }
        if self.local_fin == LocalFin::Open {
            self.local_fin = LocalFin::Requested;
        }
        Ok(())
    }

    /// Whether ciphertext waits to be sent (handshake messages, sealed or staged records).
    pub fn wants_transmit(&self) -> bool {
        self.tx_out.0 < self.tx_out.1
            || (self.phase == Phase::Established
                && (self.tx_staged > 0 || self.local_fin == LocalFin::Requested))
    }

    /// Writes pending ciphertext into `out`; returns the number of bytes written. Staged
    /// plaintext is sealed into a record here.
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> Result<usize, SecureError> {
        self.check()?;
        let mut written = 0;
        loop {
            if self.tx_out.0 < self.tx_out.1 {
                let k = (self.tx_out.1 - self.tx_out.0).min(out.len() - written);
                out[written..written + k]
                    .copy_from_slice(&self.tx[self.tx_out.0..self.tx_out.0 + k]);
                written += k;
                self.tx_out.0 += k;
                if self.tx_out.0 < self.tx_out.1 {
                    break;
                }
                self.tx_out = (0, 0);
            }
            if written == out.len() || !self.wants_transmit() {
                break;
            }
            if let Err(e) = self.seal() {
                return Err(self.fail(e));
            }
        }
        self.stats.wire_out += written as u64;
        Ok(written)
    }

    fn seal(&mut self) -> Result<(), SecureError> {
        let Some(t) = self.transport.as_mut() else {
            return Err(SecureError::Closed);
        };
        let fin = self.local_fin == LocalFin::Requested;
        let len = self.tx_staged + TAG_LEN;
        let hdr = len as u16 | if fin { RECORD_FIN } else { 0 };
        let ad = hdr.to_be_bytes();
        if t.send.nonce() >= self.cfg.rekey_after {
            t.send.rekey();
            self.stats.rekeys_out += 1;
        }
        let n = t
            .send
            .encrypt_with_ad(&ad, &mut self.tx[RECORD_HEADER_LEN..], self.tx_staged)
            .map_err(|_| SecureError::NonceExhausted)?;
        self.tx[..RECORD_HEADER_LEN].copy_from_slice(&ad);
        self.tx_out = (0, RECORD_HEADER_LEN + n);
        self.tx_staged = 0;
        self.stats.records_out += 1;
        if fin {
            self.local_fin = LocalFin::Sent;
        }
        Ok(())
    }

    /// The socket reached end of stream. `Ok` only after the peer's authenticated FIN with no
    /// partial record; otherwise the channel fails with [`SecureError::Truncated`] (a
    /// truncation attack cannot pass as a clean close).
    pub fn handle_eof(&mut self) -> Result<(), SecureError> {
        self.check()?;
        if self.peer_fin && self.rx_len == 0 {
            return Ok(());
        }
        Err(self.fail(SecureError::Truncated))
    }
}

fn handshake_error(e: NoiseError) -> SecureError {
    match e {
        NoiseError::Decrypt => SecureError::HandshakeAuth,
        NoiseError::WeakKey => SecureError::WeakKey,
        NoiseError::NonceExhausted => SecureError::NonceExhausted,
        NoiseError::Length | NoiseError::WrongStep => SecureError::HandshakeMalformed,
    }
}

impl Drop for SecureChannel {
    fn drop(&mut self) {
        self.rx.zeroize();
        self.tx.zeroize();
    }
}

impl core::fmt::Debug for SecureChannel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SecureChannel")
            .field("role", &self.role)
            .field("phase", &self.phase)
            .field("peer", &self.peer)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_state_is_bounded_at_compile_time() {
        // Two record buffers plus handshake/transport state and counters.
        let size = core::mem::size_of::<SecureChannel>();
        std::println!("SecureChannel: {size} bytes");
        assert!(size >= 2 * MAX_RECORD_WIRE);
        assert!(
            size < 2 * MAX_RECORD_WIRE + 1024,
            "SecureChannel is {size} bytes"
        );
    }
}
