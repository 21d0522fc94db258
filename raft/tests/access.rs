//! Authorization of replicated writes, at apply: every key-changing command is allowed to its
//! key's owner, refused to other principals until the policy or a grant allows it, and a
//! revoked grant or replaced policy binds the very next command.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::BTreeMap;

use common::T0;
use raft::{
    Actor, Applied, Command, Conditions, Grant, KeyChange, KeyPolicy, KeyRef, KeySpec, KeyStore, KmsError, Permission,
    Principal, Request, Statement, WrappedMaterial,
};
use uuid::Uuid;

mod common;

fn actor(p: &str) -> Option<Actor> {
    Some(Actor { principal: p.parse().unwrap(), region: "region-a".into() })
}

fn store_with_key(owner: &str) -> (KeyStore, KeyRef) {
    let mut s = KeyStore::default();
    common::generate_root(&mut s, 1, 1);
    s.apply(&Command::CreateKey {
        token: None,
        key_id: Uuid::from_u128(1),
        spec: KeySpec::Aes256GcmSiv,
        description: String::new(),
        tags: BTreeMap::new(),
        alias: Some("k".into()),
        rotation_period_days: None,
        allowed_regions: Default::default(),
        policy: None,
        material: WrappedMaterial { root_epoch: 1, ciphertext: vec![7; 8], kcv: [1; 32], public_key: None },
        by: actor(owner),
        now_ms: T0,
    })
    .unwrap();
    (s, KeyRef::Id(Uuid::from_u128(1)))
}

/// Every write a principal can make to an existing key, with what it needs.
fn writes(key: &KeyRef, by: Option<Actor>) -> Vec<(Permission, Command)> {
    let material = WrappedMaterial { root_epoch: 1, ciphertext: vec![9; 8], kcv: [2; 32], public_key: None };
    let update =
        |change: KeyChange| Command::Update { key: key.clone(), change, token: None, by: by.clone(), now_ms: T0 };
    let grant = Grant {
        id: Uuid::from_u128(77),
        grantee: "client/other".parse().unwrap(),
        operations: [Permission::Decrypt].into(),
        context: BTreeMap::new(),
        expires_ms: None,
        created_by: by.as_ref().map(|a| a.principal.clone()),
        created_ms: 0,
    };
    vec![
        (Permission::Update, update(KeyChange::SetDescription("d".into()))),
        (Permission::Tag, update(KeyChange::Tag([("a".to_string(), "b".to_string())].into()))),
        (Permission::Disable, update(KeyChange::Disable)),
        (Permission::Enable, update(KeyChange::Enable)),
        (Permission::SetAllowedRegions, update(KeyChange::SetAllowedRegions(Default::default()))),
        (
            Permission::Rotate,
            Command::RotateKey {
                key: key.clone(),
                token: None,
                material,
                if_primary_is: None,
                by: by.clone(),
                now_ms: T0,
            },
        ),
        (
            Permission::ManageAliases,
            Command::CreateAlias { alias: "other".into(), key: key.clone(), by: by.clone(), now_ms: T0 },
        ),
        (Permission::ManageAliases, Command::DeleteAlias { alias: "k".into(), by: by.clone(), now_ms: T0 }),
        (
            Permission::CreateGrant,
            Command::CreateGrant { key: key.clone(), grant, token: None, by: by.clone(), now_ms: T0 },
        ),
        (Permission::ScheduleDeletion, update(KeyChange::ScheduleDeletion { days: 7 })),
        (Permission::CancelDeletion, update(KeyChange::CancelDeletion)),
        (
            Permission::PutPolicy,
            Command::PutKeyPolicy { key: key.clone(), policy: KeyPolicy::default(), by, now_ms: T0 },
        ),
    ]
}

fn denied(out: &Result<Applied, KmsError>) -> bool {
    matches!(out, Err(KmsError::AccessDenied { .. }))
}

#[test]
fn the_owner_may_make_every_write_and_no_other_principal_any() {
    let (owned, key) = store_with_key("client/owner");
    for stranger in ["client/other", "node/2", "admin/ops"] {
        let mut s = owned.clone();
        for (permission, command) in writes(&key, actor(stranger)) {
            let out = s.apply(&command);
            let admin_may = stranger.starts_with("admin/") && permission == Permission::PutPolicy;
            assert_eq!(denied(&out), !admin_may, "{stranger} {permission}: {out:?}");
        }
        assert_eq!(s, after_refusals(owned.clone(), stranger, &key), "refused writes changed nothing");
    }
    let mut s = owned;
    for (permission, command) in writes(&key, actor("client/owner")) {
        assert!(s.apply(&command).is_ok(), "owner {permission}");
    }
}

