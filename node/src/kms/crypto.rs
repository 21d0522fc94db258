//! The cryptographic calls: material from custody (cached, or unwrapped with t+1 shares),
//! then the ciphertext format, ECDSA or the RNG.

use crypto::{ciphertext, ecdsa, SecretBytes};
use raft::{Key, KeyUsage, KeyVersion};

use super::{Context, Kms, Out};
use crate::error::{NodeError, Result};

/// The version a call names, or the primary for `None`.
fn version_or_primary(key: &Key, usage: KeyUsage, version: Option<u32>) -> Result<&KeyVersion> {
    Ok(match version {
        None => key.primary_for(usage)?,
        Some(v) => key.version_for(usage, v)?,
    })
}

/// The SEC1 public point of a signing key version (stored in the clear, no unwrap needed).
fn public_point(version: &KeyVersion) -> Result<Vec<u8>> {
    version
        .material
        .as_ref()
        .and_then(|m| m.public_key.clone())
        .ok_or_else(|| NodeError::Internal("signing key version without a public key".into()))
}

impl Kms {
    /// `plaintext` under `key`'s primary version: the ciphertext and the version used.
    async fn seal(&self, key: &Key, plaintext: &[u8], context: &Context) -> Result<(Vec<u8>, u32)> {
        let mut version = key.primary_for(KeyUsage::EncryptDecrypt)?;
        // Failpoint (simulator self-test): keep encrypting under the version before the
        // latest rotation.
        if crate::failpoint("node::encrypt-with-previous-version") && version.version > 1 {
            version = key.version_for(KeyUsage::EncryptDecrypt, version.version - 1)?;
        }
        let material = self.node.custody.material(key, version).await?;
        let v = version.version;
        let ct = self.node.with_rng(|rng| ciphertext::encrypt(&material, key.id, v, context, plaintext, rng))?;
        Ok((ct, v))
    }

    /// The plaintext of a ciphertext under `key` (the key its header names).
    async fn open(&self, key: &Key, ct: &[u8], context: &Context) -> Result<(SecretBytes, u32)> {
        let header = ciphertext::parse_header(ct)?;
        let version = key.version_for(KeyUsage::EncryptDecrypt, header.key_version)?;
        let material = self.node.custody.material(key, version).await?;
        Ok((ciphertext::decrypt(&material, ct, context)?, version.version))
    }

    pub(super) async fn encrypt(&self, key: &Key, plaintext: &[u8], context: &Context) -> Result<Out> {
        let (ciphertext, version) = self.seal(key, plaintext, context).await?;
        Ok(Out::Encrypted { ciphertext, key_id: key.id, version })
    }

    pub(super) async fn decrypt(&self, key: &Key, ciphertext: &[u8], context: &Context) -> Result<Out> {
        let (plaintext, version) = self.open(key, ciphertext, context).await?;
        Ok(Out::Decrypted { plaintext, key_id: key.id, version })
    }

    pub(super) async fn re_encrypt(
        &self,
        source: &Key,
        ciphertext: &[u8],
        source_context: &Context,
        destination: &Key,
        destination_context: &Context,
    ) -> Result<Out> {
        let (plaintext, source_version) = self.open(source, ciphertext, source_context).await?;
        let (ciphertext, version) = self.seal(destination, plaintext.expose(), destination_context).await?;
        Ok(Out::ReEncrypted { ciphertext, source_key_id: source.id, source_version, key_id: destination.id, version })
    }

    pub(super) async fn data_key(&self, key: &Key, bytes: u32, context: &Context, with_plaintext: bool) -> Result<Out> {
        let plaintext = self.node.with_rng(|rng| {
            let mut b = vec![0u8; bytes as usize];
            rand_core::RngCore::fill_bytes(rng, &mut b);
            SecretBytes::new(b)
        });
        let (ciphertext, version) = self.seal(key, plaintext.expose(), context).await?;
        Ok(Out::DataKey { plaintext: with_plaintext.then_some(plaintext), ciphertext, key_id: key.id, version })
    }

    pub(super) fn random(&self, bytes: u32) -> Out {
        Out::Random(self.node.with_rng(|rng| {
            let mut b = vec![0u8; bytes as usize];
            rand_core::RngCore::fill_bytes(rng, &mut b);
            b
        }))
    }

    pub(super) async fn sign(&self, key: &Key, message: &[u8]) -> Result<Out> {
        let version = key.primary_for(KeyUsage::SignVerify)?;
        let scalar = self.node.custody.material(key, version).await?;
        let signature = ecdsa::sign(&scalar, message)?;
        Ok(Out::Signed { signature, key_id: key.id, version: version.version })
    }

    pub(super) fn verify(&self, key: &Key, version: Option<u32>, message: &[u8], signature: &[u8]) -> Result<Out> {
        let version = version_or_primary(key, KeyUsage::SignVerify, version)?;
        match ecdsa::verify_der(&public_point(version)?, message, signature) {
            Ok(()) => Ok(Out::Verified(true)),
            Err(crypto::CryptoError::BadSignature) => Ok(Out::Verified(false)),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) fn public_key(&self, key: &Key, version: Option<u32>) -> Result<Out> {
        let version = version_or_primary(key, KeyUsage::SignVerify, version)?;
        let (der, pem) = ecdsa::public_key_spki(&public_point(version)?)?;
        Ok(Out::PublicKey { key_id: key.id, version: version.version, der, pem })
    }
}
