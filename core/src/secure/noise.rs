//! The Noise protocol framework, pattern IK, suite 25519 / ChaChaPoly / BLAKE2s.
//!
//! A direct transcription of the Noise specification (revision 34) sections 5.1
//! (`CipherState`), 5.2 (`SymmetricState`) and the IK message pattern
//! (`<- s ... -> e, es, s, ss  <- e, ee, se`), over maintained primitives: X25519 from
//! `x25519-dalek`, ChaCha20-Poly1305 from `chacha20poly1305`, BLAKE2s from `blake2` and HMAC
//! from `hmac`. No primitive is written here. Only the fixed IK pattern is implemented, so
//! there is no pattern interpreter and no runtime choice of algorithms.
//!
//! Ephemeral keys are inputs (the channel draws them from the caller's RNG), which is also
//! what lets the published test vectors drive this state machine (`tests/secure_vectors.rs`).
//! Every secret (chaining key, cipher keys, ephemeral and static keys) is zeroized on drop.

use blake2::{Blake2s256, Digest};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce, Tag};
use hmac::{Mac, SimpleHmac};
use zeroize::Zeroize;

use super::keys::{Keypair, PublicKey, KEY_LEN};

/// The full Noise protocol name (hashed into the initial state).
pub const PROTOCOL_NAME: &[u8] = b"Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// Length of a hash output (BLAKE2s-256).
pub const HASH_LEN: usize = 32;
/// Length of the AEAD tag.
pub const TAG_LEN: usize = 16;
/// Length of the first handshake message without payload: `e` + encrypted `s` + payload tag.
pub const MSG1_OVERHEAD: usize = KEY_LEN + KEY_LEN + TAG_LEN + TAG_LEN;
/// Length of the second handshake message without payload: `e` + payload tag.
pub const MSG2_OVERHEAD: usize = KEY_LEN + TAG_LEN;

/// Why a Noise operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum NoiseError {
    /// An AEAD tag did not verify (wrong key, altered or out-of-order bytes).
    Decrypt,
    /// A Diffie-Hellman result was all zeros: the peer sent a low-order point.
    WeakKey,
    /// The nonce counter reached 2^64-1, which Noise reserves.
    NonceExhausted,
    /// A message was shorter than its fixed part, or an output buffer too small.
    Length,
    /// The operation does not fit the handshake's current step or role.
    WrongStep,
}

