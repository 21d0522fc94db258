//! Who may do what to a key: the key's policy (statements of principals, operations and
//! conditions), its grants, and the one decision [`Key::authorize`] that the state machine (for
//! writes, at apply) and the serving node (for reads and crypto, after the read barrier) both
//! make. Because both read the replicated state at the call's consistency, a policy change or a
//! revoked grant binds every call that starts after it was acknowledged, on every node.
//!
//! Separation of duties: `admin/*` principals may describe every key and read and replace its
//! policy (break-glass), and nothing else unless a statement names them; `node/*` principals
//! are never authorized for anything (members forward calls, they do not make them).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::key::{check_regions, Key};
use crate::{KmsError, Principal};

/// At most this many statements in a key policy.
pub const MAX_STATEMENTS: usize = 32;
/// At most this many principal patterns in one statement.
pub const MAX_PRINCIPALS: usize = 32;
/// At most this many encryption-context pairs in a condition or a grant's constraint.
pub const MAX_CONTEXT_PAIRS: usize = 16;
/// At most this many live grants on one key.
pub const MAX_GRANTS_PER_KEY: usize = 100;
/// A principal pattern's and a context key's or value's length limit.
const MAX_NAME_LEN: usize = 256;

/// What a principal may be allowed to do to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    Encrypt,
    Decrypt,
    /// Decrypting a ciphertext of this key inside a ReEncrypt.
    ReEncryptFrom,
    /// Encrypting under this key inside a ReEncrypt.
    ReEncryptTo,
    GenerateDataKey,
    GenerateDataKeyWithoutPlaintext,
    Sign,
    Verify,
    GetPublicKey,
    /// Describe the key and list its versions.
    Describe,
    /// Change the description or the rotation policy.
    Update,
    Rotate,
    /// Enable the key or one of its versions.
    Enable,
    /// Disable the key or one of its versions.
    Disable,
    ScheduleDeletion,
    CancelDeletion,
    SetAllowedRegions,
    /// Point an alias at the key, or remove one that points at it.
    ManageAliases,
    /// Tag and untag.
    Tag,
    GetPolicy,
    PutPolicy,
    CreateGrant,
    /// Revoke any grant of the key, and list them.
    RevokeGrant,
}

impl Permission {
    pub const ALL: [Permission; 23] = [
        Permission::Encrypt,
        Permission::Decrypt,
        Permission::ReEncryptFrom,
        Permission::ReEncryptTo,
        Permission::GenerateDataKey,
        Permission::GenerateDataKeyWithoutPlaintext,
        Permission::Sign,
        Permission::Verify,
        Permission::GetPublicKey,
        Permission::Describe,
        Permission::Update,
        Permission::Rotate,
        Permission::Enable,
        Permission::Disable,
        Permission::ScheduleDeletion,
        Permission::CancelDeletion,
        Permission::SetAllowedRegions,
        Permission::ManageAliases,
        Permission::Tag,
        Permission::GetPolicy,
        Permission::PutPolicy,
        Permission::CreateGrant,
        Permission::RevokeGrant,
    ];

    /// What an administrator may do to every key without a statement naming it.
    fn implicit_for_admins(self) -> bool {
        matches!(self, Permission::Describe | Permission::GetPolicy | Permission::PutPolicy)
    }

    /// What a grant may give: using the key and reading it, never managing it (a grant that
    /// could create grants or change the policy would let its holder escalate).
    pub fn grantable(self) -> bool {
        self.has_context()
            || matches!(self, Permission::Sign | Permission::Verify | Permission::GetPublicKey | Permission::Describe)
    }

