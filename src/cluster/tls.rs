//! Mutual TLS for cluster connections, with the peer's identity bound to its certificate.
//!
//! Why not ractor_cluster's own `IncomingEncryptionMode::Tls`: it verifies the client certificate but then drops it,
//! so the node session only knows the name the peer *claims* in the cookie handshake — any site holding a valid
//! certificate could call itself `site-0`. It also runs the TLS handshake inline in the accept loop, so one silent
//! peer stalls every other connection.
//!
//! So we terminate TLS here and hand the decrypted stream to ractor_cluster as an *external* stream
//! (`NodeServerMessage::ConnectionOpenedExternal`). Its `peer_label()` — which ractor_cluster reports as the
//! session's `peer_addr` — carries the verified identity as `mtls:{identity}@{socket address}`; the identity is the
//! first DNS SAN of the peer's certificate (`server`, `site-3`, see `crate::cluster::certs`). [`identity_from_label`] reads it
//! back, so node-session handling can refuse a session whose claimed node name differs from its certificate, or
//! which has no `mtls:` label at all (it came through ractor_cluster's own listener).
//!
//! The cookie challenge still runs inside the session: the certificate says *who*, the cookie says *which cluster*.
//!
//! Notes for callers:
//! - ractor_cluster's NodeServer always runs its own listener. Bind it to loopback (or give it
//!   `IncomingEncryptionMode::Tls(acceptor)` too) and treat sessions without an `mtls:` label as unauthenticated.
//! - With TLS 1.3 a client finishes its handshake before the server has judged the client certificate, so a client
//!   whose certificate is refused sees `connect_tls` succeed and the session drop right after; the server side
//!   counts and logs the refusal. The client learns it from the fatal alert on the session's first read:
//!   [`PeerVerdict`] reports that read.
//! - A handshake that fails over a certificate (either side's) is a [`TlsError::Certificate`] with a typed
//!   [`CertRefusal`]: a configuration error, which retrying does not fix, unlike a refused or reset connection.
//! - The CryptoProvider is passed explicitly (aws-lc-rs, which ractor_cluster already links) instead of relying on a
//!   process-wide default that is ambiguous once two providers are compiled in.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ractor::{ActorRef, ActorStatus};
use ractor_cluster::{BoxRead, BoxWrite, ClusterBidiStream, NodeServerMessage};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::rustls::crypto::{aws_lc_rs, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// How long a peer may take from TCP accept (or connect) to a finished TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight at once; connections beyond this are refused instead of queued, so a flood of half-open
/// connections costs bounded memory.
pub const MAX_PENDING_HANDSHAKES: usize = 256;
/// Prefix of a peer label whose identity was verified by this module.
pub const LABEL_PREFIX: &str = "mtls:";

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("{}: {problem}", .path.display())]
    Material { path: PathBuf, problem: String },
    #[error("invalid TLS configuration: {0}")]
    Config(String),
    #[error("invalid server name {0:?}")]
    ServerName(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: std::io::Error },
    #[error("TLS handshake with {peer} failed: {reason}")]
    Handshake { peer: SocketAddr, reason: String },
    /// The handshake failed over a certificate: a configuration error, not a network one.
    #[error("TLS handshake with {peer} failed over a certificate: {refusal}")]
    Certificate { peer: SocketAddr, refusal: CertRefusal },
    #[error("TLS handshake with {peer} timed out after {after:?}")]
    Timeout { peer: SocketAddr, after: Duration },
    #[error("peer {peer} has no usable identity: {reason}")]
    Identity { peer: SocketAddr, reason: String },
    #[error("the cluster node is gone: {0}")]
    Node(String),
}

impl TlsError {
    /// The certificate refusal this error is, if it is one.
    pub fn certificate_refusal(&self) -> Option<&CertRefusal> {
        match self {
            TlsError::Certificate { refusal, .. } => Some(refusal),
            _ => None,
        }
    }
}

/// A TLS handshake refused over a certificate — one signed by another CA, expired, issued to another name — by
/// either side. Trying again does not help: a certificate or CA file has to change.
#[derive(Debug, Clone)]
pub enum CertRefusal {
    /// This node refused the peer's certificate (rustls `InvalidCertificate`).
    TheirCertificate(CertificateError),
    /// The peer refused this node's certificate: the fatal alert it sent (`bad_certificate`, `unknown_ca`,
    /// `decrypt_error` for a bad signature, …).
    OurCertificate(AlertDescription),
}

impl CertRefusal {
    /// The refusal a rustls error reports, if it is one.
    pub fn from_rustls(e: &tokio_rustls::rustls::Error) -> Option<Self> {
        use tokio_rustls::rustls::Error;
        match e {
            Error::InvalidCertificate(c) => Some(CertRefusal::TheirCertificate(c.clone())),
            Error::AlertReceived(a) if is_certificate_alert(*a) => Some(CertRefusal::OurCertificate(*a)),
            _ => None,
        }
    }

    /// The refusal behind an I/O error of a TLS stream (tokio-rustls carries the rustls error inside), if any.
    pub fn from_io(e: &std::io::Error) -> Option<Self> {
        e.get_ref()?.downcast_ref::<tokio_rustls::rustls::Error>().and_then(Self::from_rustls)
    }