fn blake2s(parts: &[&[u8]]) -> [u8; HASH_LEN] {
    let mut h = Blake2s256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// HMAC-BLAKE2s with a 32-byte key. HMAC pads its key with zeros to the block size, so the
/// key is passed padded, which makes construction infallible.
fn hmac(key: &[u8; HASH_LEN], parts: &[&[u8]]) -> [u8; HASH_LEN] {
    let mut block = [0u8; 64];
    block[..HASH_LEN].copy_from_slice(key);
    let mut mac = <SimpleHmac<Blake2s256> as KeyInit>::new(&block.into());
    block.zeroize();
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Noise HKDF with two outputs.
fn hkdf2(ck: &[u8; HASH_LEN], ikm: &[u8]) -> ([u8; HASH_LEN], [u8; HASH_LEN]) {
    let mut temp = hmac(ck, &[ikm]);
    let o1 = hmac(&temp, &[&[1]]);
    let o2 = hmac(&temp, &[&o1, &[2]]);
    temp.zeroize();
    (o1, o2)
}

/// A keyed HMAC-BLAKE2s, exposed for the session-resume proof (see `spec/SECURE.md`).
pub(crate) fn mac(key: &[u8; HASH_LEN], parts: &[&[u8]]) -> [u8; HASH_LEN] {
    hmac(key, parts)
}

/// A derivation from the chaining key with a distinct input, independent of `Split()`.
pub(crate) fn derive(ck: &[u8; HASH_LEN], label: &[u8]) -> [u8; HASH_LEN] {
    hkdf2(ck, label).0
}

/// Noise `CipherState`: a ChaCha20-Poly1305 key and a 64-bit nonce counter.
// Copyable only in fuzz builds (`--cfg fuzzing`), so a fuzz target can restore an
// established state per input; no other build can duplicate key material.
#[cfg_attr(fuzzing, derive(Clone))]
pub struct CipherState {
    k: Option<[u8; KEY_LEN]>,
    n: u64,
}

impl CipherState {
    /// A state without key (encryption is the identity, as Noise specifies).
    pub const fn empty() -> CipherState {
        CipherState { k: None, n: 0 }
    }

    fn keyed(k: [u8; KEY_LEN]) -> CipherState {
        CipherState { k: Some(k), n: 0 }
    }

    /// Whether a key is set.
    pub const fn has_key(&self) -> bool {
        self.k.is_some()
    }

    /// The next nonce to be used.
    pub const fn nonce(&self) -> u64 {
        self.n
    }

    fn nonce_bytes(n: u64) -> Nonce {
        let mut b = [0u8; 12];
        b[4..].copy_from_slice(&n.to_le_bytes());
        b.into()
    }

    /// `EncryptWithAd`: encrypts `buf[..len]` in place and appends the tag; returns the
    /// ciphertext length (`len + 16`, or `len` without key).
    pub fn encrypt_with_ad(
        &mut self,
        ad: &[u8],
        buf: &mut [u8],
        len: usize,
    ) -> Result<usize, NoiseError> {
        let Some(k) = &self.k else {
            return if len <= buf.len() {
                Ok(len)
            } else {
                Err(NoiseError::Length)
            };
        };
        if self.n == u64::MAX {
            return Err(NoiseError::NonceExhausted);
        }
        if len.checked_add(TAG_LEN).is_none_or(|end| end > buf.len()) {
            return Err(NoiseError::Length);
        }
        let aead = ChaCha20Poly1305::new(Key::from_slice(k));
        let tag = aead
            .encrypt_in_place_detached(&Self::nonce_bytes(self.n), ad, &mut buf[..len])
            .map_err(|_| NoiseError::Length)?;
        buf[len..len + TAG_LEN].copy_from_slice(&tag);
        self.n += 1;
        Ok(len + TAG_LEN)
    }

    /// `DecryptWithAd`: decrypts `buf` (ciphertext and tag) in place; returns the plaintext
    /// length. On failure the nonce does not advance and `buf` holds no plaintext.
    pub fn decrypt_with_ad(&mut self, ad: &[u8], buf: &mut [u8]) -> Result<usize, NoiseError> {
        let Some(k) = &self.k else {
            return Ok(buf.len());
        };
        if self.n == u64::MAX {
            return Err(NoiseError::NonceExhausted);
        }
        let Some(plen) = buf.len().checked_sub(TAG_LEN) else {
            return Err(NoiseError::Length);
        };
        let (body, tag) = buf.split_at_mut(plen);
        let tag = Tag::clone_from_slice(tag);
        let aead = ChaCha20Poly1305::new(Key::from_slice(k));
        aead.decrypt_in_place_detached(&Self::nonce_bytes(self.n), ad, body, &tag)
            .map_err(|_| NoiseError::Decrypt)?;
        self.n += 1;
        Ok(plen)
    }

    /// `Rekey()` from the specification: `k = ENCRYPT(k, 2^64-1, "", zeros)[..32]`, and
    /// (our record layer's choice, see `spec/SECURE.md`) the nonce counter restarts at 0.
    pub fn rekey(&mut self) {
        if let Some(k) = &mut self.k {
            let mut next = [0u8; KEY_LEN];
            let aead = ChaCha20Poly1305::new(Key::from_slice(k));
            // Encryption of 32 bytes under a fresh nonce cannot fail (length < 2^38).
            if aead
                .encrypt_in_place_detached(&Self::nonce_bytes(u64::MAX), &[], &mut next)
                .is_ok()
            {
                k.copy_from_slice(&next);
            }
            next.zeroize();
            self.n = 0;
        }
    }
}

impl Drop for CipherState {
    fn drop(&mut self) {
        if let Some(k) = &mut self.k {
            k.zeroize();
        }
    }
}

/// Noise `SymmetricState`: chaining key, handshake hash and the handshake cipher.
// Copyable only in fuzz builds (`--cfg fuzzing`), so a fuzz target can restore an
// established state per input; no other build can duplicate key material.
#[cfg_attr(fuzzing, derive(Clone))]
struct SymmetricState {
    ck: [u8; HASH_LEN],
    h: [u8; HASH_LEN],
    cs: CipherState,
}

impl SymmetricState {
    fn new(prologue: &[u8]) -> SymmetricState {
        // The name is 33 bytes (> HASHLEN), so h = HASH(name).
        let h = blake2s(&[PROTOCOL_NAME]);
        let mut s = SymmetricState {
            ck: h,
            h,
            cs: CipherState::empty(),
        };
        s.mix_hash(prologue);
        s
    }

    fn mix_hash(&mut self, data: &[u8]) {
        self.h = blake2s(&[&self.h, data]);
    }

    fn mix_key(&mut self, mut ikm: [u8; KEY_LEN]) -> Result<(), NoiseError> {
        // A DH output of all zeros means a low-order public key: refuse it (contributory
        // behaviour, as WireGuard does).
        let zero = ikm.iter().fold(0u8, |a, b| a | b) == 0;
        let (ck, mut k) = hkdf2(&self.ck, &ikm);
        ikm.zeroize();
        self.ck.zeroize();
        self.ck = ck;
        self.cs = CipherState::keyed(k);
        k.zeroize();
        if zero {
            Err(NoiseError::WeakKey)
        } else {
            Ok(())
        }
    }

    fn encrypt_and_hash(&mut self, buf: &mut [u8], len: usize) -> Result<usize, NoiseError> {
        let h = self.h;
        let n = self.cs.encrypt_with_ad(&h, buf, len)?;
        self.mix_hash(&buf[..n]);
        Ok(n)
    }

    fn decrypt_and_hash(&mut self, buf: &mut [u8]) -> Result<usize, NoiseError> {
        let h_next = blake2s(&[&self.h, buf]);
        let h = self.h;
        let n = self.cs.decrypt_with_ad(&h, buf)?;
        self.h = h_next;
        Ok(n)
    }

    fn split(&self) -> (CipherState, CipherState) {
        let (mut k1, mut k2) = hkdf2(&self.ck, &[]);
        let out = (CipherState::keyed(k1), CipherState::keyed(k2));
        k1.zeroize();
        k2.zeroize();
        out
    }
}

impl Drop for SymmetricState {
    fn drop(&mut self) {
        self.ck.zeroize();
    }
}

/// Which side of the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Role {
    /// Sends the first message; knows the responder's static key in advance.
    Initiator,
    /// Receives the first message; learns the initiator's static key from it.
    Responder,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Msg1,
    Msg2,
    Done,
}

/// The IK handshake state of one side.
///
/// ```
/// use dmsg_core::secure::noise::IkHandshake;
/// use dmsg_core::secure::Keypair;
///
/// let (si, sr) = (Keypair::from_secret([1; 32]), Keypair::from_secret([2; 32]));
/// let mut i = IkHandshake::initiator(b"p", si.clone(), sr.public(), Keypair::from_secret([3; 32]));
/// let mut r = IkHandshake::responder(b"p", sr, Keypair::from_secret([4; 32]));
/// let mut m = [0u8; 128];
/// let n = i.write_message(b"hi", &mut m).unwrap();
/// let p = r.read_message(&mut m[..n]).unwrap();
/// assert_eq!(&m[p], b"hi");
/// assert_eq!(r.remote_static(), Some(si.public()));
/// let n = r.write_message(b"", &mut m).unwrap();
/// i.read_message(&mut m[..n]).unwrap();
/// let (ti, tr) = (i.into_transport().unwrap(), r.into_transport().unwrap());
/// assert_eq!(ti.handshake_hash, tr.handshake_hash);
/// ```
// Copyable only in fuzz builds (`--cfg fuzzing`), so a fuzz target can restore an
// established state per input; no other build can duplicate key material.
#[cfg_attr(fuzzing, derive(Clone))]
pub struct IkHandshake {
    role: Role,
    step: Step,
    sym: SymmetricState,
    s: Keypair,
    e: Keypair,
    rs: Option<PublicKey>,
    re: Option<PublicKey>,
}

/// The result of a finished handshake: one cipher per direction and the handshake hash.
// Copyable only in fuzz builds (`--cfg fuzzing`), so a fuzz target can restore an
// established state per input; no other build can duplicate key material.
#[cfg_attr(fuzzing, derive(Clone))]
pub struct Transport {
    /// Encrypts what this side sends.
    pub send: CipherState,
    /// Decrypts what this side receives.
    pub recv: CipherState,
    /// The handshake hash `h`: unique to this handshake, known to both sides.
    pub handshake_hash: [u8; HASH_LEN],
    /// The peer's authenticated static public key.
    pub remote_static: PublicKey,
    /// A secret derived from the final chaining key, independent of the transport keys
    /// (used for session resumption, `spec/SECURE.md`).
    pub(crate) resume_secret: [u8; HASH_LEN],
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.resume_secret.zeroize();
    }
}

