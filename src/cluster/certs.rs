//! A development certificate authority for the cluster's mutual TLS (`histofed certs init|issue`).
//!
//! Why this exists: mTLS is on by default in the demo, and nobody should need openssl recipes to try it. The CA and
//! node certificates are made with rcgen (pure Rust signing on the aws-lc-rs backend that rustls already links), so
//! this adds no second crypto library.
//!
//! Why the certificates look the way they do:
//! - A node's identity is the **first DNS SAN** of its certificate (`server`, `site-3`); the TLS layer
//!   (`cluster::tls`) binds the cluster session to it, so a site cannot claim another site's id. Names are therefore
//!   restricted to `[a-z0-9-]+`, and a node's extra hosts may not be another node's identity (`server`, `site-N`):
//!   otherwise a site certificate could pass as the server's.
//! - Every node certificate carries both the client- and server-auth EKUs, so any node can dial or accept.
//! - Issuing does not parse `ca.pem` (that would pull in an X.509 parser); it rebuilds the issuer from the same fixed
//!   parameters [`init_ca`] used, then checks the new certificate against `ca.pem` with webpki. A CA made by another
//!   tool is reported as such instead of producing certificates nobody accepts.
//!
//! Private keys are written with mode 0600. This is a development CA: the CA key sits next to the certificates.
//! Production deployments should issue certificates from their own PKI with the same SAN convention.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use thiserror::Error;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, UnixTime};

/// File name of the CA certificate inside a certificate directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key inside a certificate directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// The identity (and certificate name) of the federation server.
pub const SERVER_NAME: &str = "server";

const CA_COMMON_NAME: &str = "histofed development CA";
const ORGANIZATION: &str = "histofed";
/// Node certificates live a year: long enough for a demo or a study, short enough to be renewed deliberately.
const NODE_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// The CA outlives the node certificates it signs.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Back-dating absorbs clock skew between the machine that issues and the nodes that verify.
const BACKDATE: Duration = Duration::from_secs(3600);

#[derive(Debug, Error)]
pub enum CertError {
    #[error("invalid node name {0:?}: use lowercase letters, digits and '-' (e.g. `server`, `site-3`)")]
    InvalidName(String),
    #[error("invalid extra host {host:?} for `{name}`: {problem}")]
    InvalidHost { name: String, host: String, problem: String },
    #[error("{} already exists; pass --force to replace the CA (every certificate it signed stops working)", .0.display())]
    Exists(PathBuf),
    #[error("no CA in {}: run `histofed certs init` first ({} is missing)", .dir.display(), .missing.display())]
    MissingCa { dir: PathBuf, missing: PathBuf },
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {problem}", .path.display())]
    Invalid { path: PathBuf, problem: String },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io { path: path.to_path_buf(), source }
}

/// `true` for names usable as a node identity: non-empty `[a-z0-9-]+`, not starting or ending with '-', at most 63
/// characters (one DNS label, so the name is a valid DNS SAN).
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The conventional name of site `index`.
pub fn site_name(index: u32) -> String {
    format!("site-{index}")
}

/// `server` or `site-<digits>`: names that identify a node of the federation.
fn is_node_identity(host: &str) -> bool {
    host == SERVER_NAME
        || host.strip_prefix("site-").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn now() -> Duration {
    // A clock before 1970 is a broken machine; treating it as the epoch still yields valid (if odd) certificates.
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let now = now();
    params.not_before = epoch + now.saturating_sub(BACKDATE);
    params.not_after = epoch + now + lifetime;
}

/// The CA's parameters. [`issue`] rebuilds the issuer from exactly these, so they must stay deterministic apart
/// from the validity period (which is not part of the issuer identity).
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name.push(DnType::OrganizationName, ORGANIZATION);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

/// Writes `contents` to `path`, creating it with mode 0600 when `private` (and tightening an existing file).
fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), CertError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_err(path))?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600)).map_err(io_err(path))?;
    }
    file.write_all(contents.as_bytes()).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))
}

