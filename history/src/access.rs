//! The access workload's owner side, shared by the simulator and the Jepsen harness: on random
//! keys, grant Encrypt to [`GRANTEE_PRINCIPAL`] and revoke it, and put policies that name the
//! grantee or not; the grantee's clients meanwhile use the keys, and `check::revocation`
//! judges every use against what was acknowledged before it began.

use std::time::Duration;

use client::Client;
use rand::Rng;

use crate::check::revocation::GRANTEE_PRINCIPAL;
use crate::ops::{execute, execute_settled};
use crate::{OpKind, Outcome, Value};

/// How long a grant or revoke whose outcome is unknown is asked again.
pub const SETTLE_BOUND: Duration = Duration::from_secs(15);

/// Percent of the owner's operations that put a policy (the rest grant or revoke).
const POLICY_PERCENT: u32 = 30;

/// What the owner does next, and which grants it holds live.
#[derive(Debug)]
pub struct AccessManager {
    keys: Vec<String>,
    owner: String,
    /// Per key: the grant this manager made and has not revoked.
    live: Vec<Option<String>>,
}

impl AccessManager {
    /// `owner`: the principal the manager's client is (the keys' owner).
    pub fn new(keys: Vec<String>, owner: &str) -> Self {
        let live = vec![None; keys.len()];
        Self { keys, owner: owner.to_string(), live }
    }

    /// The next operation: on which key, and what. Panics on an empty key list: a workload
    /// needs keys.
    pub fn next(&self, rng: &mut impl Rng) -> (usize, String, OpKind) {
        let i = rng.gen_range(0..self.keys.len());
        let kind = if rng.gen_range(0..100) < POLICY_PERCENT {
            let encrypters = if rng.gen_bool(0.5) { vec![GRANTEE_PRINCIPAL.to_string()] } else { Vec::new() };
            OpKind::PutPolicy { owner: self.owner.clone(), encrypters }
        } else {
            match &self.live[i] {
                Some(grant_id) => OpKind::Revoke { grant_id: grant_id.clone() },
                None => OpKind::Grant { grantee: GRANTEE_PRINCIPAL.to_string() },
            }
        };
        (i, self.keys[i].clone(), kind)
    }

    /// Runs `kind` on key `i` (a grant or revoke until its outcome is known: the checker needs
    /// to know which grants exist) and notes what it did.
    pub async fn run(&mut self, client: &Client, i: usize, kind: &OpKind, token: &str) -> Outcome {
        let key = &self.keys[i];
        let outcome = match kind {
            OpKind::PutPolicy { .. } => execute(client, key, kind, token).await,
            _ => execute_settled(client, key, kind, token, SETTLE_BOUND).await,
        };
        match (kind, &outcome) {
            (OpKind::Grant { .. }, Outcome::Ok(Value::Grant { grant_id })) => self.live[i] = Some(grant_id.clone()),
            (OpKind::Revoke { .. }, Outcome::Ok(_)) => self.live[i] = None,
            _ => {}
        }
        outcome
    }
}
