//! The audit log: one hash-chained record per call this node handles, durable before the
//! call is answered, and the chain head written into the replicated log from time to time.
//!
//! Appends are **group-committed**: callers hand their record to one writer (a thread of its
//! own when the log is on disk, a task in the simulator), which takes every record waiting,
//! links them into the chain, writes them and syncs once, then answers each caller. A caller waits for at most the batch in flight and its own. If the log cannot
//! be written the node **fails closed**: that call and every later one is refused
//! (`Unavailable`) until the operator fixes the disk and restarts the node, as Vault does.
//!
//! The format and the check are the `audit` crate's; where the records live is
//! [`store::AuditStore`]'s.
//!
//! **Architecture Invariant:** a call's answer leaves the node only after its record is
//! durable; a record never holds a plaintext, key material, a ciphertext or a signature, nor
//! an alias (aliases, descriptions and tags are confidential at rest).

pub mod store;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft::{Command, NodeId};
use tokio::sync::{mpsc, oneshot, watch};

pub use store::{AuditStore, FileStore, MemoryStore};

use crate::consensus::Consensus;
use crate::env::Env;
use crate::error::{NodeError, Result, StartError, StartResult};
use crate::kms::{AuditRecord, AuditSink, Caller, Outcome};

/// Records one batch may hold.
const MAX_BATCH: usize = 4096;

/// How the gRPC code of an error is named in a record (the edge owns that mapping).
pub type CodeOf = fn(&NodeError) -> &'static str;

struct Pending {
    record: ::audit::Record,
    done: oneshot::Sender<std::result::Result<(), String>>,
}

/// How a record names the key a call named: by its id as given; an alias is not written
/// (aliases are confidential at rest, like descriptions and tags: the log key seals them
/// everywhere else), only that one was used — the record's `key_id` says which key it named.
fn recorded_key(named: &str) -> String {
    match uuid::Uuid::parse_str(named) {
        Ok(id) => id.to_string(),
        Err(_) => ALIAS_NOT_RECORDED.to_string(),
    }
}

/// What a record holds for a key named by an alias.
pub const ALIAS_NOT_RECORDED: &str = "alias/(not recorded)";

/// This node's audit log.
pub struct AuditLog {
    node: NodeId,
    env: Arc<Env>,
    code_of: CodeOf,
    tx: mpsc::Sender<Pending>,
    /// The last durable record's sequence number and hash.
    head: watch::Receiver<(u64, String)>,
    store: Arc<Mutex<Box<dyn AuditStore>>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditLog {{ node: {}, head: {} }}", self.node, self.head.borrow().0)
    }
}

fn lock(store: &Mutex<Box<dyn AuditStore>>) -> std::sync::MutexGuard<'_, Box<dyn AuditStore>> {
    store.lock().unwrap_or_else(|p| p.into_inner())
}

impl AuditLog {
    /// Opens the log in `store`, continuing its chain, and starts the writer. `retain`: how
    /// many segments to keep (0: all).
    pub fn open(
        node: NodeId,
        env: Arc<Env>,
        store: Box<dyn AuditStore>,
        retain: usize,
        code_of: CodeOf,
    ) -> StartResult<Arc<Self>> {
        let last = store.last().map_err(|e| StartError::Storage(format!("cannot read the audit log: {e}")))?;
        let head = match last {
            None => (0, ::audit::GENESIS.to_string()),
            Some(line) => {
                let r: ::audit::Record = serde_json::from_str(&line).map_err(|e| {
                    StartError::Storage(format!(
                        "the audit log's last record is unreadable ({e}): refusing to continue a chain that may have \
                         been tampered with; `keyquorum audit verify` names what is wrong"
                    ))
                })?;
                (r.seq, r.hash)
            }
        };
        let (head_tx, head_rx) = watch::channel(head.clone());
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        let blocking = store.blocking();
        let store = Arc::new(Mutex::new(store));
        let writer = Writer { store: store.clone(), head, head_tx, retain, node, env: env.clone(), broken: None };
        if blocking {
            write_on_thread(rx, writer)
                .map_err(|e| StartError::Storage(format!("cannot start the audit writer: {e}")))?;
        } else {
            tokio::spawn(write_in_task(rx, writer));
        }
        Ok(Arc::new(Self { node, env, code_of, tx, head: head_rx, store }))
    }

