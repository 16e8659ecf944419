//! The bulk data plane: model weights travel here, beside the control connection, never through it.
//!
//! Why a second connection: ractor_cluster sends every message of a session over one TCP stream in order, so a
//! 100 MB weights frame puts every heartbeat behind it (a busy link then looks like a hung peer), and its framing
//! copies each message several times (measured 256–282 MB/s against 3.4 GB/s raw TCP). Here a transfer is a plain
//! stream (mutual TLS when the cluster uses it) that moves the bytes in bounded chunks, with a stall timeout per
//! chunk, while the control connection stays free for small frames.
//!
//! The server *publishes* one blob per round (the global weights, shared by every download: memory O(P) however
//! many sites fetch it) and *grants* each participant a random token for the round. A site downloads the blob and
//! later uploads its update with that token; with mTLS the upload must also come from the certificate of the site
//! it names, so one site cannot post another's update. Uploads are handed to the server one by one, and at most
//! `max_inflight_uploads` of them are held in memory at once: while that many wait to be folded in, the server stops
//! reading further uploads and TCP pushes back on the senders (bounded memory when sites are faster than
//! aggregation, no unbounded queue).
//!
//! Extension roles (`crate::roles`) are *readers*: the server grants them a download-only token under an id outside
//! the site range, bound to their certificate's identity with mTLS, and *retains* the global weights of the last
//! few completed rounds under their own keys, so a role can fetch round r's weights after round r+1 started (the
//! current blob alone would be replaced every round). A reader can never upload.
//!
//! Wire format (little-endian): request `b"HFB1"`, op `u8` (1 = get, 2 = put), site `u32`, token `u64`, key `u64`
//! (get: blob key; put: round); a put adds meta length `u32` + meta bytes + body length `u64` + body. The answer is
//! status `u8` (0 = ok) + message length `u32` + message; a successful get adds body length `u64` + body.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::{TlsAcceptor, TlsConnector};

const MAGIC: &[u8; 4] = b"HFB1";
const OP_GET: u8 = 1;
const OP_PUT: u8 = 2;
const STATUS_OK: u8 = 0;
const STATUS_REFUSED: u8 = 1;
/// Refused because the site's admission was taken over by another process: the client must stop, not retry.
const STATUS_FENCED: u8 = 2;
/// Largest metadata block of an upload (losses, counters: a few hundred bytes in practice).
const MAX_META: u32 = 64 * 1024;
/// Largest refusal message accepted from a server.
const MAX_MESSAGE: u32 = 64 * 1024;

#[derive(Debug, Error)]
pub enum BulkError {
    #[error("cannot listen for bulk transfers on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot connect to the bulk endpoint {addr}: {message}")]
    Connect { addr: SocketAddr, message: String },
    #[error("bulk transfer with {peer}: {message}")]
    Io { peer: String, message: String },
    #[error("bulk transfer with {peer} stalled: no progress for {after:?}")]
    Stalled { peer: String, after: Duration },
    #[error("{peer} refused the bulk transfer: {reason}")]
    Refused { peer: String, reason: String },
    #[error("{peer} refused the bulk transfer: {reason}")]
    Fenced { peer: String, reason: String },
    #[error("bulk transfer with {peer}: {what} of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { peer: String, what: &'static str, len: u64, limit: u64 },
}

/// Limits of the bulk plane.
#[derive(Debug, Clone)]
pub struct BulkLimits {
    /// Largest upload body accepted (bytes).
    pub max_body: u64,
    /// Uploads held in memory at once, waiting to be folded in; further uploads wait on TCP.
    pub max_inflight_uploads: usize,
    /// A transfer that moves no byte for this long is cut off.
    pub stall: Duration,
    /// Size of one read or write.
    pub chunk: usize,
}

impl Default for BulkLimits {
    fn default() -> Self {
        Self { max_body: 4 << 30, max_inflight_uploads: 2, stall: Duration::from_secs(30), chunk: 1 << 20 }
    }
}