/// The label of the resume-secret derivation from the final chaining key.
const RESUME_LABEL: &[u8] = b"dmsg-rs resume secret v1";

fn dh(kp: &Keypair, pk: &PublicKey) -> [u8; KEY_LEN] {
    kp.dh(pk)
}

impl IkHandshake {
    /// An initiator with static pair `s`, the responder's static key `rs` and the ephemeral
    /// pair `e` (fresh random for every handshake).
    pub fn initiator(prologue: &[u8], s: Keypair, rs: PublicKey, e: Keypair) -> IkHandshake {
        let mut sym = SymmetricState::new(prologue);
        sym.mix_hash(&rs.0);
        IkHandshake {
            role: Role::Initiator,
            step: Step::Msg1,
            sym,
            s,
            e,
            rs: Some(rs),
            re: None,
        }
    }

    /// A responder with static pair `s` and ephemeral pair `e`.
    pub fn responder(prologue: &[u8], s: Keypair, e: Keypair) -> IkHandshake {
        let mut sym = SymmetricState::new(prologue);
        sym.mix_hash(&s.public().0);
        IkHandshake {
            role: Role::Responder,
            step: Step::Msg1,
            sym,
            s,
            e,
            rs: None,
            re: None,
        }
    }

    /// The peer's static key: known in advance (initiator) or after message 1 (responder).
    pub fn remote_static(&self) -> Option<PublicKey> {
        self.rs
    }

