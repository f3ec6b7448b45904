//! The loop's side of the protocol inspector (`src/inspect.rs`): what crosses an inspected connection's wire is
//! recorded where it happens (its handshake in `upgrade`, each frame arriving in `consume`, each frame queued in
//! `outbound.rs`), and handed to [`Handler::inspect`] once per turn, after everything else the turn did.
//!
//! What that callback sends is not recorded: the loop carries its sends out with recording off, so a page that shows
//! its own frames does not see, without end, the frames that show them.

use std::collections::HashMap;
use std::mem;

use super::Server;
use crate::connection::Chunk;
use crate::handler::Handler;
use crate::inspect::{Handshake, Inspect, Seen};

/// The records of this loop's inspected connections (the connections carry only the flag `is_inspected`).
#[derive(Debug, Default)]
pub(super) struct Inspector {
    records: HashMap<usize, Inspect>,
    /// Inspected connections with records waiting.
    waiting: Vec<usize>,
    /// `Handler::inspect`'s sends are being carried out: they are not recorded.
    is_reporting: bool,
}

impl Inspector {
    /// Starts recording connection `key`, with its handshake.
    pub fn start(&mut self, key: usize, handshake: Handshake) {
        let mut inspect = Inspect::default();
        inspect.push(Seen::Handshake(handshake));
        self.records.insert(key, inspect);
        self.waiting.push(key);
    }

    /// Runs `record` on connection `key`'s records, and notes that they wait for the callback if they now do.
    fn record(&mut self, key: usize, record: impl FnOnce(&mut Inspect)) {
        if let Some(inspect) = self.records.get_mut(&key) {
            let was_empty = inspect.pending.is_empty();
            record(inspect);
            if was_empty && !inspect.pending.is_empty() {
                self.waiting.push(key);
            }
        }
    }

    /// A chunk about to be queued for inspected connection `key`.
    #[cold]
    pub fn sent(&mut self, key: usize, chunk: &Chunk) {
        if !self.is_reporting {
            self.record(key, |inspect| inspect.sent(chunk.parts(0)));
        }
    }

    /// The bytes at the front of an inspected connection's input, before they are decoded.
    #[cold]
    pub fn arriving(&mut self, key: usize, rest: &[u8]) {
        self.record(key, |inspect| inspect.arriving(rest));
    }

    /// The frame at the front of an inspected connection's input was decoded.
    #[cold]
    pub fn decoded(&mut self, key: usize) {
        if let Some(inspect) = self.records.get_mut(&key) {
            inspect.decoded();
        }
    }

    /// An inspected connection is gone: its records go with it.
    pub fn forget(&mut self, key: usize) {
        self.records.remove(&key);
    }

    pub fn is_reporting(&self) -> bool {
        self.is_reporting
    }

    pub fn is_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }
}

impl Server {
    /// Hands every waiting record to the handler's `inspect`, connection by connection, and carries out what it
    /// asked for with recording off.
    pub(super) fn report_inspected<H: Handler>(&mut self, handler: &mut H) {
        while self.inspector.is_waiting() {
            for key in mem::take(&mut self.inspector.waiting) {
                let Some(id) = self.conns.get(key).filter(|c| c.is_open()).map(|c| c.id) else {
                    continue;
                };
                let Some(pending) = self
                    .inspector
                    .records
                    .get_mut(&key)
                    .map(|inspect| mem::take(&mut inspect.pending))
                else {
                    continue;
                };
                for seen in &pending {
                    handler.inspect(&mut self.handle(), id, seen);
                }
                self.inspector.is_reporting = true;
                self.apply_actions(handler);
                self.inspector.is_reporting = false;
            }
        }
    }
}
