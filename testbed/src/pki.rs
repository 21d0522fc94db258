//! A certificate authority for a cluster: the CA (ECDSA P-256), and the certificates it issues
//! to nodes, operators and applications, each naming its principal (`raft::Principal`) in a
//! URI subject-alternative name. What `keyquorum cert` writes, and what the local cluster, the
//! multi-process tests, the Jepsen harness and the simulator run with.

use std::path::{Path, PathBuf};

use anyhow::Context;
use raft::Principal;
use zeroize::Zeroizing;

const DAY_SECS: i64 = 24 * 60 * 60;

/// A certificate with its private key, in PEM. The key never appears in `Debug` output.
#[derive(Clone)]
pub struct CertifiedKey {
    pub cert: String,
    pub key: Zeroizing<String>,
}

impl std::fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedKey").field("cert", &self.cert.len()).field("key", &"<redacted>").finish()
    }
}

impl CertifiedKey {
    /// Writes `<stem>.pem` (0644) and `<stem>.key` (0600) into `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        write_file(&cert, self.cert.as_bytes(), 0o644)?;
        write_file(&key, self.key.as_bytes(), 0o600)?;
        Ok((cert, key))
    }

    pub fn read(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        Ok(Self { cert: read_pem(cert, "CERTIFICATE")?, key: Zeroizing::new(read_pem(key, "PRIVATE KEY")?) })
    }
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Reads a PEM file and checks it holds a block whose label contains `label`.
fn read_pem(path: &Path, label: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !text.lines().any(|l| l.starts_with("-----BEGIN ") && l.contains(label)) {
        anyhow::bail!("{} holds no PEM {label} block", path.display());
    }
    Ok(text)
}

/// The cluster certificate authority.
pub struct Authority {
    issued: CertifiedKey,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").field("key", &"<redacted>").finish()
    }
}

fn validity(params: &mut rcgen::CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    // A day of slack for clocks behind ours.
    params.not_before = now - time::Duration::seconds(DAY_SECS);
    params.not_after = now + time::Duration::seconds(DAY_SECS * i64::from(days));
}

impl Authority {
    /// A new CA (ECDSA P-256), valid for `days`.
    pub fn generate(name: &str, days: u32) -> anyhow::Result<Self> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        validity(&mut params, days);
        let cert = params.self_signed(&key)?;
        let issued = CertifiedKey { cert: cert.pem(), key: Zeroizing::new(key.serialize_pem()) };
        Ok(Self { issued, issuer: rcgen::Issuer::new(params, key) })
    }

    /// Loads a CA written by [`Authority::write`] (or any CA certificate and its PKCS#8 key).
    pub fn read(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let issued = CertifiedKey::read(cert, key)?;
        let signing = rcgen::KeyPair::from_pem(&issued.key)
            .map_err(|e| anyhow::anyhow!("{} is not a usable private key: {e}", key.display()))?;
        let issuer = rcgen::Issuer::from_ca_cert_pem(&issued.cert, signing)
            .map_err(|e| anyhow::anyhow!("{} is not a usable CA certificate: {e}", cert.display()))?;
        Ok(Self { issued, issuer })
    }

    pub fn cert_pem(&self) -> &str {
        &self.issued.cert
    }

    /// Writes `ca.pem` and `ca.key` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
        self.issued.write(dir, "ca")
    }

    /// A certificate for `principal`, valid for `days`. `hosts` (DNS names or IP addresses)
    /// are where a node is reached; clients need none.
    pub fn issue(&self, principal: &Principal, hosts: &[String], days: u32) -> anyhow::Result<CertifiedKey> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(hosts.to_vec())?;
        params.distinguished_name.push(rcgen::DnType::CommonName, principal.to_string());
        let uri = rcgen::string::Ia5String::try_from(principal.uri())?;
        params.subject_alt_names.push(rcgen::SanType::URI(uri));
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match principal {
            Principal::Node(_) => {
                vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth]
            }
            Principal::Admin(_) | Principal::Client(_) => vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, days);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertifiedKey { cert: cert.pem(), key: Zeroizing::new(key.serialize_pem()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let ca = Authority::generate("test CA", 1).unwrap();
        let cert = ca.issue(&Principal::Client("x".into()), &[], 1).unwrap();
        assert!(!format!("{cert:?}").contains("PRIVATE"));
        assert!(!format!("{ca:?}").contains("PRIVATE"));
    }

    #[test]
    fn a_written_authority_reads_back_and_issues() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::generate("test CA", 1).unwrap();
        ca.write(dir.path()).unwrap();
        let again = Authority::read(&dir.path().join("ca.pem"), &dir.path().join("ca.key")).unwrap();
        assert_eq!(again.cert_pem(), ca.cert_pem());
        let (cert, key) =
            again.issue(&Principal::Node(2), &["127.0.0.1".into()], 1).unwrap().write(dir.path(), "n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(CertifiedKey::read(&cert, &key).is_ok());
        assert!(CertifiedKey::read(&key, &cert).is_err(), "a key is not a certificate");
    }
}
