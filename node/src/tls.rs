//! mTLS: the cluster CA, the certificates it issues, and who is calling.
//!
//! Every certificate names its holder's role in a URI subject-alternative name, SPIFFE-style:
//! `spiffe://keyquorum/node/<id>`, `spiffe://keyquorum/admin/<name>` or
//! `spiffe://keyquorum/client/<name>`. The server requires a client certificate signed by the
//! cluster CA on every connection and reads the role from it ([`Caller`]); the services then
//! decide what that role may do ([`Policy`]). Node certificates also carry the host names and
//! addresses the node is reached at, which clients and peers verify.
//!
//! **Architecture Invariant:** with TLS on, no request reaches a service handler without a
//! [`Caller`] taken from a verified certificate; `Caller::Plaintext` exists only when the
//! operator asked for plaintext (`tls.insecure_plaintext`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use raft::NodeId;
use serde::{Deserialize, Serialize};
use tonic::transport::server::TlsConnectInfo;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use tonic::{Request, Status};
use zeroize::Zeroizing;

use crate::error::{NodeError, Result};

const URI_PREFIX: &str = "spiffe://keyquorum/";
const DAY_SECS: i64 = 24 * 60 * 60;

/// `[tls]` in a node's config: the three PEM files, or an explicit opt-out.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The cluster CA certificate: peers and clients must present certificates it signed.
    pub ca: Option<PathBuf>,
    /// This node's certificate (role `node/<id>`), signed by the CA.
    pub cert: Option<PathBuf>,
    /// This node's private key (PKCS#8 PEM).
    pub key: Option<PathBuf>,
    /// Serve and dial without TLS. Anyone who can reach the port can then ask for decryption
    /// shares; for experiments on a closed machine only.
    pub insecure_plaintext: bool,
}

impl TlsConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        let given = [&self.ca, &self.cert, &self.key].iter().filter(|p| p.is_some()).count();
        match (self.insecure_plaintext, given) {
            (true, 0) | (false, 3) => Ok(()),
            (true, _) => anyhow::bail!("tls.insecure_plaintext = true conflicts with tls.ca/cert/key: choose one"),
            (false, 0) => anyhow::bail!(
                "no TLS configured: set tls.ca, tls.cert and tls.key (`keyquorum cert` makes them), \
                 or tls.insecure_plaintext = true to run without TLS"
            ),
            (false, _) => anyhow::bail!("tls.ca, tls.cert and tls.key must be given together"),
        }
    }
}

/// A role a certificate grants.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// A cluster member: node-to-node services, admin calls it forwards, KMS calls.
    Node(NodeId),
    /// An operator: admin and KMS calls.
    Admin(String),
    /// An application: KMS calls only.
    Client(String),
}

impl Role {
    fn uri(&self) -> String {
        match self {
            Role::Node(id) => format!("{URI_PREFIX}node/{id}"),
            Role::Admin(name) => format!("{URI_PREFIX}admin/{name}"),
            Role::Client(name) => format!("{URI_PREFIX}client/{name}"),
        }
    }

    fn from_uri(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix(URI_PREFIX)?;
        let (kind, name) = rest.split_once('/')?;
        if name.is_empty() || name.contains('/') {
            return None;
        }
        match kind {
            "node" => name.parse().ok().filter(|id| *id > 0).map(Role::Node),
            "admin" => Some(Role::Admin(name.to_string())),
            "client" => Some(Role::Client(name.to_string())),
            _ => None,
        }
    }

    /// Parses `node/3`, `admin/alice`, `client/payments` (the CLI's spelling).
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        Role::from_uri(&format!("{URI_PREFIX}{s}"))
            .ok_or_else(|| format!("bad role {s:?}: expected node/<id>, admin/<name> or client/<name>"))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Node(id) => write!(f, "node/{id}"),
            Role::Admin(name) => write!(f, "admin/{name}"),
            Role::Client(name) => write!(f, "client/{name}"),
        }
    }
}

/// Who sent a request, as the services see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Authenticated by a certificate the cluster CA signed.
    Verified(Role),
    /// TLS is off (`tls.insecure_plaintext`): nobody is authenticated.
    Plaintext,
}

impl Caller {
    /// The node id of a node caller; `None` in plaintext mode (callers then name themselves).
    pub fn node_id(&self) -> Result<Option<NodeId>> {
        match self {
            Caller::Verified(Role::Node(id)) => Ok(Some(*id)),
            Caller::Plaintext => Ok(None),
            Caller::Verified(role) => Err(NodeError::PermissionDenied(format!("{role} is not a cluster node"))),
        }
    }

