//! mTLS: this node's credentials, and who is calling.
//!
//! Every certificate names its holder in a URI subject-alternative name, SPIFFE-style
//! (`raft::Principal`: `spiffe://keyquorum/node/<id>`, `…/admin/<name>`, `…/client/<name>`).
//! The server requires a client certificate signed by the cluster CA on every connection and
//! reads the principal from it ([`Caller`]); the services then decide what it may do
//! ([`Policy`]). Node certificates also carry the host names and addresses the node is reached
//! at, which clients and peers verify. The CA that issues them is `testbed::pki`
//! (`keyquorum cert`).
//!
//! **Architecture Invariant:** with TLS on, no request reaches a service handler without a
//! [`Caller`] taken from a verified certificate; `Caller::Plaintext` exists only when the
//! operator asked for plaintext (`tls.insecure_plaintext`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use raft::{NodeId, Principal};
use serde::{Deserialize, Serialize};
use tonic::transport::server::TlsConnectInfo;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use tonic::{Request, Status};
use zeroize::Zeroizing;

use crate::error::{NodeError, Result, StartError, StartResult};

const URI_PREFIX: &str = "spiffe://keyquorum/";

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
    pub fn validate(&self) -> StartResult<()> {
        let given = [&self.ca, &self.cert, &self.key].iter().filter(|p| p.is_some()).count();
        match (self.insecure_plaintext, given) {
            (true, 0) | (false, 3) => Ok(()),
            (true, _) => Err(StartError::Config(
                "tls.insecure_plaintext = true conflicts with tls.ca/cert/key: choose one".into(),
            )),
            (false, 0) => Err(StartError::Config(
                "no TLS configured: set tls.ca, tls.cert and tls.key (`keyquorum cert` makes them), \
                 or tls.insecure_plaintext = true to run without TLS"
                    .into(),
            )),
            (false, _) => Err(StartError::Config("tls.ca, tls.cert and tls.key must be given together".into())),
        }
    }
}

/// Who a call is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Named by a certificate the cluster CA signed: the caller's own, or, for a call a
    /// current member forwarded, the principal that member forwarded it for.
    Verified(Principal),
    /// TLS is off (`tls.insecure_plaintext`): nobody is authenticated.
    Plaintext,
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Verified(p) => write!(f, "{p}"),
            Caller::Plaintext => write!(f, "unauthenticated"),
        }
    }
}

/// The node id of a request's caller, when a node's certificate sent it; `None` in plaintext
/// mode (callers then name themselves); refused for any other principal.
pub fn calling_node<T>(request: &Request<T>) -> Result<Option<NodeId>> {
    let caller = request
        .extensions()
        .get::<Caller>()
        .ok_or_else(|| NodeError::Internal("request reached a handler without an authenticated caller".into()))?;
    match caller {
        Caller::Verified(Principal::Node(id)) => Ok(Some(*id)),
        Caller::Plaintext => Ok(None),
        Caller::Verified(who) => Err(NodeError::PermissionDenied(format!("{who} is not a cluster node"))),
    }
}

/// The role named by a DER certificate's URI subject-alternative name.
pub fn role_of(der: &[u8]) -> std::result::Result<Principal, String> {
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
    Principal::from_uri(uri).ok_or_else(|| format!("the certificate names an unknown role {uri:?}"))
}

/// Which roles a service admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// KMS: any role.
    AnyRole,
    /// Admin: operators only (members never forward an operator's call).
    AdminOnly,
    /// Node-to-node: nodes only.
    NodeOnly,
}

impl Policy {
    fn admits(self, role: &Principal) -> bool {
        matches!(
            (self, role),
            (Policy::AnyRole, _) | (Policy::AdminOnly, Principal::Admin(_)) | (Policy::NodeOnly, Principal::Node(_))
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
                            Policy::AdminOnly => "needs an admin certificate",
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

/// Reads a PEM file and checks it holds a block whose label contains `label`.
fn read_pem(path: &Path, label: &str) -> StartResult<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| StartError::Credentials(format!("cannot read {}: {e}", path.display())))?;
    if !text.lines().any(|l| l.starts_with("-----BEGIN ") && l.contains(label)) {
        return Err(StartError::Credentials(format!("{} holds no PEM {label} block", path.display())));
    }
    Ok(text)
}

/// What a node needs for mTLS: the CA to trust, and its own certificate and private key (PEM;
/// the key never appears in `Debug` output).
#[derive(Clone)]
pub struct Credentials {
    pub ca: String,
    pub cert: String,
    pub key: Zeroizing<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("cert", &self.cert.len()).field("key", &"<redacted>").finish()
    }
}

impl Credentials {
    /// Loads the files a `[tls]` section names; `None` for plaintext.
    pub fn load(config: &TlsConfig) -> StartResult<Option<Arc<Self>>> {
        config.validate()?;
        match (&config.ca, &config.cert, &config.key) {
            (Some(ca), Some(cert), Some(key)) => Ok(Some(Arc::new(Self::read(ca, cert, key)?))),
            _ => Ok(None),
        }
    }

    pub fn read(ca: &Path, cert: &Path, key: &Path) -> StartResult<Self> {
        Ok(Self {
            ca: read_pem(ca, "CERTIFICATE")?,
            cert: read_pem(cert, "CERTIFICATE")?,
            key: Zeroizing::new(read_pem(key, "PRIVATE KEY")?),
        })
    }

    /// This process's role, from its own certificate.
    pub fn role(&self) -> Result<Principal> {
        let der = pem_to_der(&self.cert)?;
        role_of(&der).map_err(NodeError::Invalid)
    }

    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert, self.key.as_bytes()))
            .client_ca_root(Certificate::from_pem(&self.ca))
    }

    pub fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .identity(Identity::from_pem(&self.cert, self.key.as_bytes()))
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
    use testbed::{Authority, CertifiedKey};

    use super::*;

    fn der(c: &CertifiedKey) -> Vec<u8> {
        pem_to_der(&c.cert).unwrap()
    }

    #[test]
    fn every_principal_round_trips_through_a_certificate() {
        let ca = Authority::generate("test CA", 1).unwrap();
        for who in [Principal::Node(7), Principal::Admin("ops".into()), Principal::Client("payments".into())] {
            let cert = ca.issue(&who, &["127.0.0.1".into(), "localhost".into()], 1).unwrap();
            assert_eq!(role_of(&der(&cert)).unwrap(), who);
        }
    }

    #[test]
    fn a_certificate_without_a_principal_is_refused() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().self_signed(&key).unwrap();
        assert!(role_of(cert.der()).unwrap_err().contains("no spiffe://keyquorum/ URI"));
        assert!(role_of(b"not a certificate").is_err());
    }

    #[test]
    fn policies_admit_only_their_principals() {
        let (node, admin, client) = (Principal::Node(1), Principal::Admin("a".into()), Principal::Client("c".into()));
        assert!(Policy::AnyRole.admits(&client));
        assert!(Policy::AdminOnly.admits(&admin));
        assert!(!Policy::AdminOnly.admits(&client) && !Policy::AdminOnly.admits(&node));
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
    fn the_private_key_stays_out_of_debug_output() {
        let ca = Authority::generate("test CA", 1).unwrap();
        let issued = ca.issue(&Principal::Node(1), &[], 1).unwrap();
        let credentials = Credentials { ca: ca.cert_pem().into(), cert: issued.cert, key: issued.key };
        assert!(!format!("{credentials:?}").contains("PRIVATE"));
    }
}
