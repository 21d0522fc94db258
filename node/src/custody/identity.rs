//! This node's identity keys: one per root-key generation round.
//!
//! A round names each participant with a fresh identity public key, and the round's transcript
//! (in the replicated log, in every snapshot) holds each participant's share sealed to that
//! key. Erasing a round's identity key therefore erases this node's share of the root key that
//! round made, wherever a copy of the transcript lives: that is how old shares are destroyed
//! after resharing (`Identities::retain`).
//!
//! Real nodes keep the keys in `data_dir/identity.key` (mode 0600, written atomically and
//! fsynced before a key's public half leaves the node), optionally sealed under an operator
//! passphrase (`identity_passphrase_file`, `crypto::passphrase`). The simulator keeps them in
//! its model of the node's disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crypto::identity::IdentityKey;
use crypto::passphrase::Cost;
use crypto::{SecretBytes, SecureRng};

use crate::error::{NodeError, Result, StartError, StartResult};

pub const IDENTITY_FILE: &str = "identity.key";
const MAGIC_CLEAR: &[u8] = b"keyquorum identity keys v2 clear\n";
const MAGIC_SEALED: &[u8] = b"keyquorum identity keys v2 sealed\n";
/// Rounds a node keeps keys for at once: the current root's, a replacement's, and a few
/// rounds that were started and abandoned. More means something keeps starting rounds.
const MAX_ROUNDS: usize = 16;

/// The simulator's durable copy of one node's identity keys (survives its crashes).
pub type MemoryDisk = Arc<Mutex<BTreeMap<u64, SecretBytes>>>;

enum Store {
    File { dir: PathBuf, passphrase: Option<SecretBytes>, cost: Cost },
    Memory(MemoryDisk),
}

/// This node's identity keys by round; `Debug` shows only the rounds.
pub struct Identities {
    keys: Mutex<BTreeMap<u64, Arc<IdentityKey>>>,
    store: Store,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identities {{ rounds: {:?} }}", self.rounds())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Identities {
    /// Opens `data_dir/identity.key` (an absent file is no keys yet). With a passphrase the
    /// file is sealed under it: a clear file found with a passphrase configured is sealed at
    /// once, and a sealed one found without a passphrase is an error.
    pub fn open_file(data_dir: &Path, passphrase: Option<SecretBytes>, rng: &mut SecureRng) -> StartResult<Self> {
        Self::open_file_with_cost(data_dir, passphrase, Cost::default(), rng)
    }