/// An update that arrived on the bulk plane. Holding it holds one of the `max_inflight_uploads` slots; drop it
/// once it is folded in.
#[derive(Debug)]
pub struct Upload {
    pub site_id: u32,
    /// The transfer token the upload was admitted with (the server checks it is still the site's current one: an
    /// upload that started before its site was taken over is refused when it arrives).
    pub token: u64,
    pub round: u64,
    pub meta: Vec<u8>,
    pub body: Vec<u8>,
    _slot: OwnedSemaphorePermit,
}

/// What the bulk plane tells the server.
#[derive(Debug)]
pub enum Inbound {
    /// An update arrived.
    Upload(Upload),
    /// A transfer presented the token of a site admission that was taken over by another process ([`BulkServer::fence`]):
    /// refused, and the server hears of it (a zombie is still trying).
    Fenced { site_id: u32, token: u64, op: BulkOp },
}

/// A bulk transfer's direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkOp {
    Download,
    Upload,
}

/// Where uploads (and fenced transfers) go: the server actor's mailbox. An `Err` refuses the upload with that
/// reason.
pub type UploadSink = Box<dyn Fn(Inbound) -> Result<(), String> + Send + Sync>;

/// Superseded tokens remembered per site (older ones are simply unknown, and refused as such).
const FENCED_KEPT: usize = 8;

/// TLS for the bulk plane: the same material as the cluster connection.
#[derive(Clone)]
pub enum BulkTls {
    Plain,
    /// Server side: require a client certificate; the site it names must match the request.
    Server(TlsAcceptor),
    /// Client side: present our certificate, expect the server's identity.
    Client(TlsConnector, String),
}

#[derive(Default)]
struct Published {
    key: u64,
    blob: Option<Arc<Vec<u8>>>,
    /// Site → token of its current membership.
    tokens: HashMap<u32, u64>,
    /// Site → tokens of admissions taken over by another process, newest last (at most [`FENCED_KEPT`]).
    fenced: HashMap<u32, VecDeque<u64>>,
    /// Blobs kept downloadable beside the current one (completed rounds, for readers), oldest first.
    retained: VecDeque<(u64, Arc<Vec<u8>>)>,
    /// Download-only peers (extension roles): id → (token, certificate identity it must present with mTLS).
    readers: HashMap<u32, (u64, Option<String>)>,
}

/// Who may do what on one request.
enum Access {
    Site,
    Reader,
    Refused(String),
    /// The token of a site admission that another process took over.
    Fenced,
}

struct Shared {
    published: Mutex<Published>,
    slots: Arc<Semaphore>,
    limits: BulkLimits,
    sink: UploadSink,
    sent: AtomicU64,
    received: AtomicU64,
    refused: AtomicU64,
}

impl Shared {
    fn access(&self, op: u8, id: u32, token: u64, identity: Option<&str>) -> Access {
        let Ok(p) = self.published.lock() else { return Access::Refused("server shutting down".into()) };
        if let Some((reader_token, reader_identity)) = p.readers.get(&id) {
            if let (Some(shown), Some(expected)) = (identity, reader_identity) {
                if shown != expected {
                    return Access::Refused(format!("certificate of {shown} cannot transfer for {expected}"));
                }
            }
            return match (*reader_token == token, op) {
                (false, _) => Access::Refused("unknown or expired transfer token".into()),
                (true, OP_GET) => Access::Reader,
                (true, _) => Access::Refused("a download-only token cannot upload".into()),
            };
        }
        if let Some(shown) = identity {
            let expected = crate::cluster::certs::site_name(id);
            if shown != expected {
                return Access::Refused(format!("certificate of {shown} cannot transfer for {expected}"));
            }
        }
        if p.tokens.get(&id) == Some(&token) {
            Access::Site
        } else if p.fenced.get(&id).is_some_and(|f| f.contains(&token)) {
            Access::Fenced
        } else {
            Access::Refused("unknown or expired transfer token".into())
        }
    }

    /// The blob under `key`: the current one, or one retained for readers.
    fn blob(&self, key: u64) -> Option<Arc<Vec<u8>>> {
        let p = self.published.lock().ok()?;
        if p.key == key {
            if let Some(b) = &p.blob {
                return Some(b.clone());
            }
        }
        p.retained.iter().find(|(k, _)| *k == key).map(|(_, b)| b.clone())
    }
}