    /// The handshake hash so far.
    pub fn handshake_hash(&self) -> [u8; HASH_LEN] {
        self.sym.h
    }

    /// Whether both messages have been processed.
    pub fn is_finished(&self) -> bool {
        self.step == Step::Done
    }

    /// Writes this side's next message with `payload` into `out`; returns its length.
    pub fn write_message(&mut self, payload: &[u8], out: &mut [u8]) -> Result<usize, NoiseError> {
        match (self.role, self.step) {
            (Role::Initiator, Step::Msg1) => self.write_msg1(payload, out),
            (Role::Responder, Step::Msg2) => self.write_msg2(payload, out),
            _ => Err(NoiseError::WrongStep),
        }
    }

    /// Reads the peer's next message, decrypting in place; returns where the payload is.
    pub fn read_message(&mut self, msg: &mut [u8]) -> Result<core::ops::Range<usize>, NoiseError> {
        match (self.role, self.step) {
            (Role::Responder, Step::Msg1) => self.read_msg1(msg),
            (Role::Initiator, Step::Msg2) => self.read_msg2(msg),
            _ => Err(NoiseError::WrongStep),
        }
    }

    // -> e, es, s, ss
    fn write_msg1(&mut self, payload: &[u8], out: &mut [u8]) -> Result<usize, NoiseError> {
        let total = MSG1_OVERHEAD + payload.len();
        if out.len() < total {
            return Err(NoiseError::Length);
        }
        let rs = self.rs.ok_or(NoiseError::WrongStep)?;
        let e_pub = self.e.public().0;
        out[..KEY_LEN].copy_from_slice(&e_pub);
        self.sym.mix_hash(&e_pub);
        self.sym.mix_key(dh(&self.e, &rs))?;
        out[KEY_LEN..2 * KEY_LEN].copy_from_slice(&self.s.public().0);
        let n = self
            .sym
            .encrypt_and_hash(&mut out[KEY_LEN..2 * KEY_LEN + TAG_LEN], KEY_LEN)?;
        self.sym.mix_key(dh(&self.s, &rs))?;
        let p = KEY_LEN + n;
        out[p..p + payload.len()].copy_from_slice(payload);
        let m = self
            .sym
            .encrypt_and_hash(&mut out[p..total], payload.len())?;
        self.step = Step::Msg2;
        Ok(p + m)
    }