    pub fn open_file_with_cost(
        data_dir: &Path,
        passphrase: Option<SecretBytes>,
        cost: Cost,
        rng: &mut SecureRng,
    ) -> StartResult<Self> {
        let path = data_dir.join(IDENTITY_FILE);
        let (keys, clear) = match std::fs::read(&path) {
            Ok(bytes) => (
                decode_file(&bytes, passphrase.as_ref())
                    .map_err(|e| StartError::Identity(format!("identity keys {}: {e}", path.display())))?,
                bytes.starts_with(MAGIC_CLEAR),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (BTreeMap::new(), false),
            Err(e) => {
                return Err(StartError::Identity(format!("identity keys {} are unreadable: {e}", path.display())))
            }
        };
        let seal_now = clear && passphrase.is_some();
        let store = Store::File { dir: data_dir.to_path_buf(), passphrase, cost };
        let identities = Self { keys: Mutex::new(parse_keys(keys)?), store };
        if seal_now {
            identities.persist(&lock(&identities.keys), rng)?;
            tracing::info!("identity keys {} sealed under the passphrase", path.display());
        }
        Ok(identities)
    }

    /// Keys kept in the simulator's model of the node's disk.
    pub fn in_memory(disk: MemoryDisk) -> StartResult<Self> {
        let keys = lock(&disk).clone();
        Ok(Self { keys: Mutex::new(parse_keys(keys)?), store: Store::Memory(disk) })
    }

    /// The rounds this node holds a key for.
    pub fn rounds(&self) -> Vec<u64> {
        lock(&self.keys).keys().copied().collect()
    }

    /// This node's key for `round`, if it has one.
    pub fn get(&self, round: u64) -> Option<Arc<IdentityKey>> {
        lock(&self.keys).get(&round).cloned()
    }

    /// The public key this node uses in `round`, creating the key (durably, before the public
    /// half is returned) on first use.
    pub fn public_for_round(&self, round: u64, rng: &mut SecureRng) -> Result<Vec<u8>> {
        let mut keys = lock(&self.keys);
        if let Some(key) = keys.get(&round) {
            return Ok(key.public());
        }
        if keys.len() >= MAX_ROUNDS {
            return Err(NodeError::Unavailable(format!(
                "this node already holds identity keys for {} key generation rounds ({:?}); \
                 it makes no more until a root key is installed",
                keys.len(),
                keys.keys().collect::<Vec<_>>()
            )));
        }
        let key = Arc::new(IdentityKey::generate(rng));
        let public = key.public();
        let mut next = keys.clone();
        next.insert(round, key);
        self.persist(&next, rng)?;
        *keys = next;
        Ok(public)
    }

    /// Erases every key whose round `keep` rejects, durably. Returns the rounds erased.
    pub fn retain(&self, keep: impl Fn(u64) -> bool, rng: &mut SecureRng) -> Result<Vec<u64>> {
        let mut keys = lock(&self.keys);
        let erased: Vec<u64> = keys.keys().copied().filter(|r| !keep(*r)).collect();
        if erased.is_empty() {
            return Ok(erased);
        }
        let mut next = keys.clone();
        next.retain(|r, _| keep(*r));
        self.persist(&next, rng)?;
        *keys = next;
        Ok(erased)
    }

    fn persist(&self, keys: &BTreeMap<u64, Arc<IdentityKey>>, rng: &mut SecureRng) -> Result<()> {
        let mut encoded = BTreeMap::new();
        for (round, key) in keys {
            encoded.insert(*round, key.to_bytes().map_err(|e| NodeError::Internal(e.to_string()))?);
        }
        match &self.store {
            Store::Memory(disk) => {
                *lock(disk) = encoded;
                Ok(())
            }
            Store::File { dir, passphrase, cost } => {
                let clear = encode_keys(&encoded);
                let bytes = match passphrase {
                    None => [MAGIC_CLEAR, clear.expose()].concat(),
                    Some(p) => {
                        let sealed = crypto::passphrase::seal(p, &clear, *cost, rng)
                            .map_err(|e| NodeError::Internal(format!("cannot seal the identity keys: {e}")))?;
                        [MAGIC_SEALED, &sealed].concat()
                    }
                };
                let bytes = SecretBytes::new(bytes);
                write_atomically(dir, bytes.expose()).map_err(|e| {
                    NodeError::Internal(format!("cannot write {}: {e}", dir.join(IDENTITY_FILE).display()))
                })
            }
        }
    }
}

fn parse_keys(keys: BTreeMap<u64, SecretBytes>) -> StartResult<BTreeMap<u64, Arc<IdentityKey>>> {
    keys.into_iter()
        .map(|(round, bytes)| {
            let key = IdentityKey::from_bytes(&bytes)
                .map_err(|e| StartError::Identity(format!("round {round}'s key: {e}")))?;
            Ok((round, Arc::new(key)))
        })
        .collect()
}

/// `count: u32` then, per key, `round: u64, len: u16, bytes`, little-endian.
fn encode_keys(keys: &BTreeMap<u64, SecretBytes>) -> SecretBytes {
    let mut out = Vec::with_capacity(4 + keys.len() * 64);
    out.extend_from_slice(&(keys.len() as u32).to_le_bytes());
    for (round, key) in keys {
        out.extend_from_slice(&round.to_le_bytes());
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(key.expose());
    }
    SecretBytes::new(out)
}

fn decode_keys(bytes: &[u8]) -> std::result::Result<BTreeMap<u64, SecretBytes>, String> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> std::result::Result<&'a [u8], String> {
        if bytes.len() < n {
            return Err("truncated".into());
        }
        let (head, rest) = bytes.split_at(n);
        *bytes = rest;
        Ok(head)
    }
    let mut rest = bytes;
    let count = u32::from_le_bytes(take(&mut rest, 4)?.try_into().map_err(|_| "truncated")?) as usize;
    if count > MAX_ROUNDS {
        return Err(format!("{count} keys, more than the {MAX_ROUNDS} a node keeps"));
    }
    let mut keys = BTreeMap::new();
    for _ in 0..count {
        let round = u64::from_le_bytes(take(&mut rest, 8)?.try_into().map_err(|_| "truncated")?);
        let len = u16::from_le_bytes(take(&mut rest, 2)?.try_into().map_err(|_| "truncated")?) as usize;
        keys.insert(round, SecretBytes::from_slice(take(&mut rest, len)?));
    }
    if !rest.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok(keys)
}

