//! The KMS application layer: every KMS call, transport-free, through one pipeline in one
//! direction:
//!
//! 1. **validate** what needs no state (sizes, counts);
//! 2. **admit**: this node is unsealed and (for calls on keys) the cluster initialised;
//! 3. **route**: serve here, or forward to a member in the key's regions, decided from this
//!    node's state *before* the read barrier (`Routed::Forward`; the gRPC edge sends it);
//! 4. **read barrier** at the call's consistency, then **resolve** the keys from the fresh
//!    state, and route again should the fresh state have moved the key's regions;
//! 5. **authorize** the call's principal for the operation on those keys, against their
//!    policies and grants as the barrier's state holds them (`raft::Key::authorize`); writes
//!    are authorized again by the state machine as they apply, against the state they apply
//!    to, so a revocation binds every call that starts after it was acknowledged;
//! 6. **work**: custody and crypto (`crypto.rs`), or a replicated command (`keys.rs`);
//! 7. **record** the call (`audit.rs`).
//!
//! **Architecture Invariant:** no tonic, no wire types: the gRPC edge converts to and from
//! [`Op`] and [`Out`]. A call's [`CallContext`] names the principal it is for from the edge to
//! the record, through forwarding.

pub mod audit;
mod context;
mod crypto;
pub mod duties;
mod keys;
mod op;
mod quota;
pub mod topology;

use std::collections::BTreeSet;
use std::sync::Arc;

use raft::{Key, KeyRef, KmsError, NodeId, NodeInfo, Permission, Principal};

pub use audit::{trace, AuditRecord, AuditSink, Outcome};
pub use context::{CallContext, Caller};
pub use op::{Context, KeyInfo, NewGrant, NewKey, Op, Out, MAX_RANDOM_BYTES};

use crate::error::{NodeError, Result};
use crate::node::Node;

/// Where a call is served: here, with what it answers (`T`), or at another member, to which
/// the gRPC edge sends the operation (`O`) with the call's context.
#[derive(Debug)]
pub enum Routed<T, O> {
    Served(T),
    Forward(Forward<T>, O),
}

/// A call this node sends elsewhere.
#[derive(Debug)]
pub struct Forward<T> {
    /// The members to try, in order.
    pub to: Vec<(NodeId, NodeInfo)>,
    /// Why this node does not serve it (the error if no member answers).
    pub refusal: NodeError,
    /// Whether the call may be sent to the next member after one answered with an error
    /// that leaves its effect in doubt (reads and tokened writes may).
    pub idempotent: bool,
    /// What to answer if no member answers (the topology falls back to this node's view).
    pub fallback: Option<T>,
}

/// The keys a call is about, resolved.
#[derive(Debug, Default)]
struct Target {
    key: Option<Key>,
    /// ReEncrypt's destination.
    destination: Option<Key>,
}

impl Target {
    fn placement(&self) -> Placement {
        Placement { key: self.key.as_ref().map(Placed::of), destination: self.destination.as_ref().map(Placed::of) }
    }
}

/// Where a key may be held: all routing needs of it.
#[derive(Debug)]
struct Placed {
    id: uuid::Uuid,
    /// Empty: every region.
    allowed: BTreeSet<String>,
}

impl Placed {
    fn of(key: &Key) -> Self {
        Self { id: key.id, allowed: key.allowed_regions.clone() }
    }
}

/// Where the keys a call is about may be held.
#[derive(Debug, Default)]
struct Placement {
    key: Option<Placed>,
    /// ReEncrypt's destination.
    destination: Option<Placed>,
}

impl Placement {
    /// The keys, as an error names them.
    fn what(&self, op: &Op) -> String {
        match (op, &self.key, &self.destination) {
            (Op::CreateKey(_), _, _) => "the new key".into(),
            (_, Some(s), Some(d)) if d.id != s.id => format!("re-encrypting from key {} to key {}", s.id, d.id),
            (_, Some(s), _) => format!("key {}", s.id),
            (_, None, _) => "the key".into(),
        }
    }
}

/// What a call's record holds besides its answer, and the answer already recorded.
struct Recorder<'a> {
    kms: &'a Kms,
    ctx: &'a CallContext,
    operation: &'static str,
    key: Option<String>,
    context: Option<Context>,
    /// The outcome (and key version used) of the record written for this call, if one was.
    written: std::sync::Mutex<Option<Said>>,
}

