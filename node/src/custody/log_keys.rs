//! The log key: the versions this node holds, which decide whether it is sealed, and the first
//! version, made once the cluster has its root key.

use std::sync::Arc;
use std::time::Duration;

use raft::{Command, KeySpec};

use super::Custody;
use crate::error::{NodeError, Result};

impl Custody {
    /// Makes the first log key if the cluster has a root key and none yet (`Init` after the
    /// key generation; the leader's duties if that `Init` died). The proposer keeps what it
    /// proposed, so it need not unwrap it.
    pub async fn ensure_log_key(&self) -> Result<()> {
        let state = self.consensus.state();
        if !state.read().store.log_keys().is_empty() {
            return Ok(());
        }
        let (key, wrapped) = self.new_material(KeySpec::Aes256GcmSiv)?;
        let now_ms = self.env.now_ms();
        match self.consensus.propose(Command::AddLogKey { version: 1, key: wrapped, now_ms }).await {
            Ok(_) => {
                state.cipher().install(1, key).map_err(NodeError::Internal)?;
                tracing::info!("log key v1 created: the log and snapshots are encrypted at rest from here on");
                Ok(())
            }
            Err(NodeError::Kms(raft::KmsError::AlreadyExists(_))) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// On the leader, makes the first log key once the cluster has its root key (if the `Init`
/// that should have made it died).
pub(super) async fn first(custody: Arc<Custody>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let state = custody.consensus.state();
        if state.sealed().is_some() || !custody.consensus.is_leader() || state.read().store.root().is_none() {
            continue;
        }
        if let Err(e) = custody.ensure_log_key().await {
            tracing::warn!(error = %e, "creating the log key failed; will retry");
        }
    }
}

/// Unwraps every log key version the replicated state names and this node does not hold yet:
/// at start (the node is sealed until it holds the versions its snapshot and log need) and
/// whenever a new version is applied. Retries with backoff while fewer than t+1 holders answer.
pub(super) async fn run(custody: Arc<Custody>) {
    let state = custody.consensus.state().clone();
    let mut applied = state.applied_index();
    // An apply batch that meets a version it lacks waits inside openraft's apply, before it
    // publishes its applied index: being sealed on a version wakes us too.
    let mut sealed = state.sealed_watch();
    let mut backoff = Duration::from_millis(100);
    loop {
        let missing: Vec<u32> = {
            let cipher = state.cipher();
            state.read().store.log_keys().keys().copied().filter(|v| !cipher.has(*v)).collect()
        };
        let mut failed = false;
        let mut installed = false;
        for version in missing {
            match custody.unwrap_log_key(version).await {
                Ok(key) => match state.cipher().install(version, key) {
                    Ok(()) => {
                        installed = true;
                        tracing::info!(version, "log key v{version} unwrapped with peers' shares");
                        if let Err(e) = state.resume().await {
                            tracing::error!(error = %e, "applying what waited for log key v{version} failed");
                        }
                    }
                    Err(e) => {
                        tracing::error!(version, "log key v{version}: {e}");
                        failed = true;
                    }
                },
                Err(e) => {
                    tracing::warn!(version, error = %e, "cannot unwrap log key v{version} yet; retrying");
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        }
        backoff = Duration::from_millis(100);
        // What a resumed backlog applied may name newer versions (a root rotation adds one):
        // look again at once rather than wait for the next applied entry.
        if !installed {
            tokio::select! {
                changed = applied.changed() => if changed.is_err() { return },
                changed = sealed.changed() => if changed.is_err() { return },
            }
        }
    }
}