    /// Appends `record`; returns once it is durable.
    pub async fn append(&self, record: ::audit::Record) -> Result<()> {
        let (done, wait) = oneshot::channel();
        let refused =
            |why: &str| NodeError::Unavailable(format!("the audit log cannot be written ({why}): refusing calls"));
        self.tx.send(Pending { record, done }).await.map_err(|_| refused("its writer stopped"))?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(refused(&why)),
            Err(_) => Err(refused("its writer stopped")),
        }
    }

    /// The last durable record's sequence number and hash.
    pub fn head(&self) -> (u64, String) {
        self.head.borrow().clone()
    }

    /// Up to `max` lines from position `from` of the kept log (file order, unreadable lines
    /// included: they are what a check must see), and how many lines it holds.
    pub async fn read(&self, from: usize, max: usize) -> Result<(Vec<::audit::Line>, usize)> {
        let store = self.store.clone();
        let read = move || lock(&store).read();
        let lines = if lock(&self.store).blocking() {
            tokio::task::spawn_blocking(read).await.map_err(|e| NodeError::Internal(e.to_string()))?
        } else {
            read()
        }
        .map_err(|e| NodeError::Internal(format!("cannot read the audit log: {e}")))?;
        let total = lines.len();
        Ok((lines.into_iter().skip(from).take(max).collect(), total))
    }

    fn record_of(&self, r: &AuditRecord<'_>) -> ::audit::Record {
        let (code, outcome) = match &r.outcome {
            Outcome::Served => ("OK", "ok".to_string()),
            Outcome::Forwarded(_) => ("OK", r.outcome.to_string()),
            Outcome::Refused(_) => (r.error.map_or("UNKNOWN", self.code_of), r.outcome.to_string()),
        };
        ::audit::Record {
            seq: 0,
            prev: String::new(),
            time_ms: self.env.now_ms(),
            node: self.node,
            service: r.service.to_string(),
            operation: r.operation.to_string(),
            principal: match &r.ctx.caller {
                Caller::Verified(p) => Some(p.to_string()),
                Caller::Plaintext => None,
            },
            forwarded_by: r.ctx.forwarded_by,
            key: r.key.map(recorded_key),
            key_id: r.used.map(|(id, _)| id.to_string()),
            version: r.used.map(|(_, v)| v),
            context: r.context.cloned().unwrap_or_default(),
            code: code.to_string(),
            outcome,
            request_id: r.ctx.request_id.clone(),
            peer: r.ctx.peer.clone(),
            retained_from: None,
            hash: String::new(),
        }
    }
}

#[async_trait::async_trait]
impl AuditSink for AuditLog {
    async fn record(&self, r: &AuditRecord<'_>) -> Result<()> {
        crate::kms::trace(r);
        self.append(self.record_of(r)).await
    }
}

/// The writer's state: the chain head and whether the log broke.
struct Writer {
    store: Arc<Mutex<Box<dyn AuditStore>>>,
    head: (u64, String),
    head_tx: watch::Sender<(u64, String)>,
    retain: usize,
    node: NodeId,
    env: Arc<Env>,
    broken: Option<String>,
}

/// One batch: every record waiting after `first`, up to [`MAX_BATCH`].
fn drain(first: Pending, rx: &mut mpsc::Receiver<Pending>) -> Vec<Pending> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(p) => batch.push(p),
            Err(_) => break,
        }
    }
    batch
}

/// The injected bug the Jepsen audit-trail check must catch: answer first, write later (a
/// kill -9 meanwhile loses records of answered calls). Whether it is on.
fn answer_before_durable(batch: &mut [Pending]) -> bool {
    if !crate::failpoint("node::audit-answer-before-durable") {
        return false;
    }
    for p in batch {
        let (done, _) = oneshot::channel();
        let _ = std::mem::replace(&mut p.done, done).send(Ok(()));
    }
    true
}