    fn read_msg1(&mut self, msg: &mut [u8]) -> Result<core::ops::Range<usize>, NoiseError> {
        if msg.len() < MSG1_OVERHEAD {
            return Err(NoiseError::Length);
        }
        let mut re = [0u8; KEY_LEN];
        re.copy_from_slice(&msg[..KEY_LEN]);
        let re = PublicKey(re);
        self.sym.mix_hash(&re.0);
        self.sym.mix_key(dh(&self.s, &re))?;
        self.sym
            .decrypt_and_hash(&mut msg[KEY_LEN..2 * KEY_LEN + TAG_LEN])?;
        let mut rs = [0u8; KEY_LEN];
        rs.copy_from_slice(&msg[KEY_LEN..2 * KEY_LEN]);
        let rs = PublicKey(rs);
        self.sym.mix_key(dh(&self.s, &rs))?;
        let p = 2 * KEY_LEN + TAG_LEN;
        let n = self.sym.decrypt_and_hash(&mut msg[p..])?;
        self.re = Some(re);
        self.rs = Some(rs);
        self.step = Step::Msg2;
        Ok(p..p + n)
    }

    // <- e, ee, se
    fn write_msg2(&mut self, payload: &[u8], out: &mut [u8]) -> Result<usize, NoiseError> {
        let total = MSG2_OVERHEAD + payload.len();
        if out.len() < total {
            return Err(NoiseError::Length);
        }
        let (re, rs) = (
            self.re.ok_or(NoiseError::WrongStep)?,
            self.rs.ok_or(NoiseError::WrongStep)?,
        );
        let e_pub = self.e.public().0;
        out[..KEY_LEN].copy_from_slice(&e_pub);
        self.sym.mix_hash(&e_pub);
        self.sym.mix_key(dh(&self.e, &re))?;
        self.sym.mix_key(dh(&self.e, &rs))?;
        out[KEY_LEN..KEY_LEN + payload.len()].copy_from_slice(payload);
        let m = self
            .sym
            .encrypt_and_hash(&mut out[KEY_LEN..total], payload.len())?;
        self.step = Step::Done;
        Ok(KEY_LEN + m)
    }

    fn read_msg2(&mut self, msg: &mut [u8]) -> Result<core::ops::Range<usize>, NoiseError> {
        if msg.len() < MSG2_OVERHEAD {
            return Err(NoiseError::Length);
        }
        let mut re = [0u8; KEY_LEN];
        re.copy_from_slice(&msg[..KEY_LEN]);
        let re = PublicKey(re);
        self.sym.mix_hash(&re.0);
        self.sym.mix_key(dh(&self.e, &re))?;
        self.sym.mix_key(dh(&self.s, &re))?;
        let n = self.sym.decrypt_and_hash(&mut msg[KEY_LEN..])?;
        self.re = Some(re);
        self.step = Step::Done;
        Ok(KEY_LEN..KEY_LEN + n)
    }