/// What a record said of a call's answer: its outcome and the key version it used.
type Said = (Outcome, Option<(uuid::Uuid, u32)>);

impl Recorder<'_> {
    /// Makes `result` durable in the call's record, unless a record saying the same was.
    async fn record(&self, result: &Result<Routed<Out, Op>>) -> Result<()> {
        let outcome = Outcome::of(result);
        let used = match result {
            Ok(Routed::Served(out)) => out.used(),
            _ => None,
        };
        let said = (outcome, used);
        if self.written.lock().unwrap_or_else(|p| p.into_inner()).as_ref() == Some(&said) {
            return Ok(());
        }
        let record = AuditRecord {
            node: self.kms.node.id(),
            service: "kms",
            operation: self.operation,
            key: self.key.as_deref(),
            ctx: self.ctx,
            outcome: said.0.clone(),
            error: result.as_ref().err(),
            context: self.context.as_ref(),
            used,
        };
        // (The failpoint: the benchmark of what recording costs, and the self-test of the
        // Jepsen audit-trail check.)
        if !crate::failpoint("node::skip-audit") {
            self.kms.audit.record(&record).await?;
        }
        *self.written.lock().unwrap_or_else(|p| p.into_inner()) = Some(said);
        Ok(())
    }
}

/// What [`NodeError::Overloaded`] asks a caller to wait before trying again.
const OVERLOADED_RETRY_AFTER_MS: u64 = 20;

/// The KMS service of one node.
pub struct Kms {
    node: Arc<Node>,
    audit: Arc<dyn AuditSink>,
    /// One permit per call in flight (`limits.max_concurrent_calls`).
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Per-principal call rates at this node.
    throttle: quota::Throttle,
}

impl std::fmt::Debug for Kms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kms {{ node: {} }}", self.node.id())
    }
}

