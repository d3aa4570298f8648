//! The secure channel between the TCP socket and the link (feature `secure`).
//!
//! With [`SecureLink`] given to the runner ([`Runner::with_secure`](crate::Runner::with_secure)),
//! every connection runs dmsg-core's Noise IK channel ([`SecureChannel`], `spec/SECURE.md`)
//! as the initiator: the leaf holds its own static key pair and knows the hub's public key in
//! advance; the hub learns the leaf's key from the first handshake message and applies its
//! keys-directory policy. The link's frames (its LNK_CONN first) go out only once the
//! handshake is complete, in authenticated encrypted records; any record that fails to
//! verify, a handshake that fails or does not finish within
//! [`SecureConfig::handshake_timeout`], and an end of stream without the hub's authenticated
//! close end the connection: the application gets [`LeafEvent::SecureFailed`](crate::LeafEvent)
//! with the typed error, then the link's `Down`, and the runner reconnects with backoff.
//!
//! Randomness (the ephemeral key of every handshake) comes from the RNG the caller passes:
//! the board's RNG source on a microcontroller, the OS RNG on a host.
//!
//! Not with the reliable session: resuming a session over a new secure channel needs the
//! resume proof of `spec/SECURE.md` §7 in the RESUME frames, which the core link does not
//! carry yet, so [`Runner::with_secure`](crate::Runner::with_secure) refuses a link type with
//! session storage ([`ConfigError::SecureSession`](crate::ConfigError)).

use dmsg_core::secure::rand_core::CryptoRng;
use dmsg_core::secure::{
    Keypair, PublicKey, SecureChannel, SecureConfig, SecureError, SecureEvent, SecureStats,
};
use dmsg_core::time::Instant;

use crate::binding::{CoreLink, Leaf};

/// A 32-byte key from its 64 hex digits, as in the key files of `dmsg keygen`
/// (`dmsg-x25519-pub <hex>`, `dmsg-x25519-secret <hex>`); for constants in firmware, where a
/// malformed key is a compile-time error.
///
/// ```
/// use dmsg_embassy::secure::key_from_hex;
/// const KEY: [u8; 32] =
///     key_from_hex("000102030405060708090a0b0c0d0e0f101112131415161718191A1B1C1D1E1F");
/// assert_eq!(KEY[31], 0x1f);
/// ```
pub const fn key_from_hex(hex: &str) -> [u8; 32] {
    const fn digit(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => panic!("a key is 64 hex digits"),
        }
    }
    let h = hex.as_bytes();
    assert!(h.len() == 64, "a key is 64 hex digits");
    let mut key = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        key[i] = digit(h[2 * i]) << 4 | digit(h[2 * i + 1]);
        i += 1;
    }
    key
}

/// Plaintext moved from the link into the channel per step (a stack buffer, not kept
/// across an `await`).
const STAGE_CHUNK: usize = 256;

/// What a leaf needs to run its links encrypted: its key pair, the hub's public key, the
/// channel settings and a cryptographic RNG.
pub struct SecureLink<'d> {
    /// Our static key pair (the hub's keys directory holds its public half).
    pub local: Keypair,
    /// The hub's static public key.
    pub hub: PublicKey,
    /// Handshake deadline and rekey interval.
    pub config: SecureConfig,
    /// The source of the handshakes' ephemeral keys.
    pub rng: &'d mut dyn CryptoRng,
}

impl core::fmt::Debug for SecureLink<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SecureLink")
            .field("local", &self.local.public())
            .field("hub", &self.hub)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The runner's secure state: the settings and the channel of the current connection.
pub(crate) struct Secure<'d> {
    link: SecureLink<'d>,
    channel: Option<SecureChannel>,
    error: Option<SecureError>,
    stats: SecureStats,
}

impl<'d> Secure<'d> {
    pub(crate) fn new(link: SecureLink<'d>) -> Self {
        Secure {
            link,
            channel: None,
            error: None,
            stats: SecureStats::default(),
        }
    }

    /// Counters of the channels of past connections plus the current one.
    pub(crate) fn stats(&self) -> SecureStats {
        let mut s = self.stats;
        if let Some(ch) = &self.channel {
            accumulate(&mut s, ch.stats());
        }
        s
    }