/// The server end of the bulk plane.
pub struct BulkServer {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

impl BulkServer {
    /// Listens on `addr` (port 0 picks one) and hands every accepted upload to `sink`.
    pub async fn start(
        addr: SocketAddr,
        tls: BulkTls,
        limits: BulkLimits,
        sink: UploadSink,
    ) -> Result<BulkServer, BulkError> {
        let listener = TcpListener::bind(addr).await.map_err(|source| BulkError::Bind { addr, source })?;
        let local_addr = listener.local_addr().map_err(|source| BulkError::Bind { addr, source })?;
        let shared = Arc::new(Shared {
            published: Mutex::new(Published::default()),
            slots: Arc::new(Semaphore::new(limits.max_inflight_uploads.max(1))),
            limits,
            sink,
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, tls, shared.clone()));
        tracing::info!(%local_addr, "bulk data plane listening");
        Ok(BulkServer { local_addr, shared, task: Some(task) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Makes `blob` the one downloadable object, under `key` (the previous one is dropped once its downloads end).
    pub fn publish(&self, key: u64, blob: Arc<Vec<u8>>) {
        if let Ok(mut p) = self.shared.published.lock() {
            p.key = key;
            p.blob = Some(blob);
        }
    }

    /// Lets `site_id` transfer with `token` (given to a site when it is admitted, over the control connection).
    pub fn grant(&self, site_id: u32, token: u64) {
        if let Ok(mut p) = self.shared.published.lock() {
            p.tokens.insert(site_id, token);
        }
    }

    /// Withdraws a site's token (it left the membership).
    pub fn revoke(&self, site_id: u32) {
        if let Ok(mut p) = self.shared.published.lock() {
            p.tokens.remove(&site_id);
        }
    }

    /// Withdraws `token` of site `site_id` because another process took the site over: a later transfer with it
    /// is refused as fenced (and reported to the sink), not as an unknown token.
    pub fn fence(&self, site_id: u32, token: u64) {
        if let Ok(mut p) = self.shared.published.lock() {
            if p.tokens.get(&site_id) == Some(&token) {
                p.tokens.remove(&site_id);
            }
            let f = p.fenced.entry(site_id).or_default();
            if !f.contains(&token) {
                f.push_back(token);
            }
            while f.len() > FENCED_KEPT {
                f.pop_front();
            }
        }
    }

    /// Keeps `blob` downloadable under `key` beside the current blob, dropping the oldest retained ones beyond
    /// `keep` (re-retaining a key replaces it). The bytes are shared, not copied.
    pub fn retain(&self, key: u64, blob: Arc<Vec<u8>>, keep: usize) {
        if let Ok(mut p) = self.shared.published.lock() {
            p.retained.retain(|(k, _)| *k != key);
            p.retained.push_back((key, blob));
            while p.retained.len() > keep {
                p.retained.pop_front();
            }
        }
    }

    /// Lets the download-only peer `id` fetch blobs with `token`; with mTLS its certificate must name `identity`.
    pub fn grant_reader(&self, id: u32, token: u64, identity: Option<String>) {
        if let Ok(mut p) = self.shared.published.lock() {
            p.readers.insert(id, (token, identity));
        }
    }

    /// Withdraws a reader's token.
    pub fn revoke_reader(&self, id: u32) {
        if let Ok(mut p) = self.shared.published.lock() {
            p.readers.remove(&id);
        }
    }

    /// Bytes served and received so far, and transfers refused.
    pub fn stats(&self) -> (u64, u64, u64) {
        (
            self.shared.sent.load(Ordering::Relaxed),
            self.shared.received.load(Ordering::Relaxed),
            self.shared.refused.load(Ordering::Relaxed),
        )
    }

    /// Stops accepting and aborts transfers in flight.
    pub async fn shutdown(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Drop for BulkServer {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, tls: BulkTls, shared: Arc<Shared>) {
    // Transfers live in this set, so aborting the accept task aborts them too.
    let mut transfers = JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            incoming = listener.accept() => match incoming {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a bulk connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = transfers.join_next(), if !transfers.is_empty() => continue,
        };
        let (tls, shared) = (tls.clone(), shared.clone());
        transfers.spawn(async move {
            if let Err(e) = serve(tcp, peer, tls, &shared).await {
                shared.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, error = %e, "bulk transfer failed");
            }
        });
    }
}

async fn serve(tcp: TcpStream, peer: SocketAddr, tls: BulkTls, shared: &Shared) -> Result<(), BulkError> {
    let _ = tcp.set_nodelay(true);
    let stall = shared.limits.stall;
    let who = peer.to_string();
    let (mut stream, identity): (Box<dyn Stream>, Option<String>) = match tls {
        BulkTls::Server(acceptor) => {
            let s = timed(stall, &who, acceptor.accept(tcp)).await?;
            let identity =
                s.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| super::tls::identity_of(c).ok());
            (Box::new(s), identity)
        }
        _ => (Box::new(tcp), None),
    };
    let mut magic = [0u8; 4];
    timed(stall, &who, stream.read_exact(&mut magic)).await?;
    if &magic != MAGIC {
        return Err(BulkError::Io { peer: who, message: "not a histofed bulk request".into() });
    }
    let op = timed(stall, &who, stream.read_u8()).await?;
    let site_id = timed(stall, &who, stream.read_u32_le()).await?;
    let token = timed(stall, &who, stream.read_u64_le()).await?;
    let key = timed(stall, &who, stream.read_u64_le()).await?;
    let refuse = |reason: String| BulkError::Refused { peer: format!("site {site_id} at {peer}"), reason };
    match shared.access(op, site_id, token, identity.as_deref()) {
        Access::Site | Access::Reader => {}
        Access::Refused(why) => {
            reply(&mut stream, STATUS_REFUSED, &why, stall, &who).await?;
            return Err(refuse(why));
        }
        Access::Fenced => {
            let why = format!("fenced: another process now holds site {site_id}; this one must stop");
            let op = if op == OP_PUT { BulkOp::Upload } else { BulkOp::Download };
            let _ = (shared.sink)(Inbound::Fenced { site_id, token, op });
            reply(&mut stream, STATUS_FENCED, &why, stall, &who).await?;
            return Err(refuse(why));
        }
    }
    match op {
        OP_GET => {
            let Some(blob) = shared.blob(key) else {
                let why = format!("blob {key} is not published (the round moved on?)");
                reply(&mut stream, STATUS_REFUSED, &why, stall, &who).await?;
                return Err(refuse(why));
            };
            reply(&mut stream, STATUS_OK, "", stall, &who).await?;
            timed(stall, &who, stream.write_u64_le(blob.len() as u64)).await?;
            for chunk in blob.chunks(shared.limits.chunk.max(1)) {
                timed(stall, &who, stream.write_all(chunk)).await?;
                shared.sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            timed(stall, &who, stream.flush()).await?;
            let _ = timed(stall, &who, stream.shutdown()).await;
            Ok(())
        }
        OP_PUT => {
            let meta_len = timed(stall, &who, stream.read_u32_le()).await?;
            if meta_len > MAX_META {
                return Err(BulkError::TooLarge {
                    peer: who,
                    what: "metadata",
                    len: u64::from(meta_len),
                    limit: u64::from(MAX_META),
                });
            }
            let mut meta = vec![0u8; meta_len as usize];
            timed(stall, &who, stream.read_exact(&mut meta)).await?;
            let len = timed(stall, &who, stream.read_u64_le()).await?;
            if len > shared.limits.max_body {
                let why = format!("update of {len} bytes exceeds the limit of {} bytes", shared.limits.max_body);
                reply(&mut stream, STATUS_REFUSED, &why, stall, &who).await?;
                return Err(refuse(why));
            }
            // Backpressure: wait for a slot before reading the body; the sender blocks on TCP meanwhile.
            let slot = shared
                .slots
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| BulkError::Io { peer: who.clone(), message: "server shutting down".into() })?;
            let body = read_body(&mut stream, len, shared, &who).await?;
            let upload = Upload { site_id, token, round: key, meta, body, _slot: slot };
            match (shared.sink)(Inbound::Upload(upload)) {
                Ok(()) => reply(&mut stream, STATUS_OK, "", stall, &who).await,
                Err(why) => {
                    reply(&mut stream, STATUS_REFUSED, &why, stall, &who).await?;
                    Err(refuse(why))
                }
            }
        }
        other => Err(BulkError::Io { peer: who, message: format!("unknown operation {other}") }),
    }
}

async fn read_body(stream: &mut Box<dyn Stream>, len: u64, shared: &Shared, who: &str) -> Result<Vec<u8>, BulkError> {
    let len = usize::try_from(len).map_err(|_| BulkError::TooLarge {
        peer: who.to_string(),
        what: "body",
        len,
        limit: usize::MAX as u64,
    })?;
    read_exactly(stream, len, shared.limits.chunk, shared.limits.stall, who, |n| {
        shared.received.fetch_add(n as u64, Ordering::Relaxed);
    })
    .await
}

/// Reads exactly `len` bytes, at most `chunk` per read, each read bounded by `stall` (so a stalled peer is noticed
/// and a slow one that keeps sending is not cut off). The bytes land in the buffer's spare capacity: a model-sized
/// buffer is not zeroed first only to be overwritten. `on_read` sees the size of every read.
async fn read_exactly(
    stream: &mut Box<dyn Stream>,
    len: usize,
    chunk: usize,
    stall: Duration,
    who: &str,
    mut on_read: impl FnMut(usize),
) -> Result<Vec<u8>, BulkError> {
    let mut body = Vec::with_capacity(len);
    while body.len() < len {
        let want = (len - body.len()).min(chunk.max(1)) as u64;
        let n = timed(stall, who, (&mut *stream).take(want).read_buf(&mut body)).await?;
        if n == 0 {
            let message = format!("connection closed after {} of {len} bytes", body.len());
            return Err(BulkError::Io { peer: who.to_string(), message });
        }
        on_read(n);
    }
    Ok(body)
}

async fn reply(
    stream: &mut Box<dyn Stream>,
    status: u8,
    message: &str,
    stall: Duration,
    who: &str,
) -> Result<(), BulkError> {
    let mut head = Vec::with_capacity(5 + message.len());
    head.push(status);
    head.extend_from_slice(&(message.len() as u32).to_le_bytes());
    head.extend_from_slice(message.as_bytes());
    timed(stall, who, stream.write_all(&head)).await?;
    timed(stall, who, stream.flush()).await
}

async fn timed<T>(
    stall: Duration,
    who: &str,
    fut: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, BulkError> {
    match tokio::time::timeout(stall, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(BulkError::Io { peer: who.to_string(), message: e.to_string() }),
        Err(_) => Err(BulkError::Stalled { peer: who.to_string(), after: stall }),
    }
}

async fn dial(addr: SocketAddr, tls: &BulkTls, stall: Duration) -> Result<Box<dyn Stream>, BulkError> {
    let connect_err = |message: String| BulkError::Connect { addr, message };
    let tcp = tokio::time::timeout(stall, TcpStream::connect(addr))
        .await
        .map_err(|_| connect_err(format!("no answer within {stall:?}")))?
        .map_err(|e| connect_err(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    match tls {
        BulkTls::Client(connector, server_name) => {
            let name = ServerName::try_from(server_name.clone())
                .map_err(|_| connect_err(format!("invalid server name {server_name:?}")))?;
            let s = tokio::time::timeout(stall, connector.connect(name, tcp))
                .await
                .map_err(|_| connect_err("TLS handshake timed out".into()))?
                .map_err(|e| connect_err(format!("TLS handshake: {e}")))?;
            Ok(Box::new(s))
        }
        _ => Ok(Box::new(tcp)),
    }
}

async fn request(
    stream: &mut Box<dyn Stream>,
    op: u8,
    site_id: u32,
    token: u64,
    key: u64,
    stall: Duration,
    who: &str,
) -> Result<(), BulkError> {
    let mut head = Vec::with_capacity(25);
    head.extend_from_slice(MAGIC);
    head.push(op);
    head.extend_from_slice(&site_id.to_le_bytes());
    head.extend_from_slice(&token.to_le_bytes());
    head.extend_from_slice(&key.to_le_bytes());
    timed(stall, who, stream.write_all(&head)).await
}

async fn read_reply(stream: &mut Box<dyn Stream>, stall: Duration, who: &str) -> Result<(), BulkError> {
    let status = timed(stall, who, stream.read_u8()).await?;
    let len = timed(stall, who, stream.read_u32_le()).await?;
    if len > MAX_MESSAGE {
        return Err(BulkError::TooLarge {
            peer: who.to_string(),
            what: "reply",
            len: u64::from(len),
            limit: u64::from(MAX_MESSAGE),
        });
    }
    let mut msg = vec![0u8; len as usize];
    timed(stall, who, stream.read_exact(&mut msg)).await?;
    if status == STATUS_OK {
        Ok(())
    } else if status == STATUS_FENCED {
        Err(BulkError::Fenced { peer: who.to_string(), reason: String::from_utf8_lossy(&msg).into_owned() })
    } else {
        Err(BulkError::Refused { peer: who.to_string(), reason: String::from_utf8_lossy(&msg).into_owned() })
    }
}

/// Options of a client transfer.
#[derive(Clone)]
pub struct ClientOpts {
    pub tls: BulkTls,
    pub stall: Duration,
    pub chunk: usize,
    /// Largest download accepted.
    pub max_body: u64,
}

/// Fetches the blob `key` from the bulk endpoint at `addr`.
pub async fn download(
    addr: SocketAddr,
    opts: &ClientOpts,
    site_id: u32,
    token: u64,
    key: u64,
) -> Result<Vec<u8>, BulkError> {
    let who = addr.to_string();
    let mut stream = dial(addr, &opts.tls, opts.stall).await?;
    request(&mut stream, OP_GET, site_id, token, key, opts.stall, &who).await?;
    timed(opts.stall, &who, stream.flush()).await?;
    read_reply(&mut stream, opts.stall, &who).await?;
    let len = timed(opts.stall, &who, stream.read_u64_le()).await?;
    if len > opts.max_body {
        return Err(BulkError::TooLarge { peer: who, what: "download", len, limit: opts.max_body });
    }
    read_exactly(&mut stream, len as usize, opts.chunk, opts.stall, &who, |_| {}).await
}

/// Sends an update (`meta` + `body`) for `round`; returns once the server has taken it.
pub async fn upload(
    addr: SocketAddr,
    opts: &ClientOpts,
    site_id: u32,
    token: u64,
    round: u64,
    meta: &[u8],
    body: &[u8],
) -> Result<(), BulkError> {
    let who = addr.to_string();
    if meta.len() > MAX_META as usize {
        return Err(BulkError::TooLarge {
            peer: who,
            what: "metadata",
            len: meta.len() as u64,
            limit: u64::from(MAX_META),
        });
    }
    let mut stream = dial(addr, &opts.tls, opts.stall).await?;
    request(&mut stream, OP_PUT, site_id, token, round, opts.stall, &who).await?;
    let mut head = Vec::with_capacity(12 + meta.len());
    head.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    head.extend_from_slice(meta);
    head.extend_from_slice(&(body.len() as u64).to_le_bytes());
    timed(opts.stall, &who, stream.write_all(&head)).await?;
    for chunk in body.chunks(opts.chunk.max(1)) {
        // A refusal (bad token, too large) may arrive before the body is sent: the write then fails; read it.
        if let Err(e) = timed(opts.stall, &who, stream.write_all(chunk)).await {
            return match read_reply(&mut stream, opts.stall, &who).await {
                Err(refused @ (BulkError::Refused { .. } | BulkError::Fenced { .. })) => Err(refused),
                _ => Err(e),
            };
        }
    }
    timed(opts.stall, &who, stream.flush()).await?;
    read_reply(&mut stream, opts.stall, &who).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::mpsc;

    fn loopback() -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)
    }

    fn plain(stall_ms: u64) -> ClientOpts {
        ClientOpts { tls: BulkTls::Plain, stall: Duration::from_millis(stall_ms), chunk: 1 << 16, max_body: 1 << 30 }
    }

    async fn server(limits: BulkLimits) -> (BulkServer, mpsc::Receiver<Upload>) {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let sink: UploadSink = Box::new(move |i| match i {
            Inbound::Upload(u) => tx.lock().map_err(|_| "poisoned".to_string())?.send(u).map_err(|e| e.to_string()),
            Inbound::Fenced { site_id, token, op } => Err(format!("fenced {site_id} {token} {op:?}")),
        });
        (BulkServer::start(loopback(), BulkTls::Plain, limits, sink).await.unwrap(), rx)
    }

    #[tokio::test]
    async fn download_and_upload_round_trip_with_tokens() {
        let (srv, rx) = server(BulkLimits { chunk: 4096, ..BulkLimits::default() }).await;
        let blob: Vec<u8> = (0..3_000_001u32).map(|i| (i * 7 % 251) as u8).collect();
        srv.publish(5, Arc::new(blob.clone()));
        srv.grant(1, 11);
        srv.grant(2, 22);
        let got = download(srv.local_addr(), &plain(5000), 1, 11, 5).await.unwrap();
        assert_eq!(got, blob);
        upload(srv.local_addr(), &plain(5000), 2, 22, 5, b"meta", &blob[..1000]).await.unwrap();
        let up = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!((up.site_id, up.round, up.meta.as_slice(), up.body.len()), (2, 5, &b"meta"[..], 1000));
        let (sent, received, refused) = srv.stats();
        assert_eq!((sent, received, refused), (blob.len() as u64, 1000, 0));
    }

    #[tokio::test]
    async fn a_fenced_token_is_refused_as_fenced_and_reported() {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let sink: UploadSink = Box::new(move |i| match i {
            Inbound::Upload(_) => Err("no upload expected".into()),
            Inbound::Fenced { site_id, token, op } => {
                tx.lock().map_err(|_| "poisoned".to_string())?.send((site_id, token, op)).map_err(|e| e.to_string())
            }
        });
        let srv = BulkServer::start(loopback(), BulkTls::Plain, BulkLimits::default(), sink).await.unwrap();
        srv.publish(7, Arc::new(vec![1; 10]));
        srv.grant(2, 21);
        // A replacement is admitted: the old token is fenced, the new one works.
        srv.fence(2, 21);
        srv.grant(2, 22);
        let e = upload(srv.local_addr(), &plain(5000), 2, 21, 7, b"m", &[0; 10]).await.unwrap_err();
        assert!(matches!(e, BulkError::Fenced { .. }), "{e:?}");
        assert!(e.to_string().contains("fenced: another process now holds site 2"), "{e}");
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), (2, 21, BulkOp::Upload));
        let e = download(srv.local_addr(), &plain(5000), 2, 21, 7).await.unwrap_err();
        assert!(e.to_string().contains("fenced"), "{e}");
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), (2, 21, BulkOp::Download));
        assert_eq!(download(srv.local_addr(), &plain(5000), 2, 22, 7).await.unwrap(), vec![1; 10]);
        // A token never granted is unknown, not fenced.
        let e = download(srv.local_addr(), &plain(5000), 2, 99, 7).await.unwrap_err();
        assert!(e.to_string().contains("unknown or expired"), "{e}");
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn wrong_token_wrong_key_and_oversize_are_refused_by_name() {
        let (srv, _rx) = server(BulkLimits { max_body: 100, ..BulkLimits::default() }).await;
        srv.publish(7, Arc::new(vec![1; 10]));
        srv.grant(1, 11);
        srv.grant(3, 33);
        srv.revoke(3);
        let e = download(srv.local_addr(), &plain(5000), 1, 12, 7).await.unwrap_err();
        assert!(e.to_string().contains("token"), "{e}");
        let e = download(srv.local_addr(), &plain(5000), 3, 33, 7).await.unwrap_err();
        assert!(e.to_string().contains("token"), "{e}");
        let e = download(srv.local_addr(), &plain(5000), 1, 11, 6).await.unwrap_err();
        assert!(e.to_string().contains("not published"), "{e}");
        let e = upload(srv.local_addr(), &plain(5000), 1, 11, 7, b"", &[0; 101]).await.unwrap_err();
        assert!(e.to_string().contains("exceeds the limit"), "{e}");
        assert_eq!(srv.stats().2, 4);
    }