/// The store after `who`'s refused writes: unchanged, except that an admin may replace the
/// policy.
fn after_refusals(mut s: KeyStore, who: &str, key: &KeyRef) -> KeyStore {
    if who.starts_with("admin/") {
        let put = Command::PutKeyPolicy { key: key.clone(), policy: KeyPolicy::default(), by: actor(who), now_ms: T0 };
        s.apply(&put).unwrap();
    }
    s
}

#[test]
fn a_denial_names_the_principal_the_operation_and_the_key_but_not_the_policy() {
    let (mut s, key) = store_with_key("client/owner");
    let out = s.apply(&Command::Update {
        key: key.clone(),
        change: KeyChange::Disable,
        token: None,
        by: actor("client/mallory"),
        now_ms: T0,
    });
    let message = out.unwrap_err().to_string();
    assert_eq!(message, format!("client/mallory is not allowed to Disable on key {}", Uuid::from_u128(1)));
    assert!(!message.contains("owner"), "{message}");
}

#[test]
fn administrators_and_nodes_cannot_create_keys() {
    for who in ["admin/ops", "node/1"] {
        let mut s = KeyStore::default();
        common::generate_root(&mut s, 1, 1);
        let out = s.apply(&Command::CreateKey {
            token: None,
            key_id: Uuid::from_u128(1),
            spec: KeySpec::Aes256GcmSiv,
            description: String::new(),
            tags: BTreeMap::new(),
            alias: None,
            rotation_period_days: None,
            allowed_regions: Default::default(),
            policy: None,
            material: WrappedMaterial { root_epoch: 1, ciphertext: vec![7; 8], kcv: [1; 32], public_key: None },
            by: actor(who),
            now_ms: T0,
        });
        assert!(denied(&out), "{who}: {out:?}");
        assert_eq!(s.key_count(), 0);
    }
}

#[test]
fn an_admin_replaces_a_policy_to_break_glass_but_cannot_use_the_key_until_a_statement_names_it() {
    let (mut s, key) = store_with_key("client/owner");
    let k = s.resolve(&key).unwrap().clone();
    let admin: Principal = "admin/ops".parse().unwrap();
    let req = Request { principal: &admin, region: "region-a", context: Some(&BTreeMap::new()), now_ms: T0 };
    assert!(k.authorize(Permission::Describe, &req).is_ok());
    assert!(k.authorize(Permission::GetPolicy, &req).is_ok());
    assert!(k.authorize(Permission::Decrypt, &req).is_err());
    let policy = KeyPolicy {
        statements: vec![Statement {
            principals: ["admin/ops".to_string(), "client/new-*".to_string()].into(),
            operations: [Permission::Decrypt].into(),
            conditions: Conditions { context: Default::default(), regions: ["region-a".to_string()].into() },
        }],
    };
    s.apply(&Command::PutKeyPolicy { key: key.clone(), policy, by: actor("admin/ops"), now_ms: T0 }).unwrap();
    let k = s.resolve(&key).unwrap().clone();
    assert!(k.authorize(Permission::Decrypt, &req).is_ok());
    let elsewhere = Request { region: "region-b", ..req };
    assert!(k.authorize(Permission::Decrypt, &elsewhere).is_err(), "the region condition binds");
    let new: Principal = "client/new-app".parse().unwrap();
    assert!(k.authorize(Permission::Decrypt, &Request { principal: &new, ..req }).is_ok(), "prefix pattern");
    let owner: Principal = "client/owner".parse().unwrap();
    assert!(k.authorize(Permission::Decrypt, &Request { principal: &owner, ..req }).is_err(), "the owner lost it");
}

