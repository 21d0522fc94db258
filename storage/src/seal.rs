//! Encryption at rest: the log key's unwrapped versions, held in memory only, and how records
//! are sealed and opened with them.
//!
//! Every log entry payload and every snapshot body is sealed with AES-256-GCM-SIV under the
//! newest log key version this node holds; the associated data names the record's place (the
//! entry's log id; the snapshot's last log id and membership), so a record copied to another
//! index, term or snapshot does not open. The log key itself is in the replicated state only
//! wrapped under the threshold root key: a node learns its versions by combining t+1 peers'
//! decryption shares (the node crate's job) and hands them to [`LogCipher::install`]. Until it
//! holds the version a record needs, applying that record waits: the node is *sealed*.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crypto::{aead, SecretBytes, SecureRng};
use openraft::{Entry, EntryPayload, LogId, StorageIOError};
use raft::{Command, NodeId, Payload, SealedRecord, TypeConfig};
use tokio::sync::watch;

struct Keys {
    versions: BTreeMap<u32, SecretBytes>,
    rng: SecureRng,
}

/// The log key versions this node has unwrapped. Shared by the log store (sealing), the
/// state machine (opening) and the node (installing versions it unwrapped).
pub struct LogCipher {
    keys: Mutex<Keys>,
    /// Bumped on every install, so waiters wake up.
    installed: watch::Sender<u64>,
}

impl std::fmt::Debug for LogCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogCipher {{ versions: {:?} }}", self.versions())
    }
}

/// Why a record did not open.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// This node does not hold that log key version (yet).
    Missing(u32),
    /// The record is not what was sealed at this place: moved, altered, or under another key.
    Rejected(String),
}

impl LogCipher {
    /// A cipher holding no versions yet. `rng` draws the nonces.
    pub fn new(rng: SecureRng) -> Arc<Self> {
        Arc::new(Self { keys: Mutex::new(Keys { versions: BTreeMap::new(), rng }), installed: watch::channel(0).0 })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Keys> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an unwrapped version (32 bytes). Installing a version twice keeps the first.
    pub fn install(&self, version: u32, key: SecretBytes) -> Result<(), String> {
        if key.len() != 32 {
            return Err(format!("log key v{version} must be 32 bytes, not {}", key.len()));
        }
        self.lock().versions.entry(version).or_insert(key);
        self.installed.send_modify(|n| *n += 1);
        Ok(())
    }

    pub fn has(&self, version: u32) -> bool {
        self.lock().versions.contains_key(&version)
    }

    /// The newest version held, which seals new records.
    pub fn current(&self) -> Option<u32> {
        self.lock().versions.last_key_value().map(|(v, _)| *v)
    }

    pub fn versions(&self) -> Vec<u32> {
        self.lock().versions.keys().copied().collect()
    }

    /// Waits until `version` is installed.
    pub async fn wait_for(&self, version: u32) {
        let mut installed = self.installed.subscribe();
        while !self.has(version) {
            if installed.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Seals `plaintext` under the newest version; `None` when no version is held.
    pub fn seal(&self, aad: &[u8], plaintext: &SecretBytes) -> Result<Option<SealedRecord>, StorageIOError<NodeId>> {
        let mut keys = self.lock();
        let Some((version, key)) = keys.versions.last_key_value().map(|(v, k)| (*v, k.expose().to_vec())) else {
            return Ok(None);
        };
        let key = SecretBytes::new(key);
        let nonce: [u8; 12] = keys.rng.bytes();
        drop(keys);
        let ciphertext = aead::seal(key.expose(), &nonce, aad, plaintext.expose())
            .map_err(|e| StorageIOError::write(&std::io::Error::other(e.to_string())))?;
        Ok(Some(SealedRecord { key_version: version, nonce, ciphertext }))
    }

    /// Opens a record sealed at the place `aad` names.
    pub(crate) fn open(&self, aad: &[u8], record: &SealedRecord) -> Result<SecretBytes, OpenError> {
        let key = {
            let keys = self.lock();
            let key = keys.versions.get(&record.key_version).ok_or(OpenError::Missing(record.key_version))?;
            SecretBytes::from_slice(key.expose())
        };
        aead::open(key.expose(), &record.nonce, aad, &record.ciphertext).map(SecretBytes::new).map_err(|_| {
            OpenError::Rejected(format!(
                "a record sealed under log key v{} does not open here: it was moved or altered",
                record.key_version
            ))
        })
    }

    /// The entry as it is to be stored: a clear command sealed under the newest version. A
    /// command that must never be stored in the clear is refused when no version is held.
    pub fn seal_entry(&self, mut entry: Entry<TypeConfig>) -> Result<Entry<TypeConfig>, StorageIOError<NodeId>> {
        if let EntryPayload::Normal(Payload::Clear(command)) = &entry.payload {
            let plaintext = SecretBytes::new(postcard::to_stdvec(command).map_err(|e| StorageIOError::write(&e))?);
            match self.seal(&entry_aad(&entry.log_id).map_err(|e| StorageIOError::write(&e))?, &plaintext)? {
                Some(record) => entry.payload = EntryPayload::Normal(Payload::Sealed(record)),
                None if command.may_be_clear() => {}
                None => {
                    return Err(StorageIOError::write(&std::io::Error::other(format!(
                        "refusing to store entry {} in the clear: this node holds no log key",
                        entry.log_id
                    ))))
                }
            }
        }
        Ok(entry)
    }
}

/// Associated data of a log entry: its log id (term, leader, index). An encoding that fails is
/// an error: empty associated data would bind the record to no place at all.
pub(crate) fn entry_aad(log_id: &LogId<NodeId>) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(&("keyquorum log entry v1", log_id))
}

/// Decodes an opened command.
pub(crate) fn decode_command(plaintext: &SecretBytes) -> Result<Command, StorageIOError<NodeId>> {
    postcard::from_bytes(plaintext.expose()).map_err(|e| StorageIOError::read(&e))
}
