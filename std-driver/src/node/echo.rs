//! The echo service a leaf runs ([`NodeOptions::echo`](super::NodeOptions::echo)): every
//! transaction opened to the node is answered frame by frame with the same aux, and closed
//! when the opener closes its side.

use std::collections::{HashSet, VecDeque};

use dmsg_core::link::{Outgoing, SendError};
use dmsg_core::node::{NodeError, NodeTxn};
use dmsg_core::time::Instant;
use dmsg_core::wire::{Command, Flags};

use super::drive::DriveNode;

/// Answers waiting for room before more events are taken.
pub(crate) const BACKLOG: usize = 64;

/// One answer to send.
struct Answer {
    txn: NodeTxn,
    command: Command,
    aux: Vec<u8>,
    last: bool,
}

/// Echoed transactions and the answers that wait for room on their link.
#[derive(Default)]
pub(crate) struct Echo {
    txns: HashSet<NodeTxn>,
    backlog: VecDeque<Answer>,
    /// Frames echoed.
    pub frames: u64,
}

impl Echo {
    /// True when the transaction is the service's.
    pub fn owns(&self, txn: NodeTxn) -> bool {
        self.txns.contains(&txn)
    }

    /// A transaction opened to us, or a further frame of one: queue its echo.
    pub fn frame(
        &mut self,
        txn: NodeTxn,
        command: Command,
        aux: &[u8],
        flags: Flags,
        opened: bool,
    ) {
        if opened {
            self.txns.insert(txn);
        }
        self.backlog.push_back(Answer {
            txn,
            command,
            aux: aux.to_vec(),
            last: flags.contains(Flags::DELETE),
        });
    }

    /// The transaction finished.
    pub fn closed(&mut self, txn: NodeTxn) {
        self.txns.remove(&txn);
        self.backlog.retain(|a| a.txn != txn);
    }

    /// True while more events may be taken.
    pub fn has_room(&self) -> bool {
        self.backlog.len() < BACKLOG
    }

    /// Sends queued answers while their links have room; true if any went out.
    pub fn flush(&mut self, node: &mut dyn DriveNode, now: Instant) -> bool {
        let mut did = false;
        let mut blocked: Vec<NodeTxn> = Vec::new();
        let mut i = 0;
        while i < self.backlog.len() {
            let a = &self.backlog[i];
            if blocked.contains(&a.txn) {
                // Keep the order within a transaction.
                i += 1;
                continue;
            }
            let flags = if a.last {
                Flags::DELETE
            } else {
                Flags::empty()
            };
            let msg = Outgoing::new(a.command).with_aux(&a.aux);
            match node.send(now, a.txn, &msg, flags) {
                Ok(()) => {
                    self.frames += 1;
                    self.backlog.remove(i);
                    did = true;
                }
                Err(NodeError::Link(SendError::WouldBlock { .. })) => {
                    blocked.push(a.txn);
                    i += 1;
                }
                Err(e) => {
                    log::debug!("echo on {}: {e}; answer dropped", a.txn.link);
                    self.backlog.remove(i);
                }
            }
        }
        did
    }
}