    /// A fresh channel for a new TCP connection (handshake message 1 queued).
    pub(crate) fn start(&mut self, now: Instant) -> Result<(), SecureError> {
        self.end();
        self.error = None;
        let ch = SecureChannel::initiator(
            self.link.config,
            self.link.local.clone(),
            self.link.hub,
            now,
            &mut *self.link.rng,
        )?;
        self.channel = Some(ch);
        Ok(())
    }

    /// Drops the connection's channel (its key material is zeroized), keeping its counters.
    pub(crate) fn end(&mut self) {
        if let Some(ch) = self.channel.take() {
            accumulate(&mut self.stats, ch.stats());
        }
    }

    /// The error that ended the current channel, once (for the application's event).
    pub(crate) fn take_error(&mut self) -> Option<SecureError> {
        self.error.take()
    }

    fn fail(&mut self, e: SecureError) {
        if self.error.is_none() {
            warn!("dmsg: secure channel failed");
            debug!("dmsg: {:?}", e);
            self.error = Some(e);
        }
    }

    /// The channel, while it has not failed.
    fn live(&mut self) -> Option<&mut SecureChannel> {
        self.channel.as_mut().filter(|ch| ch.error().is_none())
    }

    /// Moves the link's queued bytes into the channel (one record's worth at most, and only
    /// once the handshake is complete and no sealed record waits). True if ciphertext waits
    /// for the socket.
    pub(crate) fn stage<L: CoreLink, const A: usize>(
        &mut self,
        leaf: &mut Leaf<L, A>,
        now: Instant,
    ) -> bool {
        let Some(ch) = self.live() else {
            return false;
        };
        if ch.is_established() && !ch.wants_transmit() {
            let mut room = dmsg_core::secure::MAX_RECORD_PLAINTEXT;
            let mut chunk = [0u8; STAGE_CHUNK];
            while room > 0 && leaf.pending_transmit() > 0 {
                let n = leaf.poll_transmit(now, &mut chunk[..room.min(STAGE_CHUNK)]);
                if n == 0 {
                    break;
                }
                // Nothing is staged beyond `room` and no sealed record waits: all is taken.
                match ch.send(&chunk[..n]) {
                    Ok(taken) if taken == n => room -= n,
                    Ok(_) => {
                        self.fail(SecureError::Closed);
                        return false;
                    }
                    Err(e) => {
                        self.fail(e);
                        return false;
                    }
                }
            }
        }
        self.live().is_some_and(|ch| ch.wants_transmit())
    }

    /// Writes ciphertext into `out` (the socket's buffer); returns how many bytes.
    pub(crate) fn transmit(&mut self, out: &mut [u8]) -> usize {
        let Some(ch) = self.live() else {
            return 0;
        };
        match ch.poll_transmit(out) {
            Ok(n) => n,
            Err(e) => {
                self.fail(e);
                0
            }
        }
    }

    /// Takes ciphertext from `input` (the socket's buffer) and feeds the plaintext to the
    /// leaf, until the leaf takes no more (an event waits) or the input is used up. Returns
    /// the ciphertext bytes used.
    pub(crate) fn input<L: CoreLink, const A: usize>(
        &mut self,
        leaf: &mut Leaf<L, A>,
        now: Instant,
        input: &[u8],
    ) -> usize {
        let mut used = 0;
        loop {
            if self.feed(leaf, now) {
                continue;
            }
            let Some(ch) = self.live() else { break };
            if !ch.plaintext().is_empty() || used == input.len() {
                break;
            }
            match ch.handle_input(now, &input[used..]) {
                Ok(0) => break,
                Ok(n) => used += n,
                Err(e) => {
                    self.fail(e);
                    break;
                }
            }
            self.events();
        }
        used
    }

    /// Gives decrypted plaintext waiting in the channel to the leaf; true if it took some.
    pub(crate) fn feed<L: CoreLink, const A: usize>(
        &mut self,
        leaf: &mut Leaf<L, A>,
        now: Instant,
    ) -> bool {
        let Some(ch) = self.live() else {
            return false;
        };
        let plain = ch.plaintext();
        if plain.is_empty() || leaf.is_closed() {
            return false;
        }
        let n = leaf.handle_input(now, plain);
        ch.consume(n);
        n > 0
    }