    #[tokio::test]
    async fn readers_download_retained_blobs_but_never_upload() {
        let (srv, rx) = server(BulkLimits::default()).await;
        srv.grant(1, 11);
        srv.grant_reader(0x8000_0000, 99, None);
        for round in 1..=4u64 {
            srv.retain(1 << 48 | round, Arc::new(vec![round as u8; 10]), 2);
        }
        srv.publish(5, Arc::new(vec![5; 3]));
        let addr = srv.local_addr();
        // The two newest retained blobs and the current one; older ones are gone.
        assert_eq!(download(addr, &plain(5000), 0x8000_0000, 99, 1 << 48 | 4).await.unwrap(), vec![4; 10]);
        assert_eq!(download(addr, &plain(5000), 0x8000_0000, 99, 1 << 48 | 3).await.unwrap(), vec![3; 10]);
        assert_eq!(download(addr, &plain(5000), 0x8000_0000, 99, 5).await.unwrap(), vec![5; 3]);
        let e = download(addr, &plain(5000), 0x8000_0000, 99, 1 << 48 | 2).await.unwrap_err();
        assert!(e.to_string().contains("not published"), "{e}");
        // A site can fetch retained blobs too (same bytes), a reader cannot upload, a wrong token is refused.
        assert_eq!(download(addr, &plain(5000), 1, 11, 1 << 48 | 4).await.unwrap(), vec![4; 10]);
        let e = upload(addr, &plain(5000), 0x8000_0000, 99, 5, b"", &[0; 10]).await.unwrap_err();
        assert!(e.to_string().contains("download-only"), "{e}");
        let e = download(addr, &plain(5000), 0x8000_0000, 98, 5).await.unwrap_err();
        assert!(e.to_string().contains("token"), "{e}");
        srv.revoke_reader(0x8000_0000);
        let e = download(addr, &plain(5000), 0x8000_0000, 99, 5).await.unwrap_err();
        assert!(e.to_string().contains("token"), "{e}");
        assert!(rx.try_recv().is_err(), "nothing was uploaded");
    }

