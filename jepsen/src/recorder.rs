//! The run's history as it happens: client operations (through `history`'s types) and nemesis
//! events, each stamped with a global sequence number and milliseconds since the run began.
//! An operation's invocation is recorded before its request leaves and its completion after
//! the answer arrives, so the sequence numbers order them consistently with real time.

use std::sync::{Mutex, MutexGuard};

use history::{Op, OpKind, Outcome};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// A nemesis event: a fault begins or ends (`heal`), or a one-shot action happened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NemesisEvent {
    pub seq: u64,
    pub time_ms: u64,
    /// `kill`, `pause`, `partition`, `clock`, `member`, `transfer`, `rotate-root`.
    pub fault: String,
    /// `start`, `heal` or `done` (one-shot actions), `error` when the action failed.
    pub phase: String,
    pub detail: String,
}

#[derive(Debug, Default)]
struct Inner {
    seq: u64,
    ops: Vec<Op>,
    nemesis: Vec<NemesisEvent>,
}

#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    inner: Mutex<Inner>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self { start: Instant::now(), inner: Mutex::default() }
    }
}

impl Recorder {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Milliseconds since the run began.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn invoke(&self, client: &str, key: &str, kind: OpKind) -> usize {
        let ms = self.now_ms();
        let mut inner = self.lock();
        inner.seq += 1;
        let seq = inner.seq;
        inner.ops.push(Op::invoked(client, key, kind, seq, ms));
        inner.ops.len() - 1
    }

    /// The request id operation `op`'s calls carry (`x-request-id`): the audit check finds
    /// every acknowledged operation's record by it.
    pub fn request_id(op: usize) -> String {
        format!("jepsen-op-{op}")
    }

    pub fn complete(&self, op: usize, outcome: Outcome) {
        let ms = self.now_ms();
        let mut inner = self.lock();
        inner.seq += 1;
        let seq = inner.seq;
        if let Some(o) = inner.ops.get_mut(op) {
            o.complete = Some(seq);
            o.complete_ms = ms;
            o.outcome = Some(outcome);
        }
    }

    pub fn nemesis(&self, fault: &str, phase: &str, detail: impl Into<String>) {
        let time_ms = self.now_ms();
        let detail = detail.into();
        println!("{:>8.1}s nemesis {fault} {phase} {detail}", time_ms as f64 / 1000.0);
        let mut inner = self.lock();
        inner.seq += 1;
        let seq = inner.seq;
        inner.nemesis.push(NemesisEvent { seq, time_ms, fault: fault.to_string(), phase: phase.to_string(), detail });
    }

    pub fn ops(&self) -> Vec<Op> {
        self.lock().ops.clone()
    }

    pub fn nemesis_events(&self) -> Vec<NemesisEvent> {
        self.lock().nemesis.clone()
    }
}