    /// What to check, for a node that dialled the server with `material`'s files.
    pub fn advice(&self, material: &TlsMaterial) -> String {
        let (ca, cert) = (material.ca_path.display(), material.cert_path.display());
        match self {
            CertRefusal::TheirCertificate(e) => match e {
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => format!(
                    "the server presented a certificate not issued to `{}`: check the server's certificate file \
                     (reissue it with `histofed certs issue --name {}`)",
                    crate::cluster::certs::SERVER_NAME,
                    crate::cluster::certs::SERVER_NAME
                ),
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => {
                    "the server's certificate is outside its validity period: check both clocks, or reissue it"
                        .to_string()
                }
                _ => format!(
                    "the server's certificate is not signed by the CA in {ca}: check that {ca} is the CA that issued \
                     the server's certificate (every node needs the same ca.pem)"
                ),
            },
            CertRefusal::OurCertificate(_) => format!(
                "the server refused this node's certificate {cert}: check that it was issued by the CA in the \
                 server's ca.pem (its cluster.tls_dir), and reissue it from that CA if not"
            ),
        }
    }
}

impl std::fmt::Display for CertRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertRefusal::TheirCertificate(e) => write!(f, "this node refused the peer's certificate ({e})"),
            CertRefusal::OurCertificate(a) => write!(f, "the peer refused this node's certificate (alert {a:?})"),
        }
    }
}

/// Alerts a peer sends when it refuses the certificate it was shown (RFC 8446 §6.2; rustls sends `DecryptError`
/// for a bad signature and `AccessDenied` for an application's refusal).
fn is_certificate_alert(a: AlertDescription) -> bool {
    matches!(
        a,
        AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::DecryptError
            | AlertDescription::AccessDenied
            | AlertDescription::CertificateRequired
    )
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(aws_lc_rs::default_provider())
}

/// The identity a certificate carries: its first DNS subject alternative name (wildcards are not identities).
pub fn identity_of(cert: &CertificateDer<'_>) -> Result<String, String> {
    let ee = webpki::EndEntityCert::try_from(cert).map_err(|e| format!("unparsable certificate: {e}"))?;
    match ee.valid_dns_names().next() {
        Some(name) if !name.contains('*') => Ok(name.to_string()),
        Some(name) => Err(format!("first DNS name {name:?} is a wildcard")),
        None => Err("certificate has no DNS subject alternative name".to_string()),
    }
}

/// The peer label for a verified `identity` reached at `addr`.
pub fn label(identity: &str, addr: SocketAddr) -> String {
    format!("{LABEL_PREFIX}{identity}@{addr}")
}

/// Reads the verified identity back from a session's `peer_addr` (`mtls:site-3@127.0.0.1:4567` → `site-3`).
/// `None` for anything else — in particular for sessions that did not come through this module.
pub fn identity_from_label(peer_addr: &str) -> Option<&str> {
    let (identity, addr) = peer_addr.strip_prefix(LABEL_PREFIX)?.split_once('@')?;
    (!identity.is_empty() && !addr.is_empty()).then_some(identity)
}

/// The identity a session claims, from ractor_cluster's `peer_name.name`: `site-3@hostname` → `site-3`, and
/// `site-3.00ab12cd@hostname` → `site-3` (a site process names its node after its identity plus its own instance,
/// so that a replacement process for the same site opens a session of its own beside a zombie's instead of
/// colliding with it; see `federation::fencing`).
pub fn claimed_node(peer_name: &str) -> &str {
    let node = peer_name.split_once('@').map_or(peer_name, |(node, _)| node);
    match node.split_once('.') {
        Some((identity, instance)) if !instance.is_empty() && instance.bytes().all(|b| b.is_ascii_hexdigit()) => {
            identity
        }
        _ => node,
    }
}

/// The node name of one process of `identity`: `site-3.00000000deadbeef`.
pub fn process_node_name(identity: &str, instance: u64) -> String {
    format!("{identity}.{instance:016x}")
}

/// `true` when a session's claimed node name (`peer_name.name`, e.g. `site-3@host`) is the identity its certificate
/// proved (`peer_addr`, e.g. `mtls:site-3@10.0.0.7:4567`). `false` for sessions that did not come through this
/// module: with mTLS on, those must be refused.
pub fn identity_matches(peer_name: &str, peer_addr: &str) -> bool {
    identity_from_label(peer_addr).is_some_and(|identity| identity == claimed_node(peer_name))
}

/// This node's CA, certificate chain and key, loaded from a certificate directory.
pub struct TlsMaterial {
    ca: Vec<CertificateDer<'static>>,
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    identity: String,
    /// The files they came from, for error messages.
    ca_path: PathBuf,
    cert_path: PathBuf,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("identity", &self.identity)
            .field("ca_certs", &self.ca.len())
            .field("chain_len", &self.cert_chain.len())
            .field("ca_path", &self.ca_path)
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

impl Clone for TlsMaterial {
    fn clone(&self) -> Self {
        Self {
            ca: self.ca.clone(),
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
            identity: self.identity.clone(),
            ca_path: self.ca_path.clone(),
            cert_path: self.cert_path.clone(),
        }
    }
}

fn material_err(path: &Path, problem: impl Into<String>) -> TlsError {
    TlsError::Material { path: path.to_path_buf(), problem: problem.into() }
}

fn read_pem_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => material_err(path, "missing (create it with `histofed certs init|issue`)"),
        _ => material_err(path, format!("cannot read: {e}")),
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_pem_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| material_err(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(material_err(path, "no certificate in the file (expected `-----BEGIN CERTIFICATE-----`)"));
    }
    Ok(certs)
}