impl Writer {
    /// Links, writes and syncs `batch` (on the calling thread: the store's disk, if it has
    /// one, blocks it), then answers each caller.
    fn commit(&mut self, mut batch: Vec<Pending>) {
        let result = match self.broken.clone() {
            Some(why) => Err(why),
            None => self.write(&mut batch),
        };
        for p in batch {
            let _ = p.done.send(result.clone());
        }
    }

    fn write(&mut self, batch: &mut [Pending]) -> std::result::Result<(), String> {
        let first_seq = self.head.0 + 1;
        let mut bytes = Vec::with_capacity(batch.len() * 384);
        let mut next = self.head.clone();
        for p in batch.iter_mut() {
            bytes.extend_from_slice(p.record.seal_to_line(next.0, &next.1).as_bytes());
            bytes.push(b'\n');
            next = (p.record.seq, p.record.hash.clone());
        }
        if let Err(e) = lock(&self.store).append(first_seq, &bytes) {
            let why = e.to_string();
            tracing::error!(error = %why, "audit: the log cannot be written: this node refuses calls from now on");
            self.broken = Some(why.clone());
            return Err(why);
        }
        self.head = next;
        // Old segments go under the retention setting, and a record says so (it is in the
        // chain: deleting more than it says is caught).
        if let Err(e) = self.retain() {
            tracing::error!(error = %e, "audit: retention failed; the records written are durable");
        }
        let _ = self.head_tx.send(self.head.clone());
        Ok(())
    }

    fn retain(&mut self) -> std::io::Result<()> {
        if self.retain == 0 {
            return Ok(());
        }
        let Some(kept_from) = lock(&self.store).retain(self.retain)? else { return Ok(()) };
        let mut record = ::audit::Record {
            seq: 0,
            prev: String::new(),
            time_ms: self.env.now_ms(),
            node: self.node,
            service: "audit".into(),
            operation: ::audit::RETENTION.into(),
            principal: None,
            forwarded_by: None,
            key: None,
            key_id: None,
            version: None,
            context: Default::default(),
            code: "OK".into(),
            outcome: format!("records before {kept_from} deleted under audit.retain_segments"),
            request_id: String::new(),
            peer: None,
            retained_from: Some(kept_from),
            hash: String::new(),
        };
        let mut bytes = record.seal_to_line(self.head.0, &self.head.1).into_bytes();
        bytes.push(b'\n');
        lock(&self.store).append(record.seq, &bytes)?;
        self.head = (record.seq, record.hash);
        Ok(())
    }
}

/// The writer of a store on disk: a thread of its own, so that a batch's sync waits on
/// neither the async workers nor a blocking-pool hand-off, and the next batch starts as soon
/// as one is durable.
fn write_on_thread(mut rx: mpsc::Receiver<Pending>, mut writer: Writer) -> std::io::Result<()> {
    std::thread::Builder::new().name(format!("audit-writer-{}", writer.node)).spawn(move || {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = drain(first, &mut rx);
            if answer_before_durable(&mut batch) {
                std::thread::sleep(Duration::from_secs(1));
            }
            writer.commit(batch);
        }
    })?;
    Ok(())
}

/// The writer of a store in memory (the simulator's): a task, on the simulated clock.
async fn write_in_task(mut rx: mpsc::Receiver<Pending>, mut writer: Writer) {
    while let Some(first) = rx.recv().await {
        let mut batch = drain(first, &mut rx);
        if answer_before_durable(&mut batch) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        writer.commit(batch);
    }
}

/// Writes this node's chain head into the replicated log every `interval` while it moved,
/// so any other member holds a commitment to this node's records.
pub(crate) async fn publish_heads(log: Arc<AuditLog>, consensus: Arc<Consensus>, interval: Duration) {
    let mut published = 0;
    loop {
        tokio::time::sleep(interval).await;
        let (seq, hash) = log.head();
        if seq <= published || consensus.state().sealed().is_some() {
            continue;
        }
        let now_ms = log.env.now_ms();
        match consensus.propose(Command::AuditHead { node: log.node, seq, hash, now_ms }).await {
            Ok(_) => published = seq,
            Err(e) => tracing::debug!(error = %e, seq, "audit: publishing the chain head failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests;