#[test]
fn a_grant_allows_its_grantee_until_revoked_or_retired_and_only_in_its_context() {
    let (mut s, key) = store_with_key("client/owner");
    let grantee: Principal = "client/batch".parse().unwrap();
    let acme: BTreeMap<String, String> = [("tenant".to_string(), "acme".to_string())].into();
    let other: BTreeMap<String, String> = [("tenant".to_string(), "other".to_string())].into();
    let grant = |id: u128| Grant {
        id: Uuid::from_u128(id),
        grantee: grantee.clone(),
        operations: [Permission::Decrypt, Permission::Encrypt].into(),
        context: acme.clone(),
        expires_ms: Some(T0 + 1000),
        created_by: Some("client/owner".parse().unwrap()),
        created_ms: 0,
    };
    let create = |id| Command::CreateGrant {
        key: key.clone(),
        grant: grant(id),
        token: None,
        by: actor("client/owner"),
        now_ms: T0,
    };
    // The grantee cannot grant itself anything.
    let self_grant =
        Command::CreateGrant { key: key.clone(), grant: grant(1), token: None, by: actor("client/batch"), now_ms: T0 };
    assert!(denied(&s.apply(&self_grant)));
    s.apply(&create(1)).unwrap();
    let may = |s: &KeyStore, context: &BTreeMap<String, String>, now_ms| {
        let req = Request { principal: &grantee, region: "region-a", context: Some(context), now_ms };
        s.resolve(&key).unwrap().authorize(Permission::Decrypt, &req).is_ok()
    };
    assert!(may(&s, &acme, T0));
    assert!(!may(&s, &other, T0), "context constraint");
    assert!(!may(&s, &acme, T0 + 1000), "expired");
    // Revocation by someone else than the owner is refused; by the owner it binds at once.
    let revoke = |by: &str, retire| Command::RevokeGrant {
        key: key.clone(),
        grant: Uuid::from_u128(1),
        retire,
        by: actor(by),
        now_ms: T0,
    };
    assert!(denied(&s.apply(&revoke("client/stranger", false))));
    assert!(denied(&s.apply(&revoke("client/stranger", true))), "only the grantee retires");
    s.apply(&revoke("client/owner", false)).unwrap();
    assert!(!may(&s, &acme, T0));
    assert!(matches!(s.apply(&revoke("client/owner", false)), Err(KmsError::GrantNotFound { .. })));
    // The grantee may give a grant up.
    s.apply(&create(2)).unwrap();
    let retire = Command::RevokeGrant {
        key: key.clone(),
        grant: Uuid::from_u128(2),
        retire: true,
        by: actor("client/batch"),
        now_ms: T0,
    };
    s.apply(&retire).unwrap();
    assert!(!may(&s, &acme, T0));
}

#[test]
fn grants_are_bounded_per_key_and_expired_ones_make_room() {
    let (mut s, key) = store_with_key("client/owner");
    let grant = |id: u128, expires_ms| Command::CreateGrant {
        key: key.clone(),
        grant: Grant {
            id: Uuid::from_u128(id),
            grantee: "client/g".parse().unwrap(),
            operations: [Permission::Encrypt].into(),
            context: BTreeMap::new(),
            expires_ms,
            created_by: Some("client/owner".parse().unwrap()),
            created_ms: 0,
        },
        token: None,
        by: actor("client/owner"),
        now_ms: T0,
    };
    for id in 0..raft::MAX_GRANTS_PER_KEY as u128 {
        s.apply(&grant(id, Some(T0 + 10))).unwrap();
    }
    assert_eq!(s.apply(&grant(1000, None)).map_err(|e| e.kind()), Err("Invalid"));
    let later = |c: Command| match c {
        Command::CreateGrant { key, grant, token, by, .. } => {
            Command::CreateGrant { key, grant, token, by, now_ms: T0 + 10 }
        }
        other => other,
    };
    s.apply(&later(grant(1000, None))).unwrap();
    assert_eq!(s.resolve(&key).unwrap().grants.len(), 1);
}

#[test]
fn idempotency_tokens_are_scoped_by_principal() {
    let (mut s, key) = store_with_key("client/owner");
    let disable = |by: &str| Command::Update {
        key: key.clone(),
        change: KeyChange::Disable,
        token: Some("t".into()),
        by: actor(by),
        now_ms: T0,
    };
    assert!(s.apply(&disable("client/owner")).is_ok());
    // Another principal with the same token does not get the owner's result replayed.
    assert!(denied(&s.apply(&disable("client/mallory"))));
}