    /// `Split()`: the transport ciphers, once both messages are done.
    pub fn into_transport(self) -> Result<Transport, NoiseError> {
        if self.step != Step::Done {
            return Err(NoiseError::WrongStep);
        }
        let rs = self.rs.ok_or(NoiseError::WrongStep)?;
        let (c1, c2) = self.sym.split();
        let (send, recv) = match self.role {
            Role::Initiator => (c1, c2),
            Role::Responder => (c2, c1),
        };
        Ok(Transport {
            send,
            recv,
            handshake_hash: self.sym.h,
            remote_static: rs,
            resume_secret: derive(&self.sym.ck, RESUME_LABEL),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (IkHandshake, IkHandshake, PublicKey) {
        let si = Keypair::from_secret([1; 32]);
        let sr = Keypair::from_secret([2; 32]);
        let pi = si.public();
        let i = IkHandshake::initiator(b"t", si, sr.public(), Keypair::from_secret([3; 32]));
        let r = IkHandshake::responder(b"t", sr, Keypair::from_secret([4; 32]));
        (i, r, pi)
    }

    #[test]
    fn steps_out_of_order_are_refused() {
        let (mut i, mut r, _) = pair();
        let mut m = [0u8; 128];
        assert_eq!(r.write_message(b"", &mut m), Err(NoiseError::WrongStep));
        assert_eq!(
            i.read_message(&mut m[..48]).unwrap_err(),
            NoiseError::WrongStep
        );
        assert!(i.into_transport().is_err());
    }

    #[test]
    fn short_messages_and_buffers_are_length_errors() {
        let (mut i, mut r, _) = pair();
        let mut m = [0u8; 95];
        assert_eq!(i.write_message(b"", &mut m), Err(NoiseError::Length));
        assert_eq!(r.read_message(&mut m).unwrap_err(), NoiseError::Length);
    }

    #[test]
    fn low_order_ephemeral_is_refused() {
        let (_, mut r, _) = pair();
        let mut m = [0u8; 96]; // e = all-zero point: DH output is zero.
        assert_eq!(r.read_message(&mut m).unwrap_err(), NoiseError::WeakKey);
    }

    #[test]
    fn transport_both_ways_and_rekey_stays_in_step() {
        let (mut i, mut r, pi) = pair();
        let mut m = [0u8; 128];
        let n = i.write_message(b"", &mut m).unwrap();
        r.read_message(&mut m[..n]).unwrap();
        assert_eq!(r.remote_static(), Some(pi));
        let n = r.write_message(b"", &mut m).unwrap();
        i.read_message(&mut m[..n]).unwrap();
        let mut ti = i.into_transport().unwrap();
        let mut tr = r.into_transport().unwrap();
        assert_eq!(ti.resume_secret, tr.resume_secret);
        for round in 0..3 {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(b"ping");
            let n = ti.send.encrypt_with_ad(b"ad", &mut b, 4).unwrap();
            let p = tr.recv.decrypt_with_ad(b"ad", &mut b[..n]).unwrap();
            assert_eq!(&b[..p], b"ping", "round {round}");
            ti.send.rekey();
            tr.recv.rekey();
        }
        // A rekey on one side only: the next record no longer verifies.
        ti.send.rekey();
        let mut b = [0u8; 32];
        let n = ti.send.encrypt_with_ad(b"", &mut b, 4).unwrap();
        assert_eq!(
            tr.recv.decrypt_with_ad(b"", &mut b[..n]),
            Err(NoiseError::Decrypt)
        );
    }

    #[test]
    fn nonce_exhaustion_is_an_error_not_a_wrap() {
        let mut c = CipherState::keyed([9; 32]);
        c.n = u64::MAX;
        let mut b = [0u8; 32];
        assert_eq!(
            c.encrypt_with_ad(b"", &mut b, 4),
            Err(NoiseError::NonceExhausted)
        );
        assert_eq!(
            c.decrypt_with_ad(b"", &mut b[..20]),
            Err(NoiseError::NonceExhausted)
        );
    }
}
