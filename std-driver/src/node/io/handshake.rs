//! The runtime's side of the secure channel (`spec/SECURE.md` section 3): starting the
//! handshake on a dialled connection, running it on any connection until it is established
//! (the responder's decision on `PeerHello`), the half-open count, reporting failures, and
//! the static-key check a session resume must pass. The per-connection byte glue is in
//! [`crate::secure`] and `Sock`.

use dmsg_core::secure::{SecureError, SecureEvent};
use dmsg_core::span::LinkId;
use dmsg_core::time::Instant;

use super::{DriveNode, NodeEvent, Phase, Runtime, TransportEnd, CLASSIFY_WAIT};

impl<N: DriveNode> Runtime<N> {
    /// Accepted connections in their handshake.
    pub(super) fn half_open(&self) -> usize {
        self.socks
            .iter()
            .flatten()
            .filter(|s| s.phase == Phase::Handshaking { accepted: true })
            .count()
    }

    /// Reports (once) and counts the failure of socket `i`'s secure channel.
    pub(super) fn secure_failure(&mut self, i: usize) -> Option<SecureError> {
        let s = self.socks.get_mut(i).and_then(Option::as_mut)?;
        let Some(TransportEnd::Secure(e)) = s.end.clone() else {
            return None;
        };
        let sec = s.sec.as_mut()?;
        if sec.reported {
            return None;
        }
        sec.reported = true;
        let failures = sec.ch.stats().failures;
        self.secure.add_failures(&failures);
        self.events.send(NodeEvent::SecureFailed {
            peer: s.peer,
            link: s.link,
            error: e,
        });
        Some(e)
    }

    /// A dialled connection is up: start the secure channel if the keys directory says so.
    /// True when it took the socket (handshake started, or refused and the dial retried).
    pub(super) fn secure_dial(&mut self, i: usize, d: usize, now: Instant) -> bool {
        let Some(setup) = self.opts.secure.clone() else {
            return false;
        };
        let peer = self.dials[d].peer.clone();
        let why = match setup.dial_policy(&peer) {
            Ok(None) => return false,
            Ok(Some(key)) => match setup.initiator(key, now) {
                Ok(w) => {
                    if let Some(s) = self.socks[i].as_mut() {
                        s.sec = Some(w);
                        s.phase = Phase::Handshaking { accepted: false };
                        s.flush_secure();
                        s.flush();
                        log::debug!(
                            "{}: {}: secure handshake with '{peer}' started",
                            self.opts.name,
                            s.peer
                        );
                    }
                    return true;
                }
                Err(e) => format!("cannot start the secure channel with '{peer}': {e}"),
            },
            Err(why) => {
                self.secure.dial_refused += 1;
                format!("refused by the keys directory: {why}")
            }
        };
        log::warn!("{}: {why}", self.opts.name);
        self.drop_sock(i);
        self.dial_failed(d, why);
        true
    }

    /// Runs socket `i`'s handshake: feed it, decide on the peer (responder), send what it
    /// queues; once established the socket carries a link as a plaintext one would.
    pub(super) fn handshake_step(&mut self, i: usize, now: Instant) -> bool {
        let Some(setup) = self.opts.secure.clone() else {
            return false;
        };
        let name = &self.opts.name;
        let Some(s) = self.socks[i].as_mut() else {
            return false;
        };
        let Phase::Handshaking { accepted } = s.phase else {
            return false;
        };
        let Some(sec) = s.sec.as_mut() else {
            return false;
        };
        let peer_addr = s.peer;
        let mut busy = false;
        let mut established = false;
        let r = (|| {
            sec.ch.handle_timeout(now)?;
            loop {
                while let Some(ev) = sec.ch.poll_event() {
                    match ev {
                        SecureEvent::PeerHello { peer } => match setup.who(&peer) {
                            Ok(Some(who)) => {
                                log::debug!("{name}: {peer_addr} proved the key of '{who}'");
                                sec.ch.accept(now)?;
                            }
                            Ok(None) => {
                                log::warn!(
                                    "{name}: {peer_addr} refused: its static key {peer:?} is in no .pub file of {}; to admit it, save its public key as <name>.pub there",
                                    setup.keys().path().display()
                                );
                                return Err(sec.ch.refuse());
                            }
                            Err(e) => {
                                log::warn!("{name}: {peer_addr} refused: cannot read the keys directory: {e}");
                                return Err(sec.ch.refuse());
                            }
                        },
                        SecureEvent::Established { .. } => established = true,
                        SecureEvent::PeerClosed => {}
                    }
                }
                if established || sec.raw_in.is_empty() {
                    break;
                }
                let n = sec.ch.handle_input(now, &sec.raw_in)?;
                if n == 0 {
                    break;
                }
                sec.raw_in.drain(..n);
                busy = true;
            }
            Ok(())
        })();
        let r = r.and_then(|()| {
            if !established && s.end.is_some() {
                // The peer went away in the middle of the handshake.
                sec.ch.handle_eof()?;
            }
            Ok(())
        });
        if let Err(e) = r {
            s.fail_secure(e);
        } else {
            s.flush_secure();
            s.flush();
        }
        if let Some(e) = self.secure_failure(i) {
            log::warn!(
                "{}: {peer_addr}: secure handshake failed: {e}",
                self.opts.name
            );
            let dial = self.socks[i].as_ref().and_then(|s| s.dial);
            self.drop_sock(i);
            if let Some(d) = dial {
                self.dial_failed(d, format!("secure handshake with {peer_addr} failed: {e}"));
            }
            return true;
        }
        if !established {
            return busy;
        }
        self.secure.handshakes += 1;
        if accepted {
            if self.sessions() {
                if let Some(s) = self.socks[i].as_mut() {
                    s.phase = Phase::Classifying {
                        deadline: std::time::Instant::now() + CLASSIFY_WAIT,
                    };
                }
            } else if !self.attach_new(i, now) {
                self.drop_sock(i);
            }
        } else if let Some(d) = self.socks[i].as_ref().and_then(|s| s.dial) {
            self.dial_connected(i, d, now);
        }
        true
    }

    /// Whether socket `i` proves the same static key (or none) as `link` was created with.
    pub(super) fn same_keys(&self, link: LinkId, i: usize) -> bool {
        let was = self.link_keys.get(&link).copied().flatten();
        let now = self.socks[i]
            .as_ref()
            .and_then(|s| s.sec.as_ref())
            .and_then(|w| w.ch.peer_static());
        was == now
    }
}