impl Kms {
    pub fn new(node: Arc<Node>, audit: Arc<dyn AuditSink>) -> Self {
        let in_flight = Arc::new(tokio::sync::Semaphore::new(node.config().limits.max_concurrent_calls));
        Self { node, audit, in_flight, throttle: quota::Throttle::default() }
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Runs one KMS call through the pipeline and records it.
    pub async fn execute(&self, ctx: &CallContext, op: Op) -> Result<Routed<Out, Op>> {
        let recorder = Recorder {
            kms: self,
            ctx,
            operation: op.name(),
            key: op.key(),
            context: op.context().filter(|c| !c.is_empty()).cloned(),
            written: std::sync::Mutex::new(None),
        };
        let result = self.bounded(ctx, op, &recorder).await;
        // Fail closed: no answer leaves without its record.
        recorder.record(&result).await?;
        result
    }

    /// The pipeline within this node's limits: a call over its principal's rate at this node,
    /// or beyond `limits.max_concurrent_calls` in flight, is refused before any work; one that
    /// runs past `limits.call_timeout_ms` is answered `DEADLINE_EXCEEDED`.
    async fn bounded(&self, ctx: &CallContext, op: Op, recorder: &Recorder<'_>) -> Result<Routed<Out, Op>> {
        self.charge(ctx, &op)?;
        let limits = &self.node.config().limits;
        let Ok(_permit) = self.in_flight.clone().try_acquire_owned() else {
            return Err(NodeError::Overloaded {
                node: self.node.id(),
                limit: limits.max_concurrent_calls,
                retry_after_ms: OVERLOADED_RETRY_AFTER_MS,
            });
        };
        let timeout = std::time::Duration::from_millis(limits.call_timeout_ms);
        let name = op.name();
        tokio::time::timeout(timeout, self.pipeline(ctx, op, recorder)).await.unwrap_or_else(|_| {
            Err(NodeError::DeadlineExceeded(format!(
                "{name} did not finish within this node's limit of {} ms for one call (a write may or may not have \
                 taken effect)",
                limits.call_timeout_ms
            )))
        })
    }

    /// Takes a token from the principal's bucket for the call's class, under the quotas as
    /// this node has applied them. A forwarded call was charged where it entered the cluster.
    fn charge(&self, ctx: &CallContext, op: &Op) -> Result<()> {
        let (Some(principal), None, Some(class)) = (ctx.principal(), ctx.forwarded_by, op.class()) else {
            return Ok(());
        };
        let state = self.node.state().read();
        let now = tokio::time::Instant::now();
        self.throttle.admit(state.store.quotas(), principal, class, now).map_err(|over| NodeError::Throttled {
            principal: principal.to_string(),
            class: class.name(),
            rate: over.rate,
            scope: over.scope,
            node: self.node.id(),
            retry_after_ms: over.retry_after_ms,
        })
    }

    async fn pipeline(&self, ctx: &CallContext, op: Op, recorder: &Recorder<'_>) -> Result<Routed<Out, Op>> {
        if let Some(member @ Principal::Node(_)) = ctx.principal() {
            return Err(KmsError::AccessDenied {
                principal: member.to_string(),
                operation: format!("{} (cluster members forward calls; they do not make them)", op.name()),
                key: None,
            }
            .into());
        }
        op.validate()?;
        self.admit(&op).await?;
        if let Op::GetTopology = op {
            return Ok(self.topology(ctx, op));
        }
        let local = self.place_local(&op)?;
        if let Some(forward) = self.route(ctx, &op, &local)? {
            return Ok(Routed::Forward(forward, op));
        }
        if let Some(answer) = self.presume(ctx, &op, recorder).await {
            return answer;
        }
        // The injected bug the revocation checkers must catch: authorize on this node's state
        // before the read barrier, which may not hold a revoke acknowledged elsewhere yet.
        let authorized_early = crate::failpoint("node::authorize-before-read-barrier");
        if authorized_early {
            self.authorize(ctx, &op, &self.resolve(&op)?)?;
        }
        if reads(&op) {
            self.node.linearize(ctx.consistency).await?;
        } else if rotates_unknown(&op, &local) {
            // New material is made where the key may be held: decide that on fresh state when
            // this node does not know the key by id.
            self.node.linearize(crate::consensus::Consistency::Linearizable).await?;
        }
        let target = self.resolve(&op)?;
        // The fresh state may have moved the key's regions since the route was chosen.
        if let Some(forward) = self.route(ctx, &op, &target.placement())? {
            return Ok(Routed::Forward(forward, op));
        }
        // (The failpoint: the benchmark of what authorizing costs, and the self-tests of the
        // revocation checkers.)
        if !authorized_early && !crate::failpoint("node::skip-authorization") {
            self.authorize(ctx, &op, &target)?;
        }
        self.work(ctx, op, target).await.map(Routed::Served)
    }

    /// A linearizable crypto read served from this node's state as it is, its record written
    /// while the read barrier runs instead of after it: the answer stands when the barrier's
    /// read index is one that state already held. That state then held every write
    /// acknowledged before the call began (a revoke above all), so the answer is the one the
    /// barrier-first path gives, and linearizable. `None`: the barrier-first path serves the
    /// call — it is not such a read, it is not served here, it failed, or the state was behind
    /// (then, should its answer differ, a second record with the same request id says what
    /// was answered).
    async fn presume(&self, ctx: &CallContext, op: &Op, recorder: &Recorder<'_>) -> Option<Result<Routed<Out, Op>>> {
        if ctx.consistency != crate::consensus::Consistency::Linearizable {
            return None;
        }
        let copy = op.presumable()?;
        let from = self.node.applied_index();
        let target = self.resolve(&copy).ok()?;
        if !matches!(self.route(ctx, &copy, &target.placement()), Ok(None)) {
            return None;
        }
        if !crate::failpoint("node::skip-authorization") {
            self.authorize(ctx, &copy, &target).ok()?;
        }
        let served = Ok(Routed::Served(self.work(ctx, copy, target).await.ok()?));
        // The injected bug the revocation checkers must catch (as in the barrier-first path):
        // trust this node's state without a read barrier.
        let trusted = crate::failpoint("node::authorize-before-read-barrier");
        let fresh = async { trusted || self.node.covers(from).await.unwrap_or(false) };
        let (recorded, fresh) = tokio::join!(recorder.record(&served), fresh);
        if let Err(e) = recorded {
            return Some(Err(e));
        }
        fresh.then_some(served)
    }

    /// This node may serve the call at all: unsealed, and for calls on keys, initialised.
    async fn admit(&self, op: &Op) -> Result<()> {
        match op {
            Op::GenerateRandom { .. } | Op::GetTopology => self.node.ensure_unsealed(),
            _ => self.node.ensure_initialized().await,
        }
    }

    /// Where the keys the call is about may be held, from this node's state as it is (maybe
    /// behind): what the route is decided on. A key this node does not know yet is resolved
    /// after the barrier.
    fn place_local(&self, op: &Op) -> Result<Placement> {
        let state = self.node.state().read();
        let find = |key: &KeyRef| state.store.resolve(key).ok().map(Placed::of);
        Ok(match op {
            Op::Encrypt { key, .. }
            | Op::GenerateDataKey { key, .. }
            | Op::Sign { key, .. }
            | Op::RotateKey { key } => Placement { key: find(key), destination: None },
            Op::Decrypt { ciphertext, .. } => {
                let header = ::crypto::ciphertext::parse_header(ciphertext)?;
                Placement { key: find(&KeyRef::Id(header.key_id)), destination: None }
            }
            Op::ReEncrypt { ciphertext, destination, .. } => {
                let header = ::crypto::ciphertext::parse_header(ciphertext)?;
                Placement { key: find(&KeyRef::Id(header.key_id)), destination: destination.as_ref().and_then(find) }
            }
            _ => Placement::default(),
        })
    }

    /// The keys the call is about, from the state after the read barrier.
    fn resolve(&self, op: &Op) -> Result<Target> {
        let state = self.node.open_state()?;
        let get = |key: &KeyRef| state.store.resolve(key).cloned().map_err(NodeError::from);
        let named_by_ciphertext = |ciphertext: &[u8]| -> Result<Key> {
            let header = ::crypto::ciphertext::parse_header(ciphertext)?;
            state.store.resolve(&KeyRef::Id(header.key_id)).cloned().map_err(|e| match e {
                raft::KmsError::KeyNotFound(_) => NodeError::Invalid(format!(
                    "the ciphertext names key {}, which does not exist in this cluster",
                    header.key_id
                )),
                other => other.into(),
            })
        };
        Ok(match op {
            Op::DescribeKey { key }
            | Op::ListKeyVersions { key }
            | Op::Encrypt { key, .. }
            | Op::GenerateDataKey { key, .. }
            | Op::Sign { key, .. }
            | Op::Verify { key, .. }
            | Op::GetPublicKey { key, .. }
            | Op::GetKeyPolicy { key }
            | Op::ListGrants { key }
            | Op::RotateKey { key } => Target { key: Some(get(key)?), destination: None },
            Op::Decrypt { ciphertext, expected_key, .. } => {
                let key = named_by_ciphertext(ciphertext)?;
                if let Some(expected) = expected_key {
                    if get(expected)?.id != key.id {
                        return Err(NodeError::Invalid(format!(
                            "the ciphertext belongs to key {}, not to {expected}",
                            key.id
                        )));
                    }
                }
                Target { key: Some(key), destination: None }
            }
            Op::ReEncrypt { ciphertext, destination, .. } => {
                let source = named_by_ciphertext(ciphertext)?;
                let destination = match destination {
                    Some(d) => get(d)?,
                    None => source.clone(),
                };
                Target { key: Some(source), destination: Some(destination) }
            }
            // Other writes resolve their key in the state machine.
            _ => Target::default(),
        })
    }

    /// Where the call is served: here, or (for a call that needs a region-restricted key's
    /// material, or makes it) at a member in the key's regions. `None`: here.
    fn route(&self, ctx: &CallContext, op: &Op, place: &Placement) -> Result<Option<Forward<Out>>> {
        let allowed = match op {
            Op::CreateKey(new) => new.allowed_regions.clone(),
            Op::ReEncrypt { .. } => {
                let Some(source) = &place.key else { return Ok(None) };
                match regions_for_all([Some(source), place.destination.as_ref()].into_iter().flatten()) {
                    Some(allowed) => allowed,
                    None => {
                        return Err(NodeError::Invalid(format!(
                            "{}: the two keys' allowed regions do not overlap, so no node may hold both",
                            place.what(op)
                        )))
                    }
                }
            }
            Op::Encrypt { .. }
            | Op::Decrypt { .. }
            | Op::GenerateDataKey { .. }
            | Op::Sign { .. }
            | Op::RotateKey { .. } => match &place.key {
                Some(key) => key.allowed.clone(),
                None => return Ok(None),
            },
            _ => return Ok(None),
        };
        if self.node.custody.in_regions(&allowed) {
            return Ok(None);
        }
        let region = self.node.config().region.clone();
        let refusal = NodeError::OutOfRegion { key: place.what(op), allowed: allowed.clone(), region };
        if ctx.forwarded_by.is_some() {
            return Err(NodeError::Unavailable(format!(
                "{refusal} (the call was forwarded here; not forwarding it again)"
            )));
        }
        let to = self.node.custody.members_in(&allowed);
        if to.is_empty() {
            return Err(NodeError::Unavailable(format!("{refusal}, and no member of the cluster is in those regions")));
        }
        let idempotent = !op.writes() || ctx.token.is_some();
        Ok(Some(Forward { to, refusal, idempotent, fallback: None }))
    }

    /// Whether the call's principal may do this to the resolved keys, by their policies and
    /// grants in the state the barrier gave. Writes that resolve their key in the state machine
    /// are authorized there, at apply; RotateKey is checked here too, before material is made
    /// for it. Without authentication (plaintext) nothing is checked.
    fn authorize(&self, ctx: &CallContext, op: &Op, target: &Target) -> Result<()> {
        let Some(principal) = ctx.principal() else { return Ok(()) };
        let now_ms = self.node.now_ms();
        let check = |key: &Option<Key>, permission: Permission, context: Option<&Context>| -> Result<()> {
            let key = key.as_ref().ok_or_else(|| NodeError::Internal("authorizing an unresolved key".into()))?;
            let request = raft::Request { principal, region: &ctx.region, context, now_ms };
            Ok(key.authorize(permission, &request)?)
        };
        let key = &target.key;
        match op {
            Op::CreateKey(_) => match principal {
                Principal::Client(_) => Ok(()),
                other => Err(KmsError::AccessDenied {
                    principal: other.to_string(),
                    operation: "CreateKey (keys are created by client principals)".into(),
                    key: None,
                }
                .into()),
            },
            Op::DescribeKey { .. } | Op::ListKeyVersions { .. } => check(key, Permission::Describe, None),
            Op::RotateKey { .. } => check(key, Permission::Rotate, None),
            Op::Encrypt { context, .. } => check(key, Permission::Encrypt, Some(context)),
            Op::Decrypt { context, .. } => check(key, Permission::Decrypt, Some(context)),
            Op::ReEncrypt { source_context, destination_context, .. } => {
                check(key, Permission::ReEncryptFrom, Some(source_context))?;
                check(&target.destination, Permission::ReEncryptTo, Some(destination_context))
            }
            Op::GenerateDataKey { context, with_plaintext: true, .. } => {
                check(key, Permission::GenerateDataKey, Some(context))
            }
            Op::GenerateDataKey { context, with_plaintext: false, .. } => {
                check(key, Permission::GenerateDataKeyWithoutPlaintext, Some(context))
            }
            Op::Sign { .. } => check(key, Permission::Sign, None),
            Op::Verify { .. } => check(key, Permission::Verify, None),
            Op::GetPublicKey { .. } => check(key, Permission::GetPublicKey, None),
            Op::GetKeyPolicy { .. } => check(key, Permission::GetPolicy, None),
            Op::ListGrants { .. } => {
                check(key, Permission::GetPolicy, None).or_else(|_| check(key, Permission::RevokeGrant, None))
            }
            // Authorized by the state machine as they apply.
            Op::CreateAlias { .. }
            | Op::DeleteAlias { .. }
            | Op::UpdateKey { .. }
            | Op::PutKeyPolicy { .. }
            | Op::CreateGrant { .. }
            | Op::RevokeGrant { .. } => Ok(()),
            // Lists only what the principal may describe; no key.
            Op::ListKeys { .. } | Op::GenerateRandom { .. } | Op::GetTopology => Ok(()),
        }
    }

    async fn work(&self, ctx: &CallContext, op: Op, target: Target) -> Result<Out> {
        let Target { key, destination } = target;
        let key = || key.ok_or_else(|| NodeError::Internal("a key operation reached its work unresolved".into()));
        match op {
            Op::CreateKey(new) => self.create_key(ctx, new).await,
            Op::DescribeKey { .. } => Ok(Out::Key(self.info(key()?)?)),
            Op::ListKeys { after, page_size } => self.list_keys(ctx, after, page_size),
            Op::CreateAlias { alias, key } => self.create_alias(ctx, alias, key).await,
            Op::DeleteAlias { alias } => self.delete_alias(ctx, alias).await,
            Op::UpdateKey { key, change } => self.update_key(ctx, key, change).await,
            Op::RotateKey { key: named } => self.rotate_key(ctx, named, key()?.spec).await,
            Op::ListKeyVersions { .. } => Ok(Out::Key(self.info(key()?)?)),
            Op::Encrypt { plaintext, context, .. } => self.encrypt(&key()?, &plaintext, &context).await,
            Op::Decrypt { ciphertext, context, .. } => self.decrypt(&key()?, &ciphertext, &context).await,
            Op::ReEncrypt { ciphertext, source_context, destination_context, .. } => {
                let destination =
                    destination.ok_or_else(|| NodeError::Internal("re-encrypt without destination".into()))?;
                self.re_encrypt(&key()?, &ciphertext, &source_context, &destination, &destination_context).await
            }
            Op::GenerateDataKey { bytes, context, with_plaintext, .. } => {
                self.data_key(&key()?, bytes, &context, with_plaintext).await
            }
            Op::GenerateRandom { bytes } => Ok(self.random(bytes)),
            Op::Sign { message, .. } => self.sign(&key()?, &message).await,
            Op::Verify { version, message, signature, .. } => self.verify(&key()?, version, &message, &signature),
            Op::GetPublicKey { version, .. } => self.public_key(&key()?, version),
            Op::GetTopology => Ok(Out::Topology(self.node.local_topology())),
            Op::GetKeyPolicy { .. } => {
                let k = key()?;
                Ok(Out::Policy { key_id: k.id, owner: k.owner, policy: k.policy })
            }
            Op::PutKeyPolicy { key, policy } => self.put_policy(ctx, key, policy).await,
            Op::CreateGrant { key, grant } => self.create_grant(ctx, key, grant).await,
            Op::ListGrants { .. } => {
                let k = key()?;
                Ok(Out::Grants { key_id: k.id, grants: k.grants.into_values().collect() })
            }
            Op::RevokeGrant { key, grant, retire } => self.revoke_grant(ctx, key, grant, retire).await,
        }
    }

    /// The topology with the leader's view of health: the leader's answer when this node is
    /// not the leader (and the call was not forwarded), this node's own when the leader does
    /// not answer.
    fn topology(&self, ctx: &CallContext, op: Op) -> Routed<Out, Op> {
        let local = self.node.local_topology();
        let leader = match self.node.consensus.leader() {
            Some((id, addr)) if id != self.node.id() && ctx.forwarded_by.is_none() => (id, addr),
            _ => return Routed::Served(Out::Topology(local)),
        };
        let (id, addr) = leader;
        let info = self.node.consensus.members().into_iter().find(|(m, _)| *m == id).map(|(_, i)| i);
        let info = info.unwrap_or(NodeInfo { addr, ..NodeInfo::default() });
        let forward = Forward {
            to: vec![(id, info)],
            refusal: NodeError::Unavailable("the leader did not answer".into()),
            idempotent: true,
            fallback: Some(Out::Topology(local)),
        };
        Routed::Forward(forward, op)
    }

    fn info(&self, key: Key) -> Result<KeyInfo> {
        let aliases = self.node.open_state()?.store.aliases_of(key.id);
        Ok(KeyInfo { key, aliases })
    }
}

/// Whether the call reads the replicated state (and so waits for its consistency first).
fn reads(op: &Op) -> bool {
    !op.writes() && !matches!(op, Op::GenerateRandom { .. } | Op::GetTopology)
}

/// A rotation of a key this node does not know by id: by alias (which may since point
/// elsewhere) or not yet applied here.
fn rotates_unknown(op: &Op, local: &Placement) -> bool {
    matches!(op, Op::RotateKey { key } if matches!(key, KeyRef::Alias(_)) || local.key.is_none())
}

/// Which regions may use all of `keys` (empty sets: every region); `None` when none may.
fn regions_for_all<'a>(keys: impl IntoIterator<Item = &'a Placed>) -> Option<BTreeSet<String>> {
    let mut allowed: Option<BTreeSet<String>> = None;
    for k in keys {
        if k.allowed.is_empty() {
            continue;
        }
        allowed = Some(match allowed {
            None => k.allowed.clone(),
            Some(a) => a.intersection(&k.allowed).cloned().collect(),
        });
    }
    match allowed {
        Some(a) if a.is_empty() => None,
        Some(a) => Some(a),
        None => Some(BTreeSet::new()),
    }
}

impl<T> Forward<T> {
    /// The same forward, its fallback answer converted by `f`.
    pub fn map<U>(self, f: impl FnOnce(T) -> Result<U>) -> Result<Forward<U>> {
        let Forward { to, refusal, idempotent, fallback } = self;
        Ok(Forward { to, refusal, idempotent, fallback: fallback.map(f).transpose()? })
    }
}