    /// The caller of a request that went through [`Policy`]'s interceptor.
    pub fn of<T>(request: &Request<T>) -> Result<Caller> {
        request
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| NodeError::Internal("request reached a handler without an authenticated caller".into()))
    }
}

/// The role named by a DER certificate's URI subject-alternative name.
pub fn role_of(der: &[u8]) -> std::result::Result<Role, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("unreadable certificate: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subject alternative names: {e}"))?
        .ok_or("the certificate names no keyquorum role (no subject alternative name)")?;
    let mut roles = san.value.general_names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(uri) if uri.starts_with(URI_PREFIX) => Some(*uri),
        _ => None,
    });
    let uri = roles.next().ok_or("the certificate names no keyquorum role (no spiffe://keyquorum/ URI)")?;
    if roles.next().is_some() {
        return Err("the certificate names more than one keyquorum role".into());
    }
    Role::from_uri(uri).ok_or_else(|| format!("the certificate names an unknown role {uri:?}"))
}

/// Which roles a service admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// KMS: any role.
    AnyRole,
    /// Admin: operators, and nodes forwarding an operator's call.
    AdminOrNode,
    /// Node-to-node: nodes only.
    NodeOnly,
}

impl Policy {
    fn admits(self, role: &Role) -> bool {
        matches!(
            (self, role),
            (Policy::AnyRole, _)
                | (Policy::AdminOrNode, Role::Admin(_) | Role::Node(_))
                | (Policy::NodeOnly, Role::Node(_))
        )
    }

    /// A tonic interceptor that authenticates every request of a service and attaches its
    /// [`Caller`]. `I` is the server connection's `ConnectInfo` type.
    pub fn interceptor<I>(
        self,
        tls: bool,
    ) -> impl FnMut(Request<()>) -> std::result::Result<Request<()>, Status> + Clone
    where
        I: Clone + Send + Sync + 'static,
    {
        move |mut request: Request<()>| {
            let caller = if tls {
                let certs = request
                    .extensions()
                    .get::<TlsConnectInfo<I>>()
                    .and_then(|info| info.peer_certs())
                    .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
                let leaf = certs.first().ok_or_else(|| Status::unauthenticated("no client certificate"))?;
                let role = role_of(leaf).map_err(Status::unauthenticated)?;
                if !self.admits(&role) {
                    return Err(Status::permission_denied(format!(
                        "{role} may not call this service ({})",
                        match self {
                            Policy::AnyRole => "open to every role",
                            Policy::AdminOrNode => "needs an admin certificate",
                            Policy::NodeOnly => "for cluster nodes only",
                        }
                    )));
                }
                Caller::Verified(role)
            } else {
                Caller::Plaintext
            };
            request.extensions_mut().insert(caller);
            Ok(request)
        }
    }
}

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
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Reads a PEM file and checks it holds a block whose label contains `label`.
fn read_pem(path: &Path, label: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
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

fn cert_error(e: rcgen::Error) -> NodeError {
    NodeError::Invalid(format!("certificate: {e}"))
}

impl Authority {
    /// A new CA (ECDSA P-256), valid for `days`.
    pub fn generate(name: &str, days: u32) -> Result<Self> {
        let key = rcgen::KeyPair::generate().map_err(cert_error)?;
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        validity(&mut params, days);
        let cert = params.self_signed(&key).map_err(cert_error)?;
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

    /// A certificate for `role`, valid for `days`. `hosts` (DNS names or IP addresses) are
    /// where a node is reached; clients need none.
    pub fn issue(&self, role: &Role, hosts: &[String], days: u32) -> Result<CertifiedKey> {
        let key = rcgen::KeyPair::generate().map_err(cert_error)?;
        let mut params = rcgen::CertificateParams::new(hosts.to_vec()).map_err(cert_error)?;
        params.distinguished_name.push(rcgen::DnType::CommonName, role.to_string());
        let uri = rcgen::string::Ia5String::try_from(role.uri()).map_err(cert_error)?;
        params.subject_alt_names.push(rcgen::SanType::URI(uri));
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match role {
            Role::Node(_) => {
                vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth]
            }
            Role::Admin(_) | Role::Client(_) => vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, days);
        let cert = params.signed_by(&key, &self.issuer).map_err(cert_error)?;
        Ok(CertifiedKey { cert: cert.pem(), key: Zeroizing::new(key.serialize_pem()) })
    }
}

/// What a process needs for mTLS: the CA to trust and its own certified key.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub ca: String,
    pub own: CertifiedKey,
}

