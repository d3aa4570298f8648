//! Known-answer tests: the IK handshake and transport against the published cacophony and
//! noise-c test vectors for `Noise_IK_25519_ChaChaPoly_BLAKE2s` (`tests/data/noise/`, sources
//! and licences noted in the file), so the state machine is checked against two
//! implementations it did not write: every handshake and transport ciphertext, both payloads,
//! the responder's view of the initiator's static key and (noise-c) the handshake hash.

use dmsg_core::secure::noise::IkHandshake;
use dmsg_core::secure::{Keypair, PublicKey};
use serde_json::Value;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn key(v: &Value, name: &str) -> [u8; 32] {
    hex(v[name].as_str().unwrap()).try_into().unwrap()
}

#[test]
fn ik_handshake_and_transport_match_the_published_vectors() {
    let text = include_str!("../data/noise/IK_25519_ChaChaPoly_BLAKE2s.json");
    let doc: Value = serde_json::from_str(text).unwrap();
    let vectors = doc["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 2, "cacophony and noise-c");
    let mut compared_hash = false;
    for v in vectors {
        assert_eq!(v["protocol_name"], "Noise_IK_25519_ChaChaPoly_BLAKE2s");
        let prologue = hex(v["init_prologue"].as_str().unwrap());
        assert_eq!(prologue, hex(v["resp_prologue"].as_str().unwrap()));
        let rs = PublicKey(key(v, "init_remote_static"));
        let resp_static = Keypair::from_secret(key(v, "resp_static"));
        assert_eq!(
            resp_static.public(),
            rs,
            "remote static is the responder's public key"
        );
        let init_static = Keypair::from_secret(key(v, "init_static"));
        let init_pub = init_static.public();

        let mut i = IkHandshake::initiator(
            &prologue,
            init_static,
            rs,
            Keypair::from_secret(key(v, "init_ephemeral")),
        );
        let mut r = IkHandshake::responder(
            &prologue,
            resp_static,
            Keypair::from_secret(key(v, "resp_ephemeral")),
        );
        let msgs = v["messages"].as_array().unwrap();
        let payload = |k: usize| hex(msgs[k]["payload"].as_str().unwrap());
        let cipher = |k: usize| hex(msgs[k]["ciphertext"].as_str().unwrap());

        // Message 1: initiator -> responder.
        let mut buf = vec![0u8; 512];
        let n = i.write_message(&payload(0), &mut buf).unwrap();
        assert_eq!(buf[..n], cipher(0)[..], "message 1 ciphertext");
        let mut m = cipher(0);
        let p = r.read_message(&mut m).unwrap();
        assert_eq!(m[p], payload(0)[..], "message 1 payload");
        assert_eq!(r.remote_static(), Some(init_pub));

        // Message 2: responder -> initiator.
        let n = r.write_message(&payload(1), &mut buf).unwrap();
        assert_eq!(buf[..n], cipher(1)[..], "message 2 ciphertext");
        let mut m = cipher(1);
        let p = i.read_message(&mut m).unwrap();
        assert_eq!(m[p], payload(1)[..], "message 2 payload");

        assert_eq!(i.handshake_hash(), r.handshake_hash());
        if v["compare_handshake_hash"].as_bool().unwrap() {
            let hh = hex(v["handshake_hash"].as_str().unwrap());
            assert_eq!(i.handshake_hash()[..], hh[..], "handshake hash");
            compared_hash = true;
        }
        let mut ti = i.into_transport().unwrap();
        let mut tr = r.into_transport().unwrap();
        assert_eq!(ti.handshake_hash, tr.handshake_hash);

        // Transport messages alternate, starting with the initiator (empty associated data).
        for k in 2..msgs.len() {
            let (tx, rx) = if k % 2 == 0 {
                (&mut ti.send, &mut tr.recv)
            } else {
                (&mut tr.send, &mut ti.recv)
            };
            let pl = payload(k);
            buf[..pl.len()].copy_from_slice(&pl);
            let n = tx.encrypt_with_ad(&[], &mut buf, pl.len()).unwrap();
            assert_eq!(buf[..n], cipher(k)[..], "transport message {k}");
            let mut m = cipher(k);
            let pn = rx.decrypt_with_ad(&[], &mut m).unwrap();
            assert_eq!(m[..pn], pl[..], "transport payload {k}");
        }
    }
    assert!(
        compared_hash,
        "at least one vector checks the handshake hash"
    );
}

#[test]
fn a_single_flipped_bit_in_a_vector_message_fails_to_authenticate() {
    let text = include_str!("../data/noise/IK_25519_ChaChaPoly_BLAKE2s.json");
    let doc: Value = serde_json::from_str(text).unwrap();
    let v = &doc["vectors"][0];
    let prologue = hex(v["init_prologue"].as_str().unwrap());
    let ct = hex(v["messages"][0]["ciphertext"].as_str().unwrap());
    // Every bit of message 1 after the clear ephemeral key is authenticated.
    for bit in (32 * 8)..(ct.len() * 8) {
        let mut r = IkHandshake::responder(
            &prologue,
            Keypair::from_secret(key(v, "resp_static")),
            Keypair::from_secret(key(v, "resp_ephemeral")),
        );
        let mut m = ct.clone();
        m[bit / 8] ^= 1 << (bit % 8);
        assert!(r.read_message(&mut m).is_err(), "bit {bit} accepted");
    }
}
