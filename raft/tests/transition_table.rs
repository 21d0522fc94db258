//! The key lifecycle as a table: every command in every key state, with the expected outcome.
//! The test fails if a (state, command) pair is missing from the table, so the table stays
//! exhaustive as commands are added.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::{BTreeMap, BTreeSet};

use common::T0;
use raft::{
    Applied, Command, KeyChange, KeyRef, KeySpec, KeyState, KeyStore, KeyUsage, KmsError, WrappedMaterial, DAY_MS,
};
use uuid::Uuid;

mod common;

fn material(spec: KeySpec) -> WrappedMaterial {
    WrappedMaterial {
        root_epoch: 1,
        ciphertext: vec![7; 8],
        kcv: [1; 32],
        public_key: (spec == KeySpec::EccNistP384).then(|| vec![4; 97]),
    }
}

fn store() -> KeyStore {
    let mut s = KeyStore::default();
    common::generate_root(&mut s, 1, 1);
    s
}

fn create(s: &mut KeyStore, alias: &str, token: Option<&str>) -> Result<Applied, KmsError> {
    s.apply(&Command::CreateKey {
        token: token.map(str::to_string),
        key_id: Uuid::from_u128(s.key_count() as u128 + 1),
        spec: KeySpec::Aes256GcmSiv,
        description: String::new(),
        tags: BTreeMap::new(),
        alias: Some(alias.to_string()),
        rotation_period_days: None,
        allowed_regions: Default::default(),
        policy: None,
        material: material(KeySpec::Aes256GcmSiv),
        by: None,
        now_ms: T0,
    })
}