impl TlsMaterial {
    /// Loads `dir/ca.pem`, `dir/<node_name>.pem` and `dir/<node_name>.key`, and checks up front what would
    /// otherwise fail later as an opaque handshake error: the key matches the certificate, the certificate chains to
    /// the CA and is currently valid, and it is issued to `node_name`.
    pub fn load(dir: &Path, node_name: &str) -> Result<Self, TlsError> {
        let ca_path = dir.join("ca.pem");
        let cert_path = dir.join(format!("{node_name}.pem"));
        let key_path = dir.join(format!("{node_name}.key"));

        let ca = read_certs(&ca_path)?;
        let cert_chain = read_certs(&cert_path)?;
        let key_bytes = read_pem_file(&key_path)?;
        let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| match e {
            tokio_rustls::rustls::pki_types::pem::Error::NoItemsFound => {
                material_err(&key_path, "no private key in the file (expected `-----BEGIN PRIVATE KEY-----`)")
            }
            e => material_err(&key_path, format!("not a PEM private key: {e}")),
        })?;

        let provider = provider();
        CertifiedKey::from_der(cert_chain.clone(), key.clone_key(), &provider).map_err(|e| {
            material_err(&key_path, format!("unusable key or not the key of {}: {e}", cert_path.display()))
        })?;

        let mut anchors = Vec::with_capacity(ca.len());
        for cert in &ca {
            anchors.push(
                webpki::anchor_from_trusted_cert(cert)
                    .map_err(|e| material_err(&ca_path, format!("not a usable CA certificate: {e}")))?,
            );
        }
        let (end_entity, intermediates) = cert_chain.split_first().ok_or_else(|| material_err(&cert_path, "empty"))?;
        let ee = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| material_err(&cert_path, format!("unparsable certificate: {e}")))?;
        // The server is checked as a TLS server, every other node as a client: the usage each actually needs.
        let usage =
            if node_name == "server" { webpki::KeyUsage::server_auth() } else { webpki::KeyUsage::client_auth() };
        ee.verify_for_usage(
            provider.signature_verification_algorithms.all,
            &anchors,
            intermediates,
            UnixTime::now(),
            usage,
            None,
            None,
        )
        .map_err(|e| material_err(&cert_path, format!("not accepted under {}: {e}", ca_path.display())))?;

        let identity = identity_of(end_entity).map_err(|e| material_err(&cert_path, e))?;
        if identity != node_name {
            return Err(material_err(
                &cert_path,
                format!("certificate is issued to `{identity}`, not to this node `{node_name}`"),
            ));
        }
        Ok(Self { ca, cert_chain, key, identity, ca_path, cert_path })
    }

    /// The identity in this node's certificate (equal to the `node_name` it was loaded for).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The CA file (`ca.pem`) this node trusts.
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// This node's certificate file.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in &self.ca {
            roots.add(cert.clone()).map_err(|e| TlsError::Config(format!("CA certificate: {e}")))?;
        }
        Ok(Arc::new(roots))
    }

    /// A server-side acceptor that requires a client certificate signed by the CA.
    pub fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        let provider = provider();
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider.clone())
            .build()
            .map_err(|e| TlsError::Config(format!("client verifier: {e}")))?;
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.cert_chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Config(format!("server certificate: {e}")))?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// A client-side connector that presents this node's certificate and accepts only servers signed by the CA.
    pub fn connector(&self) -> Result<TlsConnector, TlsError> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.cert_chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Config(format!("client certificate: {e}")))?;
        Ok(TlsConnector::from(Arc::new(config)))
    }
}

/// A verified TLS stream handed to ractor_cluster; its labels carry the peer's identity.
struct TlsBidi<S> {
    stream: S,
    peer_label: String,
    local_label: String,
    /// Dialled streams: told how the session's first read ended ([`PeerVerdict`]).
    first_read: Option<oneshot::Sender<Option<CertRefusal>>>,
}

impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> ClusterBidiStream for TlsBidi<S> {
    fn split(self: Box<Self>) -> (BoxRead, BoxWrite) {
        let (read, write) = tokio::io::split(self.stream);
        let read: BoxRead = match self.first_read {
            Some(tx) => Box::new(FirstRead { inner: read, tx: Some(tx) }),
            None => Box::new(read),
        };
        (read, Box::new(write))
    }

    fn peer_label(&self) -> Option<String> {
        Some(self.peer_label.clone())
    }

    fn local_label(&self) -> Option<String> {
        Some(self.local_label.clone())
    }
}

/// A read half that reports how its first read ended: with bytes, at end of stream, or with an error — a
/// [`CertRefusal`] when the peer's fatal alert refused this node's certificate.
struct FirstRead<R> {
    inner: R,
    tx: Option<oneshot::Sender<Option<CertRefusal>>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for FirstRead<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(result) = &polled {
            if let Some(tx) = self.tx.take() {
                let _ = tx.send(result.as_ref().err().and_then(CertRefusal::from_io));
            }
        }
        polled
    }
}

/// The peer's verdict on this node's certificate, for a session dialled with [`connect_tls`]. With TLS 1.3 the
/// client's handshake ends before the server has judged the client's certificate; a refusal arrives as a fatal
/// alert on the session's first read, which ractor_cluster does right away (the server answers its hello).
#[derive(Debug)]
pub struct PeerVerdict(oneshot::Receiver<Option<CertRefusal>>);

impl PeerVerdict {
    /// Waits at most `limit` for the session's first read: the refusal if the peer refused this node's
    /// certificate; `None` when bytes arrived, the session ended otherwise, or nothing was read in time.
    pub async fn refusal(self, limit: Duration) -> Option<CertRefusal> {
        tokio::time::timeout(limit, self.0).await.ok().and_then(Result::ok).flatten()
    }
}

