//! Quotas in the replicated state: only operators set them, and the state machine holds each
//! principal to its key and alias limits as it applies (destroyed keys make room again).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::BTreeMap;

use common::T0;
use raft::{Actor, Command, KeyChange, KeyRef, KeySpec, KeyStore, KmsError, Limits, WrappedMaterial, DAY_MS};
use uuid::Uuid;

mod common;

fn actor(p: &str) -> Option<Actor> {
    Some(Actor { principal: p.parse().unwrap(), region: "region-a".into() })
}

fn create(id: u128, alias: Option<&str>, by: &str) -> Command {
    Command::CreateKey {
        token: None,
        key_id: Uuid::from_u128(id),
        spec: KeySpec::Aes256GcmSiv,
        description: String::new(),
        tags: BTreeMap::new(),
        alias: alias.map(str::to_string),
        rotation_period_days: None,
        allowed_regions: Default::default(),
        policy: None,
        material: WrappedMaterial { root_epoch: 1, ciphertext: vec![7; 8], kcv: [1; 32], public_key: None },
        by: actor(by),
        now_ms: T0,
    }
}

fn set_quota(scope: Option<&str>, limits: Option<Limits>, by: &str) -> Command {
    Command::SetQuota { scope: scope.map(str::to_string), limits, by: actor(by), now_ms: T0 }
}

#[test]
fn only_operators_set_quotas() {
    let mut s = KeyStore::default();
    common::generate_root(&mut s, 1, 1);
    let open = Limits { max_keys: None, ..Limits::default() };
    let refused = s.apply(&set_quota(Some("client/a"), Some(open.clone()), "client/a")).unwrap_err();
    assert!(matches!(refused, KmsError::AccessDenied { ref principal, .. } if principal == "client/a"), "{refused}");
    assert!(s.quotas().overrides.is_empty());
    s.apply(&set_quota(Some("client/a"), Some(open.clone()), "admin/ops")).unwrap();
    assert_eq!(s.quotas().overrides["client/a"], open);
    let bad = s.apply(&set_quota(Some("node/2"), Some(open), "admin/ops")).unwrap_err();
    assert!(matches!(bad, KmsError::Invalid(_)), "{bad}");
}

#[test]
fn keys_and_aliases_stop_at_the_limit_and_destroyed_keys_make_room() {
    let mut s = KeyStore::default();
    common::generate_root(&mut s, 1, 1);
    let two = Limits { max_keys: Some(2), max_aliases: Some(2), ..Limits::default() };
    s.apply(&set_quota(Some("client/a*"), Some(two), "admin/ops")).unwrap();

    s.apply(&create(1, Some("one"), "client/a")).unwrap();
    s.apply(&create(2, None, "client/a")).unwrap();
    let over = s.apply(&create(3, None, "client/a")).unwrap_err();
    assert!(matches!(over, KmsError::QuotaExceeded(ref why) if why.contains("client/a owns 2 keys")), "{over}");
    // Another principal the pattern does not name has the default's room.
    s.apply(&create(4, None, "client/b")).unwrap();

    // Aliases: pointing at its keys, counted for the keys' owner.
    s.apply(&Command::CreateAlias {
        alias: "two".into(),
        key: KeyRef::Id(Uuid::from_u128(2)),
        by: actor("client/a"),
        now_ms: T0,
    })
    .unwrap();
    let over = s
        .apply(&Command::CreateAlias {
            alias: "three".into(),
            key: KeyRef::Id(Uuid::from_u128(2)),
            by: actor("client/a"),
            now_ms: T0,
        })
        .unwrap_err();
    assert!(matches!(over, KmsError::QuotaExceeded(_)), "{over}");
    // A refused create leaves nothing behind.
    assert!(s.resolve(&KeyRef::Id(Uuid::from_u128(3))).is_err());

    // Destroying key 1 (and its alias) makes room for one key and one alias.
    let schedule = Command::Update {
        key: KeyRef::Id(Uuid::from_u128(1)),
        change: KeyChange::ScheduleDeletion { days: 7 },
        token: None,
        by: actor("client/a"),
        now_ms: T0,
    };
    s.apply(&schedule).unwrap();
    assert!(s.apply(&create(3, None, "client/a")).is_err(), "a key pending deletion still counts");
    s.apply(&Command::DestroyDue { now_ms: T0 + 8 * DAY_MS }).unwrap();
    s.apply(&create(3, Some("three"), "client/a")).unwrap();
}