    #[tokio::test]
    async fn uploads_beyond_the_inflight_limit_wait_for_a_slot() {
        let (srv, rx) = server(BulkLimits { max_inflight_uploads: 1, ..BulkLimits::default() }).await;
        srv.publish(1, Arc::new(vec![]));
        srv.grant(1, 1);
        srv.grant(2, 2);
        upload(srv.local_addr(), &plain(5000), 1, 1, 1, b"", &[1; 1000]).await.unwrap();
        // The first upload is still held (not dropped): the second must wait until it is.
        let addr = srv.local_addr();
        let second = tokio::spawn(async move { upload(addr, &plain(5000), 2, 2, 1, b"", &[2; 1000]).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!second.is_finished(), "the second upload must wait for a free slot");
        let first = rx.recv_timeout(Duration::from_secs(1)).unwrap();
        drop(first);
        second.await.unwrap().unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(1)).unwrap().site_id, 2);
    }

    #[tokio::test]
    async fn a_silent_peer_is_cut_off_after_the_stall_timeout() {
        let (srv, _rx) = server(BulkLimits { stall: Duration::from_millis(200), ..BulkLimits::default() }).await;
        let mut tcp = TcpStream::connect(srv.local_addr()).await.unwrap();
        tcp.write_all(MAGIC).await.unwrap();
        // ... and nothing more: the server must drop the connection by itself.
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut buf)).await.unwrap().unwrap_or(0);
        assert_eq!(n, 0);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(srv.stats().2, 1);
    }
}
