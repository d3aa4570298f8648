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
//! - `rng`: PCG32.
//! - `topo`: line, ring, star, random connected mesh, two levels of hubs; BFS.
//! - `node`: the `SimNode` trait over every `Node<...>`.
//! - `world`: the simulator and its workload.
//! - `check`: invariants against independently computed truth.
//! - `scenario`: the seeded scenarios the tests run.
//! - `scale`: the large random-mesh run (an ignored test).

pub mod check;
pub mod node;
pub mod rng;
pub mod scale;
pub mod scenario;
pub mod topo;
pub mod world;