impl Credentials {
    /// Loads the files a `[tls]` section names; `None` for plaintext.
    pub fn load(config: &TlsConfig) -> anyhow::Result<Option<Arc<Self>>> {
        config.validate()?;
        match (&config.ca, &config.cert, &config.key) {
            (Some(ca), Some(cert), Some(key)) => Ok(Some(Arc::new(Self::read(ca, cert, key)?))),
            _ => Ok(None),
        }
    }

    pub fn read(ca: &Path, cert: &Path, key: &Path) -> anyhow::Result<Self> {
        Ok(Self { ca: read_pem(ca, "CERTIFICATE")?, own: CertifiedKey::read(cert, key)? })
    }

    /// This process's role, from its own certificate.
    pub fn role(&self) -> Result<Role> {
        let der = pem_to_der(&self.own.cert)?;
        role_of(&der).map_err(NodeError::Invalid)
    }

    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.own.cert, self.own.key.as_bytes()))
            .client_ca_root(Certificate::from_pem(&self.ca))
    }

    pub fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .identity(Identity::from_pem(&self.own.cert, self.own.key.as_bytes()))
    }
}

/// The DER bytes of the first certificate in a PEM text.
fn pem_to_der(pem: &str) -> Result<Vec<u8>> {
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| NodeError::Invalid(format!("bad PEM: {e}")))?;
    Ok(block.contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der(c: &CertifiedKey) -> Vec<u8> {
        pem_to_der(&c.cert).unwrap()
    }

    #[test]
    fn every_role_round_trips_through_a_certificate() {
        let ca = Authority::generate("test CA", 1).unwrap();
        for role in [Role::Node(7), Role::Admin("ops".into()), Role::Client("payments".into())] {
            let cert = ca.issue(&role, &["127.0.0.1".into(), "localhost".into()], 1).unwrap();
            assert_eq!(role_of(&der(&cert)).unwrap(), role);
        }
    }

    #[test]
    fn roles_parse_only_in_their_spelling() {
        assert_eq!(Role::parse("node/3").unwrap(), Role::Node(3));
        assert_eq!(Role::parse("admin/alice").unwrap(), Role::Admin("alice".into()));
        for bad in ["node/0", "node/x", "node/", "root/1", "client/a/b", "", "admin"] {
            assert!(Role::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn a_certificate_without_a_role_is_refused() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().self_signed(&key).unwrap();
        assert!(role_of(cert.der()).unwrap_err().contains("no spiffe://keyquorum/ URI"));
        assert!(role_of(b"not a certificate").is_err());
    }

    #[test]
    fn policies_admit_only_their_roles() {
        let (node, admin, client) = (Role::Node(1), Role::Admin("a".into()), Role::Client("c".into()));
        assert!(Policy::AnyRole.admits(&client));
        assert!(Policy::AdminOrNode.admits(&admin) && Policy::AdminOrNode.admits(&node));
        assert!(!Policy::AdminOrNode.admits(&client));
        assert!(Policy::NodeOnly.admits(&node));
        assert!(!Policy::NodeOnly.admits(&admin) && !Policy::NodeOnly.admits(&client));
    }

    #[test]
    fn config_needs_all_three_files_or_explicit_plaintext() {
        assert!(TlsConfig::default().validate().unwrap_err().to_string().contains("insecure_plaintext"));
        let plain = TlsConfig { insecure_plaintext: true, ..Default::default() };
        plain.validate().unwrap();
        let partial = TlsConfig { ca: Some("ca.pem".into()), ..Default::default() };
        assert!(partial.validate().is_err());
        let both =
            TlsConfig { ca: Some("a".into()), cert: Some("b".into()), key: Some("c".into()), insecure_plaintext: true };
        assert!(both.validate().is_err());
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let ca = Authority::generate("test CA", 1).unwrap();
        let cert = ca.issue(&Role::Client("x".into()), &[], 1).unwrap();
        assert!(!format!("{cert:?}").contains("PRIVATE"));
        assert!(!format!("{ca:?}").contains("PRIVATE"));
    }
}