    /// Logs the channel's events (the runner acts on its state, not on these).
    fn events(&mut self) {
        let Some(ch) = self.channel.as_mut() else {
            return;
        };
        while let Some(ev) = ch.poll_event() {
            match ev {
                SecureEvent::Established { .. } => info!("dmsg: secure channel established"),
                SecureEvent::PeerClosed => debug!("dmsg: the hub closed the secure channel"),
                SecureEvent::PeerHello { .. } => {}
            }
        }
    }

    /// The handshake deadline, while the handshake runs.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.channel.as_ref().and_then(SecureChannel::poll_timeout)
    }

    /// Checks the handshake deadline.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if let Some(ch) = self.live() {
            if let Err(e) = ch.handle_timeout(now) {
                self.fail(e);
            }
        }
    }

    /// The socket reached end of stream: fine only after the hub's authenticated close.
    pub(crate) fn handle_eof(&mut self) {
        if let Some(ch) = self.live() {
            if let Err(e) = ch.handle_eof() {
                self.fail(e);
            }
        }
    }

    /// Our authenticated close (the FIN record), before the TCP close. True if ciphertext
    /// waits for the socket.
    pub(crate) fn close(&mut self) -> bool {
        let Some(ch) = self.live() else {
            return false;
        };
        if ch.is_established() {
            if let Err(e) = ch.close() {
                self.fail(e);
                return false;
            }
        }
        self.live().is_some_and(|ch| ch.wants_transmit())
    }
}

/// Adds the counters of one channel to a total.
fn accumulate(total: &mut SecureStats, s: &SecureStats) {
    let (t, f) = (&mut total.failures, &s.failures);
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
    total.handshakes += s.handshakes;
    total.records_in += s.records_in;
    total.records_out += s.records_out;
    total.plaintext_in += s.plaintext_in;
    total.plaintext_out += s.plaintext_out;
    total.wire_in += s.wire_in;
    total.wire_out += s.wire_out;
    total.rekeys_in += s.rekeys_in;
    total.rekeys_out += s.rekeys_out;
}

#[cfg(test)]
mod tests {
    //! The leaf's side of the secure path (`Secure` between a `Leaf` and the bytes) against
    //! a hub made of a core `Connection` behind a responder `SecureChannel`, in memory.

    use std::vec::Vec;

    use dmsg_core::link::{Connection, Event, LinkConfig, McuConnection, Outgoing};
    use dmsg_core::secure::rand_core::{CryptoRng, RngCore};
    use dmsg_core::time::{Duration, Instant};
    use dmsg_core::wire::body::{peer_type, ConnRepr};
    use dmsg_core::wire::{Command, Flags, Label};
    use embassy_net::{IpAddress, IpEndpoint, Ipv4Address};

    use super::*;
    use crate::binding::Polled;
    use crate::types::{LeafConfig, LeafEvent};

    type Hub = Connection<{ 8 * 64 + 1024 }, 1024, 4096, 8>;

    /// A deterministic test RNG (xorshift64*), standing for the board's RNG.
    struct TestRng(u64);
    impl RngCore for TestRng {
        fn next_u32(&mut self) -> u32 {
            self.next_u64() as u32
        }
        fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn fill_bytes(&mut self, dst: &mut [u8]) {
            for b in dst {
                *b = self.next_u64() as u8;
            }
        }
    }
    impl CryptoRng for TestRng {}