fn peer_identity(peer: SocketAddr, certs: Option<&[CertificateDer<'static>]>) -> Result<String, TlsError> {
    let cert = certs
        .and_then(|c| c.first())
        .ok_or_else(|| TlsError::Identity { peer, reason: "no certificate presented".to_string() })?;
    identity_of(cert).map_err(|reason| TlsError::Identity { peer, reason })
}

/// A running mTLS listener. Dropping it (or [`TlsListener::shutdown`]) stops accepting and aborts handshakes in
/// flight; sessions already handed to the node are unaffected.
pub struct TlsListener {
    local_addr: SocketAddr,
    refused: Arc<AtomicU64>,
    accepted: Arc<AtomicU64>,
    task: Option<JoinHandle<()>>,
}

impl TlsListener {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Connections refused so far: failed or timed-out handshakes, missing identities, overload.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections verified and handed to the node so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Stops accepting and waits until the accept task (and every handshake in flight) is gone.
    pub async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Accepts mTLS connections on `addr` and hands each verified stream to `node` as an incoming external session
/// labelled `mtls:{identity}@{peer address}`. Refusals are logged at warn and counted.
pub async fn listen_tls(
    node: ActorRef<NodeServerMessage>,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
) -> Result<TlsListener, TlsError> {
    listen_tls_with_timeout(node, addr, acceptor, HANDSHAKE_TIMEOUT).await
}

/// [`listen_tls`] with an explicit handshake timeout.
pub async fn listen_tls_with_timeout(
    node: ActorRef<NodeServerMessage>,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
) -> Result<TlsListener, TlsError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| TlsError::Bind { addr, source })?;
    let local_addr = listener.local_addr().map_err(|source| TlsError::Bind { addr, source })?;
    let refused = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let task =
        tokio::spawn(accept_loop(listener, node, acceptor, handshake_timeout, refused.clone(), accepted.clone()));
    tracing::info!(%local_addr, "mTLS cluster listener started");
    Ok(TlsListener { local_addr, refused, accepted, task: Some(task) })
}

async fn accept_loop(
    listener: TcpListener,
    node: ActorRef<NodeServerMessage>,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    refused: Arc<AtomicU64>,
    accepted: Arc<AtomicU64>,
) {
    let local_addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let slots = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    // Handshakes live in this set, so aborting the accept task aborts them too.
    let mut handshakes = JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            incoming = listener.accept() => match incoming {
                Ok(conn) => conn,
                Err(e) => {
                    // Usually EMFILE or a reset before accept: back off briefly instead of spinning.
                    tracing::warn!(%local_addr, error = %e, "accepting a cluster connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
        };
        if matches!(node.get_status(), ActorStatus::Stopping | ActorStatus::Stopped) {
            // Nobody can take the stream any more; closing the listener tells peers so instead of a silent drop.
            tracing::warn!(%local_addr, "cluster node stopped; mTLS listener closing");
            return;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, reason = "too many handshakes in flight", "mTLS connection refused");
            continue;
        };
        let (node, acceptor, refused, accepted, local_addr) =
            (node.clone(), acceptor.clone(), refused.clone(), accepted.clone(), local_addr.clone());
        handshakes.spawn(async move {
            let _slot = slot;
            match handshake(tcp, peer, &acceptor, handshake_timeout).await {
                Ok((stream, identity)) => {
                    let peer_label = label(&identity, peer);
                    let bidi =
                        TlsBidi { stream, peer_label: peer_label.clone(), local_label: local_addr, first_read: None };
                    match node
                        .cast(NodeServerMessage::ConnectionOpenedExternal { stream: Box::new(bidi), is_server: true })
                    {
                        Ok(()) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(%peer, %identity, "mTLS cluster connection accepted");
                        }
                        Err(e) => tracing::warn!(%peer_label, error = %e, "cluster node gone; dropping connection"),
                    }
                }
                Err(e) => {
                    refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, reason = %e, "mTLS connection refused");
                }
            }
        });
    }
}

async fn handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: &TlsAcceptor,
    handshake_timeout: Duration,
) -> Result<(tokio_rustls::server::TlsStream<TcpStream>, String), TlsError> {
    let _ = tcp.set_nodelay(true);
    let stream = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp))
        .await
        .map_err(|_| TlsError::Timeout { peer, after: handshake_timeout })?
        .map_err(|e| TlsError::Handshake { peer, reason: e.to_string() })?;
    let identity = peer_identity(peer, stream.get_ref().1.peer_certificates())?;
    Ok((stream, identity))
}

/// Dials the node at `addr` over mTLS, checks that its certificate is valid for `server_name` (a DNS SAN such as
/// `server`, or an IP SAN) under our CA, and hands the stream to `node` as an outgoing session labelled
/// `mtls:{server identity}@{addr}`. As with `client_connect`, the peer has joined only once the session is ready;
/// the returned [`PeerVerdict`] tells whether the peer refused this node's certificate after the handshake.
pub async fn connect_tls(
    node: &ActorRef<NodeServerMessage>,
    addr: SocketAddr,
    connector: TlsConnector,
    server_name: &str,
) -> Result<PeerVerdict, TlsError> {
    connect_tls_with_timeout(node, addr, connector, server_name, HANDSHAKE_TIMEOUT).await
}