/// Creates a development CA in `dir` (`ca.pem`, and `ca.key` with mode 0600). Refuses to replace an existing CA
/// unless `force`: replacing it invalidates every certificate it signed. Returns the path of `ca.pem`.
pub fn init_ca(dir: &Path, force: bool) -> Result<PathBuf, CertError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    if !force {
        for path in [&cert_path, &key_path] {
            if path.exists() {
                return Err(CertError::Exists(path.clone()));
            }
        }
    }
    let key = KeyPair::generate()?;
    let mut params = ca_params();
    validity(&mut params, CA_VALIDITY);
    let cert = params.self_signed(&key)?;
    // Key first: a ca.pem without its key is useless, a key without ca.pem is rewritten by the next init.
    write_file(&key_path, &key.serialize_pem(), true)?;
    write_file(&cert_path, &cert.pem(), false)?;
    Ok(cert_path)
}

fn read_to_string(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(io_err(path))
}

/// Issues a certificate for node `name` signed by the CA in `dir`: DNS SAN `name` first (the identity), then
/// `extra_hosts` (IP SANs for hosts that parse as IP addresses). Writes `<name>.pem` and `<name>.key` (0600),
/// replacing earlier ones, and returns their paths.
pub fn issue(dir: &Path, name: &str, extra_hosts: &[String]) -> Result<(PathBuf, PathBuf), CertError> {
    if !valid_node_name(name) || name == "ca" {
        return Err(CertError::InvalidName(name.to_string()));
    }
    let mut sans = vec![name.to_string()];
    for host in extra_hosts {
        let host = host.trim();
        let invalid = |problem: &str| CertError::InvalidHost {
            name: name.to_string(),
            host: host.to_string(),
            problem: problem.to_string(),
        };
        if host.is_empty() {
            return Err(invalid("empty"));
        }
        if host != name && is_node_identity(host) {
            return Err(invalid("another node's identity; a certificate may carry only its own node name"));
        }
        if host.parse::<IpAddr>().is_err() && (host.contains('*') || host.starts_with('.') || host.ends_with('.')) {
            return Err(invalid("not a plain DNS name (no wildcards)"));
        }
        if !sans.iter().any(|s| s == host) {
            sans.push(host.to_string());
        }
    }

    let ca_cert_path = dir.join(CA_CERT_FILE);
    let ca_key_path = dir.join(CA_KEY_FILE);
    for path in [&ca_cert_path, &ca_key_path] {
        if !path.exists() {
            return Err(CertError::MissingCa { dir: dir.to_path_buf(), missing: path.clone() });
        }
    }
    let ca_key = KeyPair::from_pem(&read_to_string(&ca_key_path)?)
        .map_err(|e| CertError::Invalid { path: ca_key_path.clone(), problem: format!("not a usable CA key: {e}") })?;
    let ca_der = CertificateDer::from_pem_file(&ca_cert_path).map_err(|e| CertError::Invalid {
        path: ca_cert_path.clone(),
        problem: format!("not a PEM certificate: {e}"),
    })?;

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(sans).map_err(|e| CertError::InvalidHost {
        name: name.to_string(),
        host: extra_hosts.join(","),
        problem: e.to_string(),
    })?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.distinguished_name.push(DnType::OrganizationName, ORGANIZATION);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, NODE_VALIDITY);
    let issuer = Issuer::new(ca_params(), &ca_key);
    let cert = params.signed_by(&key, &issuer)?;

    check_signed_by(cert.der(), &ca_der).map_err(|problem| CertError::Invalid {
        path: ca_cert_path.clone(),
        problem: format!(
            "does not match {CA_KEY_FILE} or was not created by `histofed certs init` (issued certificate fails \
             verification: {problem})"
        ),
    })?;

    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}.key"));
    write_file(&key_path, &key.serialize_pem(), true)?;
    write_file(&cert_path, &cert.pem(), false)?;
    Ok((cert_path, key_path))
}

