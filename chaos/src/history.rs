//! What happened in a run: the client history (Jepsen-style invoke/complete pairs with ok,
//! fail or unknown outcomes; its types are the `history` crate's, shared with the Jepsen
//! harness), the event trace whose hash proves determinism, and the observations the
//! Raft-safety checkers need.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::{Digest, Sha256};

pub use ::history::{summary, KeyStatus, KeyView, Op, OpKind, Outcome, Value, Violation};

#[derive(Debug, Default)]
pub struct Inner {
    pub seq: u64,
    pub ops: Vec<Op>,
    pub trace: Vec<String>,
    pub violations: Vec<Violation>,
    pub faults: BTreeMap<&'static str, u64>,
    /// Faulty decryption shares the nodes received, by the holder that gave them.
    pub faulty_shares: BTreeMap<u64, u64>,
    pub raft: crate::invariants::raft_safety::RaftRecord,
    /// Every region-loss fault, for the failover check.
    pub region_losses: Vec<crate::invariants::failover::RegionLoss>,
    /// When the workload was told to stop.
    pub stop_ms: Option<u64>,
    /// When each fault was injected, in order.
    pub fault_times: Vec<u64>,
    pub echo: bool,
}

/// The shared recorder; clones share it. The simulation runs on one thread, so the order of
/// records is the order of events.
#[derive(Debug, Clone, Default)]
pub struct Recorder(Arc<Mutex<Inner>>);

thread_local! {
    static DRIVER_MS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Simulated milliseconds since the run started: the current host's view inside the
/// simulation, the driver's (set after every step) outside it.
pub fn now_ms() -> u64 {
    turmoil::sim_elapsed().map(|d| d.as_millis() as u64).unwrap_or_else(|| DRIVER_MS.with(|c| c.get()))
}

/// The driver's clock, updated after every simulation step.
pub fn set_driver_ms(ms: u64) {
    DRIVER_MS.with(|c| c.set(ms));
}

impl Recorder {
    pub fn new(echo: bool) -> Self {
        Self(Arc::new(Mutex::new(Inner { echo, ..Default::default() })))
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a line to the trace, stamped with simulated time.
    pub fn event(&self, line: impl AsRef<str>) {
        self.event_at(now_ms(), line);
    }

    pub fn event_at(&self, ms: u64, line: impl AsRef<str>) {
        let line = format!("{ms:>8} {}", line.as_ref());
        let mut inner = self.lock();
        if inner.echo {
            println!("{line}");
        }
        inner.trace.push(line);
    }

    pub fn fault(&self, kind: &'static str, detail: impl AsRef<str>) {
        let ms = now_ms();
        {
            let mut inner = self.lock();
            *inner.faults.entry(kind).or_default() += 1;
            inner.fault_times.push(ms);
        }
        self.event(format!("fault {kind} {}", detail.as_ref()));
    }

    pub fn violation(&self, invariant: &'static str, detail: impl Into<String>) {
        let detail = detail.into();
        self.event(format!("VIOLATION {invariant}: {detail}"));
        self.lock().violations.push(Violation { invariant, detail });
    }

    pub fn invoke(&self, client: &str, key: &str, kind: OpKind) -> usize {
        let ms = now_ms();
        let mut inner = self.lock();
        inner.seq += 1;
        let seq = inner.seq;
        let line = format!("{ms:>8} #{seq} {client} invoke {} {key}", kind.name());
        if inner.echo {
            println!("{line}");
        }
        inner.trace.push(line);
        inner.ops.push(Op::invoked(client, key, kind, seq, ms));
        inner.ops.len() - 1
    }

    pub fn complete(&self, op: usize, outcome: Outcome) {
        let ms = now_ms();
        let mut inner = self.lock();
        inner.seq += 1;
        let seq = inner.seq;
        let Some(o) = inner.ops.get_mut(op) else { return };
        o.complete = Some(seq);
        o.complete_ms = ms;
        let line = format!("{ms:>8} #{seq} {} {} {} {}", o.client, o.kind.name(), o.key, summary(&outcome));
        o.outcome = Some(outcome);
        if inner.echo {
            println!("{line}");
        }
        inner.trace.push(line);
    }

    /// Raft safety, checked as it happens: one leader per term.
    pub fn leader(&self, term: u64, node: u64) {
        let result = self.lock().raft.leader(term, node);
        match result {
            Ok(()) => self.event(format!("n{node} leads term {term}")),
            Err(e) => self.violation("raft-safety", e),
        }
    }

    /// Raft safety, checked as it happens: every node applies the same entry at each index.
    pub fn applied(&self, node: u64, index: u64, term: u64, digest: [u8; 32]) {
        let result = self.lock().raft.applied(node, index, term, digest);
        if let Err(e) = result {
            self.violation("raft-safety", e);
        }
    }

    pub fn trace_hash(&self) -> String {
        let inner = self.lock();
        let mut h = Sha256::new();
        for line in &inner.trace {
            h.update(line.as_bytes());
            h.update(b"\n");
        }
        hex::encode(h.finalize())
    }
}