fn update(s: &mut KeyStore, key: &KeyRef, change: KeyChange, now_ms: u64) -> Result<Applied, KmsError> {
    s.apply(&Command::Update { key: key.clone(), change, token: None, by: None, now_ms })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Start {
    Enabled,
    Disabled,
    PendingDeletion,
    Destroyed,
    Absent,
}

/// A key in the given state with two versions (primary 2) and alias `alias/k`.
fn key_in(start: Start) -> (KeyStore, KeyRef) {
    let mut s = store();
    let alias = KeyRef::Alias("k".into());
    create(&mut s, "k", None).unwrap();
    let id = KeyRef::Id(s.resolve(&alias).unwrap().id);
    s.apply(&Command::RotateKey {
        key: id.clone(),
        token: None,
        material: material(KeySpec::Aes256GcmSiv),
        if_primary_is: None,
        by: None,
        now_ms: T0,
    })
    .unwrap();
    match start {
        Start::Enabled => {}
        Start::Disabled => {
            update(&mut s, &id, KeyChange::Disable, T0).unwrap();
        }
        Start::PendingDeletion => {
            update(&mut s, &id, KeyChange::ScheduleDeletion { days: 7 }, T0).unwrap();
        }
        Start::Destroyed => {
            update(&mut s, &id, KeyChange::ScheduleDeletion { days: 7 }, T0).unwrap();
            let out = s.apply(&Command::DestroyDue { now_ms: T0 + 7 * DAY_MS }).unwrap();
            assert!(matches!(out, Applied::Destroyed(ids) if ids.len() == 1));
        }
        Start::Absent => return (s, KeyRef::Id(Uuid::from_u128(999))),
    }
    (s, id)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Enable,
    Disable,
    ScheduleDeletion7,
    ScheduleDeletion3,
    CancelDeletion,
    SetDescription,
    Tag,
    Untag,
    SetRotationPolicy,
    EnableVersion1,
    DisableVersion1,
    DisablePrimaryVersion,
    SetAllowedRegions,
    SetBadRegion,
    Rotate,
    CreateAlias,
    DeleteOwnAlias,
    DestroyDueLater,
    EncryptCheck,
    DecryptV1Check,
}

const OPS: [Op; 20] = [
    Op::Enable,
    Op::Disable,
    Op::ScheduleDeletion7,
    Op::ScheduleDeletion3,
    Op::CancelDeletion,
    Op::SetDescription,
    Op::Tag,
    Op::Untag,
    Op::SetRotationPolicy,
    Op::EnableVersion1,
    Op::DisableVersion1,
    Op::DisablePrimaryVersion,
    Op::SetAllowedRegions,
    Op::SetBadRegion,
    Op::Rotate,
    Op::CreateAlias,
    Op::DeleteOwnAlias,
    Op::DestroyDueLater,
    Op::EncryptCheck,
    Op::DecryptV1Check,
];
const STARTS: [Start; 5] = [Start::Enabled, Start::Disabled, Start::PendingDeletion, Start::Destroyed, Start::Absent];

/// Expected outcome: `Ok(Some(state after))`, `Ok(None)` (no key to look at), or an error kind.
type Expect = Result<Option<&'static str>, &'static str>;

fn run(start: Start, op: Op) -> (Result<(), KmsError>, Option<&'static str>) {
    let (mut s, key) = key_in(start);
    let later = T0 + 31 * DAY_MS;
    let out = match op {
        Op::Enable => update(&mut s, &key, KeyChange::Enable, T0).map(drop),
        Op::Disable => update(&mut s, &key, KeyChange::Disable, T0).map(drop),
        Op::ScheduleDeletion7 => update(&mut s, &key, KeyChange::ScheduleDeletion { days: 7 }, T0).map(drop),
        Op::ScheduleDeletion3 => update(&mut s, &key, KeyChange::ScheduleDeletion { days: 3 }, T0).map(drop),
        Op::CancelDeletion => update(&mut s, &key, KeyChange::CancelDeletion, T0).map(drop),
        Op::SetDescription => update(&mut s, &key, KeyChange::SetDescription("d".into()), T0).map(drop),
        Op::Tag => {
            let tags = [("team".to_string(), "a".to_string())].into_iter().collect();
            update(&mut s, &key, KeyChange::Tag(tags), T0).map(drop)
        }
        Op::Untag => update(&mut s, &key, KeyChange::Untag(vec!["team".into()]), T0).map(drop),
        Op::SetRotationPolicy => {
            update(&mut s, &key, KeyChange::SetRotationPolicy { period_days: Some(90) }, T0).map(drop)
        }
        Op::EnableVersion1 => update(&mut s, &key, KeyChange::EnableVersion(1), T0).map(drop),
        Op::DisableVersion1 => update(&mut s, &key, KeyChange::DisableVersion(1), T0).map(drop),
        Op::DisablePrimaryVersion => update(&mut s, &key, KeyChange::DisableVersion(2), T0).map(drop),
        Op::SetAllowedRegions => {
            let regions = ["eu-west".to_string()].into_iter().collect();
            update(&mut s, &key, KeyChange::SetAllowedRegions(regions), T0).map(drop)
        }
        Op::SetBadRegion => {
            let regions = ["eu west".to_string()].into_iter().collect();
            update(&mut s, &key, KeyChange::SetAllowedRegions(regions), T0).map(drop)
        }
        Op::Rotate => s
            .apply(&Command::RotateKey {
                key: key.clone(),
                token: None,
                material: material(KeySpec::Aes256GcmSiv),
                if_primary_is: None,
                by: None,
                now_ms: T0,
            })
            .map(drop),
        Op::CreateAlias => {
            s.apply(&Command::CreateAlias { alias: "other".into(), key: key.clone(), by: None, now_ms: T0 }).map(drop)
        }
        Op::DeleteOwnAlias => {
            let alias = if start == Start::Absent { "none" } else { "k" };
            s.apply(&Command::DeleteAlias { alias: alias.into(), by: None, now_ms: T0 }).map(drop)
        }
        Op::DestroyDueLater => s.apply(&Command::DestroyDue { now_ms: later }).map(drop),
        Op::EncryptCheck => s.resolve(&key).and_then(|k| k.primary_for(KeyUsage::EncryptDecrypt)).map(drop),
        Op::DecryptV1Check => s.resolve(&key).and_then(|k| k.version_for(KeyUsage::EncryptDecrypt, 1)).map(drop),
    };
    let state = s.resolve(&key).ok().map(|k| match k.state {
        KeyState::Enabled => "Enabled",
        KeyState::Disabled => "Disabled",
        KeyState::PendingDeletion { .. } => "PendingDeletion",
        KeyState::Destroyed => "Destroyed",
    });
    (out, state)
}

#[test]
fn every_command_in_every_key_state_has_the_expected_outcome() {
    use Op::*;
    let ok = |s: &'static str| -> Expect { Ok(Some(s)) };
    let is = |k: &'static str| -> Expect { Err(k) };
    let bad_state: Expect = Err("InvalidState");
    let nf: Expect = Err("NotFound");
    #[rustfmt::skip]
    let table: Vec<(Op, [Expect; 5])> = vec![
        //                        Enabled               Disabled              PendingDeletion        Destroyed       Absent
        (Enable,                [ok("Enabled"),          ok("Enabled"),          bad_state,              bad_state, nf]),
        (Disable,               [ok("Disabled"),         ok("Disabled"),         bad_state,              bad_state, nf]),
        (ScheduleDeletion7,     [ok("PendingDeletion"),  ok("PendingDeletion"),  bad_state,              bad_state, nf]),
        (ScheduleDeletion3,     [is("Invalid"),          is("Invalid"),          is("Invalid"),          is("Invalid"), nf]),
        (CancelDeletion,        [bad_state,              bad_state,              ok("Disabled"),         bad_state, nf]),
        (SetDescription,        [ok("Enabled"),          ok("Disabled"),         bad_state,              bad_state, nf]),
        (Tag,                   [ok("Enabled"),          ok("Disabled"),         bad_state,              bad_state, nf]),
        (Untag,                 [ok("Enabled"),          ok("Disabled"),         bad_state,              bad_state, nf]),
        (SetRotationPolicy,     [ok("Enabled"),          bad_state,              bad_state,              bad_state, nf]),
        (EnableVersion1,        [ok("Enabled"),          ok("Disabled"),         bad_state,              bad_state, nf]),
        (DisableVersion1,       [ok("Enabled"),          ok("Disabled"),         bad_state,              bad_state, nf]),
        (DisablePrimaryVersion, [bad_state,              bad_state,              bad_state,              bad_state, nf]),
        (SetAllowedRegions,     [ok("Enabled"),          ok("Disabled"),         bad_state,              bad_state, nf]),
        (SetBadRegion,          [is("Invalid"),          is("Invalid"),          is("Invalid"),          is("Invalid"), nf]),
        (Rotate,                [ok("Enabled"),          bad_state,              bad_state,              bad_state, nf]),
        (CreateAlias,           [ok("Enabled"),          ok("Disabled"),         bad_state,              bad_state, nf]),
        (DeleteOwnAlias,        [ok("Enabled"),          ok("Disabled"),         ok("PendingDeletion"),  nf,        nf]),
        (DestroyDueLater,       [ok("Enabled"),          ok("Disabled"),         ok("Destroyed"),        ok("Destroyed"), Ok(None)]),
        (EncryptCheck,          [ok("Enabled"),          bad_state,              bad_state,              bad_state, nf]),
        (DecryptV1Check,        [ok("Enabled"),          bad_state,              bad_state,              bad_state, nf]),
    ];
    let covered: BTreeSet<Op> = table.iter().map(|(op, _)| *op).collect();
    assert_eq!(covered, OPS.iter().copied().collect(), "the table must list every command");
    for (op, row) in &table {
        for (start, expected) in STARTS.iter().zip(row.iter()) {
            let (out, state) = run(*start, *op);
            let actual: Result<Option<&str>, &str> = match out {
                Ok(()) => Ok(state),
                Err(e) => Err(e.kind()),
            };
            assert_eq!(&actual, expected, "{op:?} on a key that is {start:?}");
            if expected.is_err() && *start != Start::Absent {
                let (_, before) = run(*start, Op::EncryptCheck);
                assert_eq!(state, before, "{op:?} on {start:?} failed but changed the key's state");
            }
        }
    }
}

/// What a replay answers with: the key's metadata and versions as the first apply left them
/// (a token remembers no policy or grants).
fn replayed(applied: &Applied) -> raft::Key {
    let Applied::Key(k) = applied else { panic!("not a key: {applied:?}") };
    raft::Key { policy: Default::default(), grants: Default::default(), ..(**k).clone() }
}

#[test]
fn a_retried_create_with_the_same_token_returns_the_first_result() {
    let mut s = store();
    let first = create(&mut s, "a", Some("tok-1")).unwrap();
    let again = create(&mut s, "a", Some("tok-1")).unwrap();
    assert_eq!(replayed(&first), replayed(&again));
    assert_eq!(s.key_count(), 1);
    // A different request under the same token is refused, not replayed.
    let other = create(&mut s, "b", Some("tok-1"));
    assert_eq!(other.map_err(|e| e.kind()), Err("Invalid"));
    // Without a token, a second create with the same alias is a duplicate.
    assert_eq!(create(&mut s, "a", None).map_err(|e| e.kind()), Err("AlreadyExists"));
}

#[test]
fn a_retried_update_with_the_same_token_applies_once() {
    let mut s = store();
    create(&mut s, "k", None).unwrap();
    let key: KeyRef = "alias/k".parse().unwrap();
    let disable = |token: &str| Command::Update {
        key: key.clone(),
        change: KeyChange::Disable,
        token: Some(token.to_string()),
        by: None,
        now_ms: T0,
    };
    let first = s.apply(&disable("t1")).unwrap();
    // Someone enables the key; the retry of the first disable must not disable it again.
    update(&mut s, &key, KeyChange::Enable, T0).unwrap();
    assert_eq!(replayed(&s.apply(&disable("t1")).unwrap()), replayed(&first));
    assert_eq!(s.resolve(&key).unwrap().state, KeyState::Enabled);
    // A token names one request: reusing it for another change is refused.
    let other =
        Command::Update { key: key.clone(), change: KeyChange::Enable, token: Some("t1".into()), by: None, now_ms: T0 };
    assert!(matches!(s.apply(&other), Err(KmsError::TokenReused(t)) if t == "t1"));
}

#[test]
fn a_retried_rotation_answers_as_it_first_did_after_later_rotations() {
    let (mut s, key) = key_in(Start::Enabled);
    let rotate = |s: &mut KeyStore, token: Option<&str>| {
        s.apply(&Command::RotateKey {
            key: key.clone(),
            token: token.map(str::to_string),
            material: material(KeySpec::Aes256GcmSiv),
            if_primary_is: None,
            by: None,
            now_ms: T0,
        })
        .unwrap()
    };
    let first = rotate(&mut s, Some("r1"));
    let made = replayed(&first).primary_version;
    rotate(&mut s, None);
    rotate(&mut s, None);
    let again = rotate(&mut s, Some("r1"));
    assert_eq!(replayed(&again), replayed(&first));
    let Applied::Key(k) = again else { unreachable!() };
    assert_eq!((k.primary_version, k.versions.len()), (made, made as usize));
    assert_eq!(s.resolve(&key).unwrap().primary_version, made + 2);
}

#[test]
fn rotation_adds_a_primary_version_and_conditional_rotation_happens_once() {
    let (mut s, key) = key_in(Start::Enabled);
    let rotate = |s: &mut KeyStore, cond| {
        s.apply(&Command::RotateKey {
            key: key.clone(),
            token: None,
            material: material(KeySpec::Aes256GcmSiv),
            if_primary_is: cond,
            by: None,
            now_ms: T0,
        })
    };
    rotate(&mut s, Some(2)).unwrap();
    rotate(&mut s, Some(2)).unwrap();
    let k = s.resolve(&key).unwrap();
    assert_eq!((k.primary_version, k.versions.len()), (3, 3));
    assert_eq!(k.primary_for(KeyUsage::EncryptDecrypt).unwrap().version, 3);
}

#[test]
fn destruction_erases_wrapped_material_and_aliases() {
    let (s, key) = key_in(Start::Destroyed);
    let k = s.resolve(&key).unwrap();
    assert!(k.versions.iter().all(|v| v.material.is_none()));
    assert!(s.resolve(&KeyRef::Alias("k".into())).is_err());
}

#[test]
fn signing_keys_cannot_encrypt_and_mismatched_material_is_rejected() {
    let mut s = store();
    let mut cmd = Command::CreateKey {
        token: None,
        key_id: Uuid::from_u128(1),
        spec: KeySpec::EccNistP384,
        description: String::new(),
        tags: BTreeMap::new(),
        alias: None,
        rotation_period_days: None,
        allowed_regions: Default::default(),
        policy: None,
        material: material(KeySpec::Aes256GcmSiv),
        by: None,
        now_ms: T0,
    };
    assert_eq!(s.apply(&cmd).map_err(|e| e.kind()), Err("Invalid"));
    if let Command::CreateKey { material: m, .. } = &mut cmd {
        *m = material(KeySpec::EccNistP384);
    }
    s.apply(&cmd).unwrap();
    let k = s.resolve(&KeyRef::Id(Uuid::from_u128(1))).unwrap();
    assert_eq!(k.primary_for(KeyUsage::EncryptDecrypt).map_err(|e| e.kind()), Err("Invalid"));
    assert!(k.primary_for(KeyUsage::SignVerify).is_ok());
}

#[test]
fn commands_before_the_root_key_exists_are_refused() {
    let mut s = KeyStore::default();
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
        material: material(KeySpec::Aes256GcmSiv),
        by: None,
        now_ms: T0,
    });
    assert_eq!(out.map_err(|e| e.kind()), Err("InvalidState"));
}