/// [`connect_tls`] with an explicit timeout for TCP connect plus handshake.
pub async fn connect_tls_with_timeout(
    node: &ActorRef<NodeServerMessage>,
    addr: SocketAddr,
    connector: TlsConnector,
    server_name: &str,
    timeout: Duration,
) -> Result<PeerVerdict, TlsError> {
    let name =
        ServerName::try_from(server_name.to_string()).map_err(|_| TlsError::ServerName(server_name.to_string()))?;
    let dial = async {
        let tcp = TcpStream::connect(addr).await.map_err(|source| TlsError::Connect { addr, source })?;
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let stream = connector.connect(name, tcp).await.map_err(|e| match CertRefusal::from_io(&e) {
            Some(refusal) => TlsError::Certificate { peer: addr, refusal },
            None => TlsError::Handshake { peer: addr, reason: e.to_string() },
        })?;
        Ok::<_, TlsError>((stream, local))
    };
    let (stream, local_label) =
        tokio::time::timeout(timeout, dial).await.map_err(|_| TlsError::Timeout { peer: addr, after: timeout })??;
    let identity = peer_identity(addr, stream.get_ref().1.peer_certificates())?;
    let (tx, rx) = oneshot::channel();
    let bidi = TlsBidi { stream, peer_label: label(&identity, addr), local_label, first_read: Some(tx) };
    node.cast(NodeServerMessage::ConnectionOpenedExternal { stream: Box::new(bidi), is_server: false })
        .map_err(|e| TlsError::Node(e.to_string()))?;
    tracing::info!(%addr, %identity, "mTLS cluster connection opened");
    Ok(PeerVerdict(rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::certs;
    use ractor::{Actor, ActorProcessingErr};
    use ractor_cluster::node::NodeServerSessionInformation;
    use ractor_cluster::{NodeEventSubscription, NodeServer};
    use std::net::{IpAddr, Ipv4Addr};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
    use tokio::time::timeout;

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const WAIT: Duration = Duration::from_secs(10);

    fn any_port() -> SocketAddr {
        SocketAddr::new(LOCALHOST, 0)
    }

    /// A CA directory with certificates for `server`, `site-0`, `site-1` and `site-2`.
    fn pki() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        certs::issue_all(dir.path(), 3).unwrap();
        dir
    }

    struct Opened {
        label: Option<String>,
        is_server: bool,
        stream: Box<dyn ClusterBidiStream>,
    }

    /// Stands in for a NodeServer: records the external streams it is handed.
    struct Sink;

    impl Actor for Sink {
        type Msg = NodeServerMessage;
        type State = UnboundedSender<Opened>;
        type Arguments = UnboundedSender<Opened>;

        async fn pre_start(
            &self,
            _: ActorRef<Self::Msg>,
            tx: Self::Arguments,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(tx)
        }

        async fn handle(
            &self,
            _: ActorRef<Self::Msg>,
            msg: Self::Msg,
            tx: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            if let NodeServerMessage::ConnectionOpenedExternal { stream, is_server } = msg {
                let _ = tx.send(Opened { label: stream.peer_label(), is_server, stream });
            }
            Ok(())
        }
    }

    async fn sink() -> (ActorRef<NodeServerMessage>, UnboundedReceiver<Opened>) {
        let (tx, rx) = unbounded_channel();
        let (actor, _) = Actor::spawn(None, Sink, tx).await.unwrap();
        (actor, rx)
    }

    async fn wait_refused(listener: &TlsListener, n: u64) {
        timeout(WAIT, async {
            while listener.refused() < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("expected {n} refusals, saw {}", listener.refused()));
    }

    #[test]
    fn labels_round_trip() {
        let addr: SocketAddr = "127.0.0.1:4567".parse().unwrap();
        assert_eq!(label("site-3", addr), "mtls:site-3@127.0.0.1:4567");
        assert_eq!(identity_from_label(&label("site-3", addr)), Some("site-3"));
        assert_eq!(identity_from_label(&label("server", "[::1]:7".parse().unwrap())), Some("server"));
        for other in ["127.0.0.1:4567", "external", "mtls:", "mtls:@1.2.3.4:5", "mtls:site-1", "mtls:site-1@", "x:a@b"]
        {
            assert_eq!(identity_from_label(other), None, "{other}");
        }
    }

    #[test]
    fn load_reports_the_file_and_the_problem() {
        let dir = pki();
        let p = dir.path();
        let m = TlsMaterial::load(p, "site-1").unwrap();
        assert_eq!(m.identity(), "site-1");
        m.acceptor().unwrap();
        m.connector().unwrap();
        TlsMaterial::load(p, "server").unwrap().acceptor().unwrap();

        let problem = |node: &str| match TlsMaterial::load(p, node) {
            Err(TlsError::Material { path, problem }) => {
                (path.file_name().unwrap().to_string_lossy().into_owned(), problem)
            }
            other => panic!("expected a material error, got {other:?}"),
        };
        let (file, why) = problem("site-9");
        assert_eq!((file.as_str(), why.contains("missing")), ("site-9.pem", true), "{why}");

        std::fs::write(p.join("site-0.key"), "not a key").unwrap();
        let (file, why) = problem("site-0");
        assert_eq!((file.as_str(), why.contains("no private key")), ("site-0.key", true), "{why}");

        std::fs::copy(p.join("site-2.key"), p.join("site-1.key")).unwrap();
        let (file, why) = problem("site-1");
        assert_eq!(file, "site-1.key", "{why}");

        std::fs::copy(p.join("site-2.pem"), p.join("impostor.pem")).unwrap();
        std::fs::copy(p.join("site-2.key"), p.join("impostor.key")).unwrap();
        let (file, why) = problem("impostor");
        assert_eq!((file.as_str(), why.contains("issued to `site-2`")), ("impostor.pem", true), "{why}");

        std::fs::write(p.join("ca.pem"), "garbage").unwrap();
        let (file, why) = problem("site-2");
        assert_eq!((file.as_str(), why.contains("no certificate")), ("ca.pem", true), "{why}");

        // A certificate from another CA.
        let other = pki();
        std::fs::copy(other.path().join("ca.pem"), p.join("ca.pem")).unwrap();
        let (file, why) = problem("site-2");
        assert_eq!((file.as_str(), why.contains("not accepted")), ("site-2.pem", true), "{why}");
    }

    #[test]
    fn claimed_names_are_compared_with_certificate_identities() {
        assert_eq!(claimed_node("site-3@host-a"), "site-3");
        assert_eq!(claimed_node("server"), "server");
        assert_eq!(claimed_node(&process_node_name("site-3", 0xab)), "site-3");
        assert_eq!(claimed_node("site-3.00000000000000ab@host-a"), "site-3");
        assert!(identity_matches("site-3.00000000000000ab@host-a", "mtls:site-3@10.0.0.7:4567"));
        assert!(!identity_matches("site-3.zz@host-a", "mtls:site-3@10.0.0.7:4567"), "the suffix must be an instance");
        assert!(!identity_matches("site-4.00ab@host-a", "mtls:site-3@10.0.0.7:4567"));
        assert!(identity_matches("site-3@host-a", "mtls:site-3@10.0.0.7:4567"));
        assert!(!identity_matches("site-4@host-a", "mtls:site-3@10.0.0.7:4567"));
        assert!(!identity_matches("site-3@host-a", "10.0.0.7:4567"), "a session without mTLS has no identity");
        assert!(!identity_matches("site-3-x@h", "mtls:site-3@10.0.0.7:4567"));
    }

    #[tokio::test]
    async fn mutual_tls_hands_the_verified_identity_to_the_node() {
        let dir = pki();
        let server = TlsMaterial::load(dir.path(), "server").unwrap();
        let site = TlsMaterial::load(dir.path(), "site-1").unwrap();
        let (server_node, mut server_rx) = sink().await;
        let (site_node, mut site_rx) = sink().await;
        let listener = listen_tls(server_node, any_port(), server.acceptor().unwrap()).await.unwrap();

        timeout(WAIT, connect_tls(&site_node, listener.local_addr(), site.connector().unwrap(), "server"))
            .await
            .unwrap()
            .unwrap();
        let incoming = timeout(WAIT, server_rx.recv()).await.unwrap().unwrap();
        let outgoing = timeout(WAIT, site_rx.recv()).await.unwrap().unwrap();
        assert!(incoming.is_server && !outgoing.is_server);
        let in_label = incoming.label.unwrap();
        assert!(in_label.starts_with("mtls:site-1@127.0.0.1:"), "{in_label}");
        assert_eq!(identity_from_label(&in_label), Some("site-1"));
        assert_eq!(outgoing.label.unwrap(), format!("mtls:server@{}", listener.local_addr()));
        assert_eq!((listener.accepted(), listener.refused()), (1, 0));

        // The streams are the decrypted byte pipe ractor_cluster will frame its messages on.
        let (mut server_read, mut server_write) = incoming.stream.split();
        let (mut site_read, mut site_write) = outgoing.stream.split();
        timeout(WAIT, async {
            site_write.write_all(b"ping").await.unwrap();
            site_write.flush().await.unwrap();
            let mut buf = [0u8; 4];
            server_read.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
            server_write.write_all(b"pong").await.unwrap();
            server_write.flush().await.unwrap();
            site_read.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"pong");
        })
        .await
        .unwrap();

        // After shutdown nothing listens there any more.
        let addr = listener.local_addr();
        timeout(WAIT, listener.shutdown()).await.unwrap();
        assert!(TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn foreign_ca_plaintext_and_anonymous_clients_are_refused() {
        let dir = pki();
        let foreign = pki();
        let server = TlsMaterial::load(dir.path(), "server").unwrap();
        let (server_node, mut server_rx) = sink().await;
        let listener = listen_tls(server_node, any_port(), server.acceptor().unwrap()).await.unwrap();
        let addr = listener.local_addr();

        // 1. A site certificate from a foreign CA. With TLS 1.3 the client may finish its side of the handshake
        //    before the server refuses, so only the server's verdict is checked.
        let stranger = TlsMaterial::load(foreign.path(), "site-1").unwrap();
        let (client_node, _client_rx) = sink().await;
        let _ = timeout(WAIT, connect_tls(&client_node, addr, stranger.connector().unwrap(), "server")).await.unwrap();
        wait_refused(&listener, 1).await;

        // 2. Plaintext: what ractor_cluster sends unencrypted (a length prefix and a protobuf).
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&[0, 0, 0, 0, 0, 0, 0, 9, 10, 7, b's', b'i', b't', b'e', b'-', b'1', 0]).await.unwrap();
        let mut buf = Vec::new();
        let _ = timeout(WAIT, tcp.read_to_end(&mut buf)).await.unwrap();
        wait_refused(&listener, 2).await;

        // 3. A client that trusts our CA but presents no certificate.
        let anonymous = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(server.roots().unwrap())
            .with_no_client_auth();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("server").unwrap();
        if let Ok(mut tls) = TlsConnector::from(Arc::new(anonymous)).connect(name, tcp).await {
            // TLS 1.3: the refusal arrives as an alert on the first read.
            let mut buf = [0u8; 1];
            let read = timeout(WAIT, tls.read(&mut buf)).await.unwrap();
            assert!(!matches!(read, Ok(1)), "an anonymous client must not get data");
        }
        wait_refused(&listener, 3).await;

        assert_eq!(listener.accepted(), 0);
        assert!(server_rx.try_recv().is_err(), "no refused stream reaches the node");
    }

    #[tokio::test]
    async fn client_refuses_a_server_with_another_identity() {
        let dir = pki();
        // A listener presenting site-2's certificate, where the client expects `server`.
        let impostor = TlsMaterial::load(dir.path(), "site-2").unwrap();
        let site = TlsMaterial::load(dir.path(), "site-1").unwrap();
        let (impostor_node, mut impostor_rx) = sink().await;
        let (site_node, mut site_rx) = sink().await;
        let listener = listen_tls(impostor_node, any_port(), impostor.acceptor().unwrap()).await.unwrap();

        let err = timeout(WAIT, connect_tls(&site_node, listener.local_addr(), site.connector().unwrap(), "server"))
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(&err, TlsError::Certificate { refusal: CertRefusal::TheirCertificate(_), .. }), "{err}");
        assert!(err.to_string().contains("not valid for name"), "{err}");
        let advice = err.certificate_refusal().unwrap().advice(&site);
        assert!(advice.contains("not issued to `server`"), "{advice}");
        assert!(site_rx.try_recv().is_err());
        wait_refused(&listener, 1).await;
        assert!(impostor_rx.try_recv().is_err());

        assert!(matches!(
            connect_tls(&site_node, listener.local_addr(), site.connector().unwrap(), "not a name!").await,
            Err(TlsError::ServerName(_))
        ));
    }

    /// A certificate refused by either side is a typed [`CertRefusal`], not a handshake failure like any other:
    /// a site trusting another CA refuses the server's certificate during the handshake; a server refuses a site
    /// certificate from a CA it does not trust, which the site (TLS 1.3) learns on the session's first read.
    #[tokio::test]
    async fn certificate_refusals_are_typed_on_both_sides() {
        let dir = pki();
        let foreign = pki();
        let server = TlsMaterial::load(dir.path(), "server").unwrap();
        let (server_node, _server_rx) = sink().await;
        let listener = listen_tls(server_node, any_port(), server.acceptor().unwrap()).await.unwrap();
        let addr = listener.local_addr();

        // The site trusts only the foreign CA: it refuses the server's certificate.
        let stranger = TlsMaterial::load(foreign.path(), "site-1").unwrap();
        let (stranger_node, mut stranger_rx) = sink().await;
        let err = timeout(WAIT, connect_tls(&stranger_node, addr, stranger.connector().unwrap(), "server"))
            .await
            .unwrap()
            .expect_err("the server's certificate is refused");
        assert!(matches!(err.certificate_refusal(), Some(CertRefusal::TheirCertificate(_))), "{err}");
        let advice = err.certificate_refusal().unwrap().advice(&stranger);
        assert!(advice.contains(&stranger.ca_path().display().to_string()), "names the CA file: {advice}");
        assert!(stranger_rx.try_recv().is_err(), "no session was opened");
        wait_refused(&listener, 1).await;

        // The site trusts both CAs but its certificate comes from the foreign one: the server refuses it.
        let mixed = tempfile::tempdir().unwrap();
        let mut ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
        ca.extend(std::fs::read(foreign.path().join("ca.pem")).unwrap());
        std::fs::write(mixed.path().join("ca.pem"), ca).unwrap();
        for f in ["site-1.pem", "site-1.key"] {
            std::fs::copy(foreign.path().join(f), mixed.path().join(f)).unwrap();
        }
        let site = TlsMaterial::load(mixed.path(), "site-1").unwrap();
        let (site_node, mut site_rx) = sink().await;
        match timeout(WAIT, connect_tls(&site_node, addr, site.connector().unwrap(), "server")).await.unwrap() {
            // TLS 1.3: the handshake succeeds on the client; the refusal is the fatal alert on the first read.
            Ok(verdict) => {
                let opened = timeout(WAIT, site_rx.recv()).await.unwrap().unwrap();
                let (mut read, _write) = opened.stream.split();
                let mut buf = [0u8; 1];
                let read = timeout(WAIT, read.read(&mut buf)).await.unwrap();
                assert!(read.is_err(), "{read:?}");
                let refusal = verdict.refusal(WAIT).await.expect("the first read reports the refusal");
                assert!(matches!(refusal, CertRefusal::OurCertificate(_)), "{refusal}");
                let advice = refusal.advice(&site);
                assert!(advice.contains(&site.cert_path().display().to_string()), "names the cert file: {advice}");
            }
            Err(e) => assert!(matches!(e.certificate_refusal(), Some(CertRefusal::OurCertificate(_))), "{e}"),
        }
        wait_refused(&listener, 2).await;
        assert_eq!(listener.accepted(), 0);

        // Errors that are not about certificates are not classified as refusals.
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tokio_rustls::rustls::Error::DecryptError);
        assert!(CertRefusal::from_io(&io).is_none());
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            tokio_rustls::rustls::Error::AlertReceived(AlertDescription::HandshakeFailure),
        );
        assert!(CertRefusal::from_io(&io).is_none());
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            tokio_rustls::rustls::Error::AlertReceived(AlertDescription::UnknownCA),
        );
        assert!(matches!(CertRefusal::from_io(&io), Some(CertRefusal::OurCertificate(AlertDescription::UnknownCA))));
        assert!(CertRefusal::from_io(&std::io::Error::from(std::io::ErrorKind::ConnectionReset)).is_none());
    }

    #[tokio::test]
    async fn a_silent_peer_does_not_block_others_and_times_out() {
        let dir = pki();
        let server = TlsMaterial::load(dir.path(), "server").unwrap();
        let site = TlsMaterial::load(dir.path(), "site-0").unwrap();
        let (server_node, mut server_rx) = sink().await;
        let (site_node, _site_rx) = sink().await;
        let handshake_timeout = Duration::from_millis(1500);
        let listener = listen_tls_with_timeout(server_node, any_port(), server.acceptor().unwrap(), handshake_timeout)
            .await
            .unwrap();

        let _silent = TcpStream::connect(listener.local_addr()).await.unwrap();
        let started = tokio::time::Instant::now();
        connect_tls(&site_node, listener.local_addr(), site.connector().unwrap(), "server").await.unwrap();
        let incoming = timeout(WAIT, server_rx.recv()).await.unwrap().unwrap();
        assert_eq!(identity_from_label(incoming.label.as_deref().unwrap()), Some("site-0"));
        assert!(started.elapsed() < handshake_timeout, "the good peer waited for the silent one");
        assert_eq!(listener.refused(), 0);
        wait_refused(&listener, 1).await;
    }

    #[derive(Debug)]
    enum Seen {
        Ready { name: String, addr: String },
        Gone { name: String, addr: String },
    }

    struct Events(UnboundedSender<Seen>);

    fn name_of(ses: &NodeServerSessionInformation) -> String {
        ses.peer_name.as_ref().map(|n| n.name.clone()).unwrap_or_default()
    }

    impl NodeEventSubscription for Events {
        fn node_session_opened(&self, _: NodeServerSessionInformation) {}
        fn node_session_authenticated(&self, _: NodeServerSessionInformation) {}
        fn node_session_ready(&self, ses: NodeServerSessionInformation) {
            let _ = self.0.send(Seen::Ready { name: name_of(&ses), addr: ses.peer_addr.clone() });
        }
        fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
            let _ = self.0.send(Seen::Gone { name: name_of(&ses), addr: ses.peer_addr.clone() });
        }
    }

    async fn node(name: &str, cookie: &str) -> (ActorRef<NodeServerMessage>, UnboundedReceiver<Seen>) {
        let server =
            NodeServer::new(0, cookie.into(), name.into(), "localhost".into(), None, None).with_listen_addr(LOCALHOST);
        let (node, _) = Actor::spawn(None, server, ()).await.unwrap();
        let (tx, rx) = unbounded_channel();
        node.cast(NodeServerMessage::SubscribeToEvents { id: "test".into(), subscription: Box::new(Events(tx)) })
            .unwrap();
        // A call is a mailbox barrier: the subscription is installed once it returns.
        ractor::call_t!(node, NodeServerMessage::GetSessions, 5_000).unwrap();
        (node, rx)
    }

    async fn next_seen(rx: &mut UnboundedReceiver<Seen>) -> Seen {
        timeout(WAIT, rx.recv()).await.expect("no node event in time").expect("subscription closed")
    }

    /// Two real ractor_cluster NodeServers in one process, joined through `listen_tls` / `connect_tls`.
    #[tokio::test]
    async fn node_servers_join_over_mtls_with_identity_labels() {
        let dir = pki();
        let server_tls = TlsMaterial::load(dir.path(), "server").unwrap();
        let site_tls = TlsMaterial::load(dir.path(), "site-1").unwrap();
        let (server, mut server_events) = node("server", "cookie").await;
        let listener = listen_tls(server.clone(), any_port(), server_tls.acceptor().unwrap()).await.unwrap();
        let addr = listener.local_addr();

        // A site with the right cookie joins; both sides see the certificate identity in the session address.
        let (site, mut site_events) = node("site-1", "cookie").await;
        connect_tls(&site, addr, site_tls.connector().unwrap(), "server").await.unwrap();
        match next_seen(&mut server_events).await {
            Seen::Ready { name, addr } => {
                assert_eq!(claimed_node(&name), "site-1");
                assert_eq!(identity_from_label(&addr), Some("site-1"), "{addr}");
                assert!(identity_matches(&name, &addr));
            }
            other => panic!("expected the site to join, saw {other:?}"),
        }
        match next_seen(&mut site_events).await {
            Seen::Ready { name, addr: label } => {
                assert_eq!((claimed_node(&name), label), ("server", format!("mtls:server@{addr}")));
            }
            other => panic!("expected the server to be ready, saw {other:?}"),
        }
        let sessions = ractor::call_t!(server, NodeServerMessage::GetSessions, 5_000).unwrap();
        assert!(sessions.values().any(|s| identity_from_label(&s.peer_addr) == Some("site-1")));
        site.stop(None);
        assert!(
            matches!(next_seen(&mut server_events).await, Seen::Gone { name, .. } if claimed_node(&name) == "site-1")
        );

        // A node claiming to be `site-2` with site-1's certificate: the session shows the mismatch, which the
        // federation layer turns into a refusal.
        let (liar, _liar_events) = node("site-2", "cookie").await;
        connect_tls(&liar, addr, site_tls.connector().unwrap(), "server").await.unwrap();
        match next_seen(&mut server_events).await {
            Seen::Ready { name, addr } => {
                assert_eq!(claimed_node(&name), "site-2");
                assert_eq!(identity_from_label(&addr), Some("site-1"));
                assert!(!identity_matches(&name, &addr));
            }
            other => panic!("expected a ready session, saw {other:?}"),
        }
        liar.stop(None);
        assert!(
            matches!(next_seen(&mut server_events).await, Seen::Gone { name, .. } if claimed_node(&name) == "site-2")
        );

        // The cookie is still a second factor: a valid certificate with the wrong cookie never becomes ready.
        let (wrong, _wrong_events) = node("site-1", "not-the-cookie").await;
        connect_tls(&wrong, addr, site_tls.connector().unwrap(), "server").await.unwrap();
        match next_seen(&mut server_events).await {
            Seen::Gone { addr, .. } => assert_eq!(identity_from_label(&addr), Some("site-1")),
            other => panic!("a wrong cookie must not join, saw {other:?}"),
        }
        assert_eq!(listener.refused(), 0, "these were refused by the cookie, not by TLS");
        wrong.stop(None);
        server.stop(None);
    }
}