fn decode_file(bytes: &[u8], passphrase: Option<&SecretBytes>) -> StartResult<BTreeMap<u64, SecretBytes>> {
    let keys = if let Some(clear) = bytes.strip_prefix(MAGIC_CLEAR) {
        decode_keys(clear)
    } else if let Some(sealed) = bytes.strip_prefix(MAGIC_SEALED) {
        let Some(passphrase) = passphrase else {
            return Err(StartError::Identity(
                "the file is sealed under a passphrase: set `identity_passphrase_file` (or \
                 KEYQUORUM_IDENTITY_PASSPHRASE_FILE) to the file holding it"
                    .into(),
            ));
        };
        let clear = crypto::passphrase::open(passphrase, sealed).map_err(|e| match e {
            crypto::CryptoError::DecryptFailed => StartError::Identity(
                "the passphrase does not open it (wrong passphrase, or the file was altered)".into(),
            ),
            e => StartError::Identity(format!("{e}")),
        })?;
        decode_keys(clear.expose())
    } else {
        return Err(StartError::Identity(
            "not a keyquorum identity key file (written by an older keyquorum? such a data dir cannot be reused)"
                .into(),
        ));
    };
    keys.map_err(|e| StartError::Identity(format!("malformed: {e}")))
}

fn write_atomically(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(format!("{IDENTITY_FILE}.tmp"));
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(IDENTITY_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Reads an operator passphrase (or key) file: its bytes, without one trailing newline.
pub fn read_passphrase_file(path: &Path) -> StartResult<SecretBytes> {
    let mut bytes = SecretBytes::new(
        std::fs::read(path)
            .map_err(|e| StartError::Identity(format!("passphrase file {} is unreadable: {e}", path.display())))?,
    );
    let mut len = bytes.len();
    for end in [b'\n', b'\r'] {
        if len > 0 && bytes.expose()[len - 1] == end {
            len -= 1;
        }
    }
    let trimmed = SecretBytes::from_slice(&bytes.expose()[..len]);
    bytes.expose_mut().fill(0);
    if trimmed.is_empty() {
        return Err(StartError::Identity(format!("passphrase file {} is empty", path.display())));
    }
    Ok(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: Cost = Cost { memory_kib: 64, passes: 1 };

    #[test]
    fn keys_survive_reopening_and_erased_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = SecureRng::from_seed_u64(7);
        let ids = Identities::open_file(dir.path(), None, &mut rng).unwrap();
        let p1 = ids.public_for_round(1, &mut rng).unwrap();
        let p2 = ids.public_for_round(2, &mut rng).unwrap();
        assert_ne!(p1, p2);
        assert_eq!(ids.public_for_round(1, &mut rng).unwrap(), p1, "one key per round");
        let again = Identities::open_file(dir.path(), None, &mut rng).unwrap();
        assert_eq!(again.rounds(), vec![1, 2]);
        assert_eq!(again.get(2).unwrap().public(), p2);
        assert_eq!(again.retain(|r| r >= 2, &mut rng).unwrap(), vec![1]);
        let after = Identities::open_file(dir.path(), None, &mut rng).unwrap();
        assert_eq!(after.rounds(), vec![2]);
        // The erased key's bytes are gone from the file.
        let erased = ids.get(1).unwrap().to_bytes().unwrap();
        let file = std::fs::read(dir.path().join(IDENTITY_FILE)).unwrap();
        assert!(!file.windows(erased.len()).any(|w| w == erased.expose()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(IDENTITY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_sealed_file_needs_its_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = SecureRng::from_seed_u64(8);
        let pass = SecretBytes::new(b"s3cret".to_vec());
        let ids = Identities::open_file_with_cost(dir.path(), Some(pass.clone()), CHEAP, &mut rng).unwrap();
        let public = ids.public_for_round(5, &mut rng).unwrap();
        let key = ids.get(5).unwrap().to_bytes().unwrap();
        let file = std::fs::read(dir.path().join(IDENTITY_FILE)).unwrap();
        assert!(file.starts_with(MAGIC_SEALED));
        assert!(!file.windows(key.len()).any(|w| w == key.expose()));
        let err = Identities::open_file(dir.path(), None, &mut rng).unwrap_err().to_string();
        assert!(err.contains("sealed under a passphrase"), "{err}");
        let wrong = SecretBytes::new(b"guess".to_vec());
        let err = Identities::open_file(dir.path(), Some(wrong), &mut rng).unwrap_err().to_string();
        assert!(err.contains("does not open"), "{err}");
        let reopened = Identities::open_file(dir.path(), Some(pass), &mut rng).unwrap();
        assert_eq!(reopened.get(5).unwrap().public(), public);
    }

    #[test]
    fn a_clear_file_is_sealed_once_a_passphrase_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = SecureRng::from_seed_u64(9);
        Identities::open_file(dir.path(), None, &mut rng).unwrap().public_for_round(1, &mut rng).unwrap();
        let pass = SecretBytes::new(b"later".to_vec());
        Identities::open_file_with_cost(dir.path(), Some(pass.clone()), CHEAP, &mut rng).unwrap();
        assert!(std::fs::read(dir.path().join(IDENTITY_FILE)).unwrap().starts_with(MAGIC_SEALED));
        assert_eq!(Identities::open_file(dir.path(), Some(pass), &mut rng).unwrap().rounds(), vec![1]);
    }

    #[test]
    fn hostile_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = SecureRng::from_seed_u64(10);
        for bytes in [
            b"garbage".to_vec(),
            [MAGIC_CLEAR, &[1u8, 0, 0, 0, 9][..]].concat(),
            [MAGIC_CLEAR, &u32::MAX.to_le_bytes()[..]].concat(),
            [MAGIC_CLEAR, &[0u8, 0, 0, 0, 1][..]].concat(),
            [MAGIC_CLEAR, &[1u8, 0, 0, 0][..], &[0u8; 8][..], &[3u8, 0][..], &[0u8, 0, 0][..]].concat(),
            [MAGIC_SEALED, &b"x"[..]].concat(),
        ] {
            std::fs::write(dir.path().join(IDENTITY_FILE), &bytes).unwrap();
            let pass = Some(SecretBytes::new(b"p".to_vec()));
            assert!(Identities::open_file(dir.path(), pass, &mut rng).is_err(), "{bytes:?}");
        }
    }

    #[test]
    fn passphrase_files_lose_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pass");
        std::fs::write(&path, b"two words\n").unwrap();
        assert_eq!(read_passphrase_file(&path).unwrap().expose(), b"two words");
        std::fs::write(&path, b"\n").unwrap();
        assert!(read_passphrase_file(&path).is_err());
        assert!(read_passphrase_file(&dir.path().join("absent")).is_err());
    }
}