    /// Whether the operation carries an encryption context (so context conditions can hold).
    pub fn has_context(self) -> bool {
        matches!(
            self,
            Permission::Encrypt
                | Permission::Decrypt
                | Permission::ReEncryptFrom
                | Permission::ReEncryptTo
                | Permission::GenerateDataKey
                | Permission::GenerateDataKeyWithoutPlaintext
        )
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::str::FromStr for Permission {
    type Err = KmsError;

    fn from_str(s: &str) -> Result<Self, KmsError> {
        Permission::ALL.into_iter().find(|p| p.to_string() == s).ok_or_else(|| {
            KmsError::Invalid(format!(
                "{s:?} is not an operation; the operations are {}",
                Permission::ALL.map(|p| p.to_string()).join(", ")
            ))
        })
    }
}

/// Conditions a statement holds under; all must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    /// The call's encryption context contains every one of these pairs (operations without a
    /// context never satisfy a non-empty one).
    #[serde(default)]
    pub context: BTreeMap<String, String>,
    /// The call entered the cluster at a node in one of these regions (empty: any).
    #[serde(default)]
    pub regions: BTreeSet<String>,
}

/// One statement: these principals may do these operations, under these conditions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// `client/NAME`, `admin/NAME`, or a prefix ending in `*` (`client/batch-*`, `client/*`).
    pub principals: BTreeSet<String>,
    pub operations: BTreeSet<Permission>,
    #[serde(default)]
    pub conditions: Conditions,
}

/// A key's policy: the statements that allow; anything no statement or grant allows is
/// refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPolicy {
    pub statements: Vec<Statement>,
}

impl KeyPolicy {
    /// The policy of a key created without one: its owner may do everything, nobody else
    /// anything. A key with no owner (made without authentication) starts with none.
    pub fn default_for(owner: Option<&Principal>) -> Self {
        let statements = owner
            .map(|o| Statement {
                principals: [o.to_string()].into(),
                operations: Permission::ALL.into(),
                conditions: Conditions::default(),
            })
            .into_iter()
            .collect();
        KeyPolicy { statements }
    }

    /// Checks the policy's shape and sizes.
    pub fn validate(&self) -> Result<(), KmsError> {
        if self.statements.len() > MAX_STATEMENTS {
            return Err(KmsError::Invalid(format!(
                "the policy has {} statements; the limit is {MAX_STATEMENTS}",
                self.statements.len()
            )));
        }
        for (i, s) in self.statements.iter().enumerate() {
            let at = |e: String| KmsError::Invalid(format!("policy statement {}: {e}", i + 1));
            if s.principals.is_empty() || s.principals.len() > MAX_PRINCIPALS {
                return Err(at(format!("name 1-{MAX_PRINCIPALS} principals")));
            }
            if s.operations.is_empty() {
                return Err(at("name at least one operation".into()));
            }
            for p in &s.principals {
                check_pattern(p).map_err(at)?;
            }
            check_context(&s.conditions.context).map_err(|e| at(e.to_string()))?;
            check_regions(&s.conditions.regions).map_err(|e| at(e.to_string()))?;
        }
        Ok(())
    }
}

/// A principal pattern: `client/NAME` or `admin/NAME` exactly, or a prefix of one ending in
/// `*`. Never `node/…`: members are not principals of the KMS.
fn check_pattern(pattern: &str) -> Result<(), String> {
    let exact = pattern.strip_suffix('*').unwrap_or(pattern);
    let (kind, name) = exact.split_once('/').ok_or_else(|| format!("{pattern:?} is not client/NAME or admin/NAME"))?;
    if !matches!(kind, "client" | "admin") {
        return Err(format!("{pattern:?}: only client/… and admin/… principals can be named"));
    }
    let prefix = exact.len() != pattern.len();
    if pattern.len() > MAX_NAME_LEN || name.contains(['/', '*']) || (name.is_empty() && !prefix) {
        return Err(format!("{pattern:?} is not a principal or a prefix ending in *"));
    }
    Ok(())
}

fn pattern_matches(pattern: &str, principal: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => principal.starts_with(prefix),
        None => pattern == principal,
    }
}

/// Checks an encryption-context condition or constraint: at most [`MAX_CONTEXT_PAIRS`] pairs of
/// 1-256 byte keys and values up to 256 bytes.
pub fn check_context(context: &BTreeMap<String, String>) -> Result<(), KmsError> {
    if context.len() > MAX_CONTEXT_PAIRS {
        return Err(KmsError::Invalid(format!("at most {MAX_CONTEXT_PAIRS} encryption-context pairs")));
    }
    if context.iter().any(|(k, v)| k.is_empty() || k.len() > MAX_NAME_LEN || v.len() > MAX_NAME_LEN) {
        return Err(KmsError::Invalid(format!(
            "encryption-context keys are 1-{MAX_NAME_LEN} bytes, values at most {MAX_NAME_LEN}"
        )));
    }
    Ok(())
}

