//! A deterministic simulator for DMSG nodes: many `Node`s in one process, virtual time,
//! virtual byte-stream links (TCP-like: ordered, no loss, no duplication) with per-link
//! delay, and faults in the style of TigerBeetle's packet simulator and FoundationDB's
//! swizzle-clog: link loss (both ends see a close, the edge reconnects later as a new link),
//! partitions, clogging (bytes wait, none is lost), node restarts (every link reset, state
//! rebuilt). One seeded PRNG drives everything, so a seed replays exactly.
//!
//! With `SimConfig::with_sessions` (nodes with session storage, `scenario::SimRN`) every link
//! runs the reliable session: a lost link or partition suspends the links of its edge, which
//! is dialled again and resumed (the accepting node routes the new stream by its first 64
//! bytes), and a restarted node answers its old sessions' RESUMEs with a stateless RESET.
//!
//! With `SimConfig::encrypted` every transport runs through a pair of core `SecureChannel`s
//! (Noise IK; the dialing node is the initiator, the accepting node admits only the
//! cluster's keys; keys and ephemeral randomness come from the seed). Two more faults: a
//! ciphertext byte altered in flight (the transport ends with a typed `SecureError` and the
//! nodes recover through their normal link-down or suspend path) and a dial with a key
//! nobody knows (refused by policy); `check::check_secure` adds the invariants (no forged
//! byte reaches a frame decoder, no corrupted transport survives, no false alarm).
//!
//! - `rng`: PCG32.
//! - `topo`: line, ring, star, random connected mesh, two levels of hubs; BFS.
//! - `node`: the `SimNode` trait over every `Node<...>`.
//! - `world`: the simulator and its workload.
//! - `check`: invariants against independently computed truth.
//! - `scenario`: the seeded scenarios the tests run.
//! - `secure`: the encrypted transports (keys, the channel pair of a connection).
//! - `scale`: the large random-mesh run (an ignored test).

pub mod check;
pub mod node;
pub mod rng;
pub mod scale;
pub mod scenario;
pub mod secure;
pub mod topo;
pub mod world;
