//! TLS: load the certificate and key (errors name the file), or generate a self-signed pair
//! for localhost when the config allows it; build the rustls config (TLS 1.2 and 1.3 only,
//! ALPN h2 and http/1.1) with the ring provider, which needs no system libraries to build.
//! The listeners present their certificate through [`reload::ServedCertificate`], which
//! replaces it when its files change.

pub mod reload;
pub mod x509;

use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;

use crate::clock::{Clock as _, SystemClock};
use crate::config::TlsSettings;
use x509::Validity;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_error(path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Makes sure a certificate and key exist. Returns `true` if it generated them.
pub fn ensure_certificate(settings: &TlsSettings) -> Result<bool, TlsError> {
    let cert_exists = settings.cert.exists();
    let key_exists = settings.key.exists();
    match (cert_exists, key_exists) {
        (true, true) => Ok(false),
        (false, false) if settings.generate_self_signed => {
            generate_self_signed(&settings.cert, &settings.key)?;
            Ok(true)
        }
        (false, false) => Err(file_error(
            &settings.cert,
            "certificate and key are missing (set [tls] generate_self_signed = true to create a self-signed pair)",
        )),
        (true, false) => Err(file_error(&settings.key, "the key is missing but the certificate exists")),
        (false, true) => Err(file_error(&settings.cert, "the certificate is missing but the key exists")),
    }
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), TlsError> {
    use std::io::Write as _;
    if let Some(parent) = path.parent() {
        crate::secret_files::create_private_dir_all(parent)
            .map_err(|err| file_error(parent, format!("cannot create the folder: {err}")))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|err| file_error(path, format!("cannot create: {err}")))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|err| file_error(path, format!("cannot write: {err}")))
}

/// A self-signed certificate for localhost, 127.0.0.1 and ::1; the key readable by the owner only.
pub fn generate_self_signed(cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|err| TlsError::Config(format!("cannot generate a certificate: {err}")))?;
    write_file(key_path, &certified.key_pair.serialize_pem(), 0o600)?;
    write_file(cert_path, &certified.cert.pem(), 0o644)
}

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|err| file_error(path, format!("cannot open: {err}")))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| file_error(path, format!("not a PEM certificate file: {err}")))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate found in the file"));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_pem(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|err| match err {
        pem::Error::NoItemsFound => file_error(path, "no private key found in the file"),
        err => file_error(path, format!("not a PEM key file: {err}")),
    })
}

/// A certificate chain and its key, checked to belong together and to be valid now.
#[derive(Debug)]
pub struct LoadedPair {
    pub certified: Arc<CertifiedKey>,
    pub validity: Validity,
}

/// Reads and checks a certificate and key pair: PEM, the key fits the first certificate, and
/// `now_secs` is within that certificate's validity. Errors name the file at fault.
pub fn load_pair(cert: &Path, key: &Path, now_secs: i64) -> Result<LoadedPair, TlsError> {
    let certs = load_certs(cert)?;
    let key_der = load_key(key)?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|err| file_error(key, format!("unsupported private key: {err}")))?;
    let certified = CertifiedKey::new(certs, signing_key);
    // Strict (unlike `CertifiedKey::from_der`): a key whose public half cannot be compared
    // is refused too, so a mismatched pair never replaces a working one.
    certified.keys_match().map_err(|err| {
        file_error(
            key,
            format!(
                "the key does not fit the certificate {} ({err})",
                cert.display()
            ),
        )
    })?;
    let validity = certified
        .end_entity_cert()
        .ok()
        .and_then(|leaf| x509::validity(leaf))
        .ok_or_else(|| file_error(cert, "cannot read the certificate's validity period"))?;
    if now_secs < validity.not_before {
        return Err(file_error(
            cert,
            format!(
                "the certificate is not valid before {}",
                rfc3339(validity.not_before)
            ),
        ));
    }
    if now_secs >= validity.not_after {
        return Err(file_error(
            cert,
            format!("the certificate expired on {}", rfc3339(validity.not_after)),
        ));
    }
    Ok(LoadedPair {
        certified: Arc::new(certified),
        validity,
    })
}

/// Unix seconds as an RFC 3339 UTC time, for messages.
pub fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).map_or_else(
        || format!("{secs} (Unix time)"),
        |time| time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// ALPN of the token port: HTTP/2 preferred.
pub const HTTPS_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN of the management listener, which speaks HTTP/1.1 only.
pub const MANAGEMENT_ALPN: &[&[u8]] = &[b"http/1.1"];

/// A rustls server configuration that asks `certificates` for the certificate of each
/// handshake, so a replaced certificate is used from the next handshake on.
pub fn server_config_with(
    certificates: Arc<dyn ResolvesServerCert>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|err| TlsError::Config(err.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The rustls server configuration for the HTTPS listener, with the pair as it is now
/// (`check-config`; the server itself uses a [`reload::ServedCertificate`]).
pub fn server_config(settings: &TlsSettings) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let pair = load_pair(&settings.cert, &settings.key, SystemClock.now_secs())?;
    let fixed = rustls::sign::SingleCertAndKey::from(pair.certified);
    server_config_with(Arc::new(fixed), HTTPS_ALPN)
}