fn contains_all(context: Option<&BTreeMap<String, String>>, required: &BTreeMap<String, String>) -> bool {
    match context {
        None => required.is_empty(),
        Some(c) => required.iter().all(|(k, v)| c.get(k) == Some(v)),
    }
}

/// One principal's permission on a key, given by someone who could give it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub id: Uuid,
    pub grantee: Principal,
    pub operations: BTreeSet<Permission>,
    /// The call's encryption context must contain these pairs.
    pub context: BTreeMap<String, String>,
    /// No longer valid at or after this time (command time, ms since the epoch).
    pub expires_ms: Option<u64>,
    /// `None`: made without authentication.
    pub created_by: Option<Principal>,
    pub created_ms: u64,
}

impl Grant {
    /// Checks what a grant may give and its sizes.
    pub fn validate(&self) -> Result<(), KmsError> {
        if !matches!(self.grantee, Principal::Client(_) | Principal::Admin(_)) {
            return Err(KmsError::Invalid(format!("{} is a cluster member and cannot hold a grant", self.grantee)));
        }
        if self.operations.is_empty() {
            return Err(KmsError::Invalid("a grant names at least one operation".into()));
        }
        if let Some(op) = self.operations.iter().find(|o| !o.grantable()) {
            return Err(KmsError::Invalid(format!(
                "{op} cannot be granted: grants give use of a key (Encrypt, Decrypt, ReEncryptFrom, ReEncryptTo, \
                 GenerateDataKey, GenerateDataKeyWithoutPlaintext, Sign, Verify, GetPublicKey, Describe)"
            )));
        }
        if !self.context.is_empty() {
            if let Some(op) = self.operations.iter().find(|o| !o.has_context()) {
                return Err(KmsError::Invalid(format!(
                    "{op} takes no encryption context, so a grant constrained to one cannot give it: make it a \
                     grant of its own"
                )));
            }
        }
        check_context(&self.context)
    }

    fn allows(&self, permission: Permission, request: &Request<'_>) -> bool {
        self.grantee == *request.principal
            && self.operations.contains(&permission)
            && self.expires_ms.is_none_or(|t| request.now_ms < t)
            && contains_all(request.context, &self.context)
    }
}

/// The facts a decision is made on.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub principal: &'a Principal,
    /// The region of the node the call entered the cluster at.
    pub region: &'a str,
    /// The call's encryption context, for operations that carry one.
    pub context: Option<&'a BTreeMap<String, String>>,
    /// The time grants expire against.
    pub now_ms: u64,
}

/// Who made a replicated write, as the state machine authorizes it: the principal and the
/// region of the node the call entered at. `None` in a command: the cluster itself (automatic
/// rotation, destruction) or a node serving without authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub principal: Principal,
    pub region: String,
}

impl Actor {
    pub fn request<'a>(&'a self, context: Option<&'a BTreeMap<String, String>>, now_ms: u64) -> Request<'a> {
        Request { principal: &self.principal, region: &self.region, context, now_ms }
    }
}