    fn config() -> LeafConfig<'static> {
        LeafConfig {
            echo: Some(Command::DbgShell),
            ..LeafConfig::new(
                IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, 1)), 987),
                "leaf-07",
            )
        }
    }

    struct Pair<'r> {
        now: Instant,
        cfg: LeafConfig<'static>,
        leaf: Leaf<McuConnection, 64>,
        secure: Secure<'r>,
        hub: Hub,
        hub_ch: SecureChannel,
        hub_seen: Vec<PublicKey>,
        /// The hub link's output waiting for its channel (before the handshake completes).
        hub_plain: Vec<u8>,
        to_hub: Vec<u8>,
        to_leaf: Vec<u8>,
        app: Vec<LeafEvent<64>>,
        hub_aux: Vec<Vec<u8>>,
        /// Flip this byte of the next ciphertext to the leaf.
        corrupt_at: Option<usize>,
    }

    impl<'r> Pair<'r> {
        fn new(rng: &'r mut TestRng, hub_rng: &mut TestRng, hub_key_known: bool) -> Self {
            let now = Instant::from_millis(1);
            let hub_keys = Keypair::from_secret([2; 32]);
            let hub_pub = if hub_key_known {
                hub_keys.public()
            } else {
                Keypair::from_secret([3; 32]).public()
            };
            let hub_cfg = LinkConfig {
                conn: ConnRepr {
                    peer_type: peer_type::ROUTER,
                    peer_label: Label::new("hub").unwrap(),
                    ..ConnRepr::default()
                },
                ..LinkConfig::default()
            };
            let cfg = config();
            let mut secure = Secure::new(SecureLink {
                local: Keypair::from_secret([1; 32]),
                hub: hub_pub,
                config: SecureConfig::default(),
                rng,
            });
            secure.start(now).unwrap();
            Pair {
                now,
                cfg,
                leaf: Leaf::new(now, &cfg, 1).unwrap(),
                secure,
                hub: Hub::new(now, &hub_cfg, Default::default()).unwrap(),
                hub_ch: SecureChannel::responder(SecureConfig::default(), hub_keys, now, hub_rng)
                    .unwrap(),
                hub_seen: Vec::new(),
                hub_plain: Vec::new(),
                to_hub: Vec::new(),
                to_leaf: Vec::new(),
                app: Vec::new(),
                hub_aux: Vec::new(),
                corrupt_at: None,
            }
        }

        /// The runner's order: transmit (through the channel), then events.
        fn leaf_side(&mut self) {
            loop {
                let mut buf = [0u8; 100]; // small: records leave in pieces
                while self.secure.stage(&mut self.leaf, self.now) {
                    let n = self.secure.transmit(&mut buf);
                    assert!(n > 0);
                    self.to_hub.extend_from_slice(&buf[..n]);
                }
                match self.leaf.poll(self.now, &self.cfg) {
                    Polled::Event(e) => self.app.push(e),
                    Polled::Handled => {}
                    Polled::Idle => {
                        if !self.secure.feed(&mut self.leaf, self.now) {
                            break;
                        }
                    }
                }
            }
        }

        fn hub_side(&mut self) {
            let input = core::mem::take(&mut self.to_hub);
            let mut rest = &input[..];
            loop {
                while let Some(ev) = self.hub_ch.poll_event() {
                    if let SecureEvent::PeerHello { peer } = ev {
                        self.hub_seen.push(peer);
                        self.hub_ch.accept(self.now).unwrap();
                    }
                }
                let plain = self.hub_ch.plaintext();
                if !plain.is_empty() {
                    let n = self.hub.handle_input(self.now, plain);
                    self.hub_ch.consume(n);
                }
                while let Some(ev) = self.hub.poll_event() {
                    if let Event::Message { msg, .. } = ev {
                        self.hub_aux.push(msg.aux.to_vec());
                    }
                }
                let mut out = [0u8; 4096];
                let n = self.hub.poll_transmit(self.now, &mut out);
                self.hub_plain.extend_from_slice(&out[..n]);
                let mut wire = [0u8; 4096];
                loop {
                    let taken = self.hub_ch.send(&self.hub_plain).unwrap();
                    self.hub_plain.drain(..taken);
                    let n = self.hub_ch.poll_transmit(&mut wire).unwrap();
                    self.to_leaf.extend_from_slice(&wire[..n]);
                    if n == 0 {
                        break;
                    }
                }
                if rest.is_empty() && self.hub_ch.plaintext().is_empty() {
                    break;
                }
                let used = self.hub_ch.handle_input(self.now, rest).unwrap();
                rest = &rest[used..];
            }
        }

        fn pump(&mut self) {
            for _ in 0..50 {
                self.leaf_side();
                self.hub_side();
                if self.to_leaf.is_empty() && self.to_hub.is_empty() {
                    return;
                }
                let mut input = core::mem::take(&mut self.to_leaf);
                if let Some(i) = self.corrupt_at.take() {
                    input[i] ^= 0x40;
                }
                let mut rest = &input[..];
                while !rest.is_empty() {
                    let used = self.secure.input(&mut self.leaf, self.now, rest);
                    rest = &rest[used..];
                    self.leaf_side();
                    if used == 0 && self.secure.error.is_some() {
                        return;
                    }
                }
            }
            panic!("the pair did not go quiet");
        }
    }

    #[test]
    fn the_link_runs_through_the_secure_channel_and_echoes() {
        let (mut rng, mut hub_rng) = (TestRng(0x1234_5678), TestRng(0x9abc_def0));
        let mut p = Pair::new(&mut rng, &mut hub_rng, true);
        p.pump();
        assert_eq!(p.hub_seen, [Keypair::from_secret([1; 32]).public()]);
        assert!(p.hub_ch.is_established());
        assert!(p.app.contains(&LeafEvent::Up), "{:?}", p.app);
        assert!(
            p.app
                .iter()
                .any(|e| matches!(e, LeafEvent::SpanAdvertised { .. })),
            "{:?}",
            p.app
        );
        // An echo transaction larger than one staging chunk, through both channels.
        let aux: Vec<u8> = (0..60u8).collect();
        let msg = Outgoing::new(Command::DbgShell).with_aux(&aux);
        p.hub.open(p.now, &msg, Flags::DELETE, None).unwrap();
        p.pump();
        assert!(p.hub_aux.contains(&aux), "{:?}", p.hub_aux);
        assert_eq!(p.secure.take_error(), None);
        let s = p.secure.stats();
        assert_eq!(s.handshakes, 1);
        assert!(s.records_in >= 2 && s.records_out >= 2, "{s:?}");
    }

    #[test]
    fn a_flipped_ciphertext_byte_ends_the_channel_and_delivers_nothing() {
        let (mut rng, mut hub_rng) = (TestRng(7), TestRng(8));
        let mut p = Pair::new(&mut rng, &mut hub_rng, true);
        p.pump();
        p.app.clear();
        let msg = Outgoing::new(Command::DbgShell).with_aux(b"secret request");
        p.hub.open(p.now, &msg, Flags::DELETE, None).unwrap();
        p.corrupt_at = Some(5); // inside the record's ciphertext
        p.pump();
        assert_eq!(p.secure.take_error(), Some(SecureError::RecordAuth));
        assert!(
            p.app.is_empty(),
            "nothing from a failed record: {:?}",
            p.app
        );
        assert!(p.hub_aux.is_empty());
        assert_eq!(p.secure.stats().failures.record_auth, 1);
        // A dead channel takes and sends nothing more.
        assert_eq!(p.secure.input(&mut p.leaf, p.now, &[0; 32]), 0);
        assert!(!p.secure.stage(&mut p.leaf, p.now));
    }

    #[test]
    fn a_wrong_hub_key_never_establishes_and_the_handshake_times_out() {
        let (mut rng, mut hub_rng) = (TestRng(11), TestRng(12));
        let mut p = Pair::new(&mut rng, &mut hub_rng, false);
        // The hub cannot authenticate message 1 (it was made for another key).
        p.leaf_side();
        let input = core::mem::take(&mut p.to_hub);
        assert_eq!(
            p.hub_ch.handle_input(p.now, &input),
            Err(SecureError::HandshakeAuth)
        );
        // Nothing of the link left the leaf in the clear, and nothing was established.
        assert!(!p
            .app
            .iter()
            .any(|e| matches!(e, LeafEvent::PeerConn { .. })));
        let deadline = p.secure.poll_timeout().unwrap();
        assert_eq!(deadline, p.now + SecureConfig::default().handshake_timeout);
        p.secure
            .handle_timeout(p.now + Duration::from_millis(9_999));
        assert_eq!(p.secure.take_error(), None);
        p.secure.handle_timeout(deadline);
        assert_eq!(p.secure.take_error(), Some(SecureError::HandshakeTimeout));
        assert_eq!(p.secure.stats().failures.handshake_timeout, 1);
    }

    #[test]
    fn an_end_of_stream_without_the_hubs_close_is_a_truncation() {
        let (mut rng, mut hub_rng) = (TestRng(21), TestRng(22));
        let mut p = Pair::new(&mut rng, &mut hub_rng, true);
        p.pump();
        p.secure.handle_eof();
        assert_eq!(p.secure.take_error(), Some(SecureError::Truncated));
    }

    #[test]
    fn keys_parse_from_the_hex_of_key_files() {
        let k = key_from_hex("00ff10AB000000000000000000000000000000000000000000000000000000ff");
        assert_eq!(&k[..4], &[0x00, 0xff, 0x10, 0xab]);
        assert_eq!(k[31], 0xff);
    }
}
