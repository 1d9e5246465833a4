//! One keep-alive HTTPS/1.1 connection and the requests the tools send on it.
//! TLS is rustls with the ring provider (no aws-lc-rs, no openssl: builds with Rust + gcc only).

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::target::{Target, TlsTrust};

/// Everything needed to open connections to one server; shared by all workers.
pub struct Endpoint {
    addr: std::net::SocketAddr,
    server_name: ServerName<'static>,
    authority: HeaderValue,
    tls: TlsConnector,
}

pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    /// The server closed the connection (e.g. `Connection: close`), so it must be reopened.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// One request: a POST of a form when `form` is set, else a GET.
pub struct Call<'a> {
    pub path: &'a Uri,
    pub basic: Option<&'a HeaderValue>,
    pub form: Option<String>,
}

/// `Authorization: Basic` for a client. RFC 6749 §2.3.1: id and secret are form-urlencoded
/// before Basic encoding.
pub fn basic_auth(client_id: &str, client_secret: &str) -> Result<HeaderValue, String> {
    let credentials = format!(
        "{}:{}",
        form_urlencode(client_id),
        form_urlencode(client_secret)
    );
    HeaderValue::from_str(&format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    ))
    .map_err(|e| format!("bad client credentials: {e}"))
}

/// A request path as a URI (checked once, cloned per request).
pub fn path_uri(path: &str) -> Result<Uri, String> {
    path.parse().map_err(|e| format!("bad path {path:?}: {e}"))
}

impl Endpoint {
    pub fn new(target: &Target, trust: &TlsTrust) -> Result<Self, String> {
        let server_name = ServerName::try_from(target.host.clone())
            .map_err(|e| format!("bad TLS server name {:?}: {e}", target.host))?;
        let authority = HeaderValue::from_str(&target.authority)
            .map_err(|e| format!("bad host in --url: {e}"))?;
        Ok(Self {
            addr: target.addr,
            server_name,
            authority,
            tls: TlsConnector::from(Arc::new(tls_config(trust)?)),
        })
    }

    /// TCP connect + TLS handshake + HTTP/1.1 handshake.
    pub async fn connect(&self) -> Result<Conn, String> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        self.handshake(tcp).await
    }

    /// TLS + HTTP/1.1 handshake on a connected socket.
    pub async fn handshake(&self, tcp: TcpStream) -> Result<Conn, String> {
        // One small request per round trip: Nagle + delayed ACK would add tens of ms.
        tcp.set_nodelay(true)
            .map_err(|e| format!("set TCP_NODELAY: {e}"))?;
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let (sender, connection) = http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        // The connection task ends when `sender` is dropped or the peer closes; its errors
        // also surface as a failed `send_request`, where they are counted.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn { sender })
    }

    /// Sends `call` (a form POST, or a GET); returns status and full body.
    pub async fn send(
        &self,
        conn: &mut Conn,
        call: Call<'_>,
    ) -> Result<(StatusCode, Bytes), String> {
        conn.sender
            .ready()
            .await
            .map_err(|e| format!("connection lost: {e}"))?;
        let mut builder = Request::builder()
            .uri(call.path.clone())
            .header(HOST, self.authority.clone());
        if let Some(basic) = call.basic {
            builder = builder.header(AUTHORIZATION, basic.clone());
        }
        let request = match call.form {
            Some(form) => builder
                .method(Method::POST)
                .header(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                )
                .body(Full::new(Bytes::from(form))),
            None => builder.method(Method::GET).body(Full::new(Bytes::new())),
        }
        .map_err(|e| format!("build request: {e}"))?;
        let response = conn
            .sender
            .send_request(request)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("read body: {e}"))?
            .to_bytes();
        Ok((status, body))
    }
}

fn tls_config(trust: &TlsTrust) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let mut config = match trust {
        TlsTrust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
        TlsTrust::CaFile(path) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("read {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("parse {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("use {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("no certificate in {}", path.display()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    // The server also offers h2; this tool measures HTTP/1.1 keep-alive on purpose.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `--insecure`: the server's certificate is self-signed and generated at first start, so
/// its chain is not checked. Handshake signatures are still verified with the ring provider,
/// so the TLS work per connection is the same as with a trusted certificate.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `application/x-www-form-urlencoded` encoding of one name or value (WHATWG URL §5.2).
pub fn form_urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::form_urlencode;

    #[test]
    fn form_encoding_escapes_reserved_bytes() {
        assert_eq!(form_urlencode("alice-password"), "alice-password");
        assert_eq!(form_urlencode("a b+c/=é"), "a+b%2Bc%2F%3D%C3%A9");
    }
}