/// Verifies `cert` chains to `ca` for client authentication, as the server will.
fn check_signed_by(cert: &CertificateDer<'_>, ca: &CertificateDer<'_>) -> Result<(), String> {
    let anchor = webpki::anchor_from_trusted_cert(ca).map_err(|e| e.to_string())?;
    let ee = webpki::EndEntityCert::try_from(cert).map_err(|e| e.to_string())?;
    let provider = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider();
    ee.verify_for_usage(
        provider.signature_verification_algorithms.all,
        &[anchor],
        &[],
        UnixTime::now(),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

/// Makes everything the demo needs in `dir`: the CA (kept if it already exists), a certificate for `server` and
/// for `site-0` … `site-{sites-1}`. Returns the node certificate paths, server first.
pub fn issue_all(dir: &Path, sites: u32) -> Result<Vec<PathBuf>, CertError> {
    let ca_cert = dir.join(CA_CERT_FILE);
    let ca_key = dir.join(CA_KEY_FILE);
    match (ca_cert.exists(), ca_key.exists()) {
        (true, true) => {}
        (false, false) => {
            init_ca(dir, false)?;
        }
        (true, false) => return Err(CertError::MissingCa { dir: dir.to_path_buf(), missing: ca_key }),
        (false, true) => return Err(CertError::MissingCa { dir: dir.to_path_buf(), missing: ca_cert }),
    }
    let mut issued = Vec::with_capacity(sites as usize + 1);
    issued.push(issue(dir, SERVER_NAME, &[])?.0);
    for i in 0..sites {
        issued.push(issue(dir, &site_name(i), &[])?.0);
    }
    Ok(issued)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["server", "site-0", "site-12", "a", "node-b2"] {
            assert!(valid_node_name(good), "{good}");
        }
        for bad in ["", "Site-1", "site_1", "site 1", "../x", "-a", "a-", "a.b", "ä", &"x".repeat(64)] {
            assert!(!valid_node_name(bad), "{bad}");
        }
        assert!(is_node_identity("server") && is_node_identity("site-7"));
        assert!(!is_node_identity("site-") && !is_node_identity("site-x") && !is_node_identity("histofed"));
    }

    #[test]
    fn init_refuses_to_overwrite_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let ca = init_ca(dir.path(), false).unwrap();
        assert_eq!(ca, dir.path().join(CA_CERT_FILE));
        let before = fs::read_to_string(&ca).unwrap();
        assert!(matches!(init_ca(dir.path(), false), Err(CertError::Exists(_))));
        assert_eq!(fs::read_to_string(&ca).unwrap(), before, "refused init must not touch the CA");
        init_ca(dir.path(), true).unwrap();
        assert_ne!(fs::read_to_string(&ca).unwrap(), before, "forced init makes a new CA");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(CA_KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn issue_validates_name_hosts_and_ca() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(issue(dir.path(), "site-1", &[]), Err(CertError::MissingCa { .. })));
        init_ca(dir.path(), false).unwrap();
        for bad in ["Site-1", "site_1", "../evil", "", "ca"] {
            assert!(matches!(issue(dir.path(), bad, &[]), Err(CertError::InvalidName(_))), "{bad}");
        }
        let hosts = |h: &[&str]| h.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        for bad in [&["server"][..], &["site-2"], &["*.example.org"], &[""]] {
            assert!(matches!(issue(dir.path(), "site-1", &hosts(bad)), Err(CertError::InvalidHost { .. })), "{bad:?}");
        }
        let (cert, key) = issue(dir.path(), "server", &hosts(&["histofed-server.ns.svc", "127.0.0.1", "::1"])).unwrap();
        assert!(cert.exists() && key.exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn issue_detects_a_foreign_ca_file() {
        let mine = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        init_ca(mine.path(), false).unwrap();
        init_ca(other.path(), false).unwrap();
        // ca.pem of one CA with ca.key of another: the issued certificate cannot verify, so nothing is written.
        fs::copy(other.path().join(CA_CERT_FILE), mine.path().join(CA_CERT_FILE)).unwrap();
        let err = issue(mine.path(), "site-1", &[]).unwrap_err();
        assert!(matches!(err, CertError::Invalid { .. }), "{err}");
        assert!(!mine.path().join("site-1.pem").exists());
    }

    #[test]
    fn issue_all_makes_the_demo_set() {
        let dir = tempfile::tempdir().unwrap();
        let issued = issue_all(dir.path(), 3).unwrap();
        let names: Vec<_> = issued.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["server.pem", "site-0.pem", "site-1.pem", "site-2.pem"]);
        let ca = fs::read_to_string(dir.path().join(CA_CERT_FILE)).unwrap();
        issue_all(dir.path(), 1).unwrap();
        assert_eq!(fs::read_to_string(dir.path().join(CA_CERT_FILE)).unwrap(), ca, "an existing CA is kept");
        for path in &issued {
            let der = CertificateDer::from_pem_file(path).unwrap();
            let ca_der = CertificateDer::from_pem_file(dir.path().join(CA_CERT_FILE)).unwrap();
            check_signed_by(&der, &ca_der).unwrap();
        }
    }
}