impl Key {
    /// Whether `request`'s principal may do `permission` to this key: an admin's implicit
    /// rights, a statement of the key's policy whose conditions hold, or a live grant. The
    /// refusal names the principal, the operation and the key, never the policy.
    pub fn authorize(&self, permission: Permission, request: &Request<'_>) -> Result<(), KmsError> {
        let who = request.principal;
        let allowed = match who {
            Principal::Node(_) => false,
            Principal::Admin(_) if permission.implicit_for_admins() => true,
            Principal::Admin(_) | Principal::Client(_) => {
                let name = who.to_string();
                self.policy.statements.iter().any(|s| {
                    s.operations.contains(&permission)
                        && s.principals.iter().any(|p| pattern_matches(p, &name))
                        && contains_all(request.context, &s.conditions.context)
                        && (s.conditions.regions.is_empty() || s.conditions.regions.contains(request.region))
                }) || self.grants.values().any(|g| g.allows(permission, request))
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(KmsError::AccessDenied {
                principal: who.to_string(),
                operation: permission.to_string(),
                key: Some(self.id),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_name_clients_and_admins_exactly_or_by_prefix_and_never_nodes() {
        for ok in ["client/payments", "admin/alice", "client/batch-*", "client/*", "admin/*"] {
            assert_eq!(check_pattern(ok), Ok(()), "{ok}");
        }
        for bad in ["node/1", "node/*", "*", "client/", "client", "client/a/b", "client/a*b*", "root/x", ""] {
            assert!(check_pattern(bad).is_err(), "{bad} accepted");
        }
        assert!(pattern_matches("client/batch-*", "client/batch-7"));
        assert!(!pattern_matches("client/batch-*", "client/batch"));
        assert!(!pattern_matches("client/pay", "client/payments"));
        assert!(pattern_matches("client/*", "client/x"));
        assert!(!pattern_matches("client/*", "admin/x"));
    }

    #[test]
    fn the_default_policy_gives_the_owner_everything_and_nobody_else_anything() {
        let owner = Principal::Client("a".into());
        let policy = KeyPolicy::default_for(Some(&owner));
        assert_eq!(policy.validate(), Ok(()));
        assert_eq!(policy.statements[0].operations.len(), Permission::ALL.len());
        assert!(KeyPolicy::default_for(None).statements.is_empty());
    }

    #[test]
    fn a_policy_too_large_or_malformed_is_refused() {
        let st = |p: &str, ops: &[Permission]| Statement {
            principals: [p.to_string()].into(),
            operations: ops.iter().copied().collect(),
            conditions: Conditions::default(),
        };
        let many = KeyPolicy { statements: vec![st("client/a", &[Permission::Encrypt]); MAX_STATEMENTS + 1] };
        assert_eq!(many.validate().map_err(|e| e.kind()), Err("Invalid"));
        let empty_ops = KeyPolicy { statements: vec![st("client/a", &[])] };
        assert_eq!(empty_ops.validate().map_err(|e| e.kind()), Err("Invalid"));
        let node = KeyPolicy { statements: vec![st("node/2", &[Permission::Decrypt])] };
        assert_eq!(node.validate().map_err(|e| e.kind()), Err("Invalid"));
        let json = r#"{"statements":[{"principals":["client/a"],"operations":["Encrypt"],"extra":1}]}"#;
        assert!(serde_json::from_str::<KeyPolicy>(json).is_err(), "unknown fields are refused");
    }

    #[test]
    fn grants_give_only_use_and_are_checked_for_expiry_and_context() {
        let g = Grant {
            id: Uuid::from_u128(1),
            grantee: Principal::Client("b".into()),
            operations: [Permission::Decrypt].into(),
            context: [("tenant".to_string(), "acme".to_string())].into(),
            expires_ms: Some(100),
            created_by: Some(Principal::Client("a".into())),
            created_ms: 0,
        };
        assert_eq!(g.validate(), Ok(()));
        let b = Principal::Client("b".into());
        let acme: BTreeMap<String, String> = [("tenant".to_string(), "acme".to_string())].into();
        let other: BTreeMap<String, String> = [("tenant".to_string(), "other".to_string())].into();
        let req = |context, now_ms| Request { principal: &b, region: "r", context, now_ms };
        assert!(g.allows(Permission::Decrypt, &req(Some(&acme), 99)));
        assert!(!g.allows(Permission::Decrypt, &req(Some(&acme), 100)), "expired");
        assert!(!g.allows(Permission::Decrypt, &req(Some(&other), 1)), "context");
        assert!(!g.allows(Permission::Decrypt, &req(None, 1)), "no context");
        assert!(!g.allows(Permission::Encrypt, &req(Some(&acme), 1)), "operation");
        let escalating = Grant { operations: [Permission::CreateGrant].into(), ..g.clone() };
        assert_eq!(escalating.validate().map_err(|e| e.kind()), Err("Invalid"));
        let describe = Grant { operations: [Permission::Describe].into(), ..g.clone() };
        assert_eq!(describe.validate().map_err(|e| e.kind()), Err("Invalid"), "a context on a context-free operation");
        let to_node = Grant { grantee: Principal::Node(2), ..g };
        assert_eq!(to_node.validate().map_err(|e| e.kind()), Err("Invalid"));
    }
}
