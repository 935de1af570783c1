//! TLS for every connection of the cluster, with rustls, under tonic.
//!
//! Servers ([`incoming`]) do the handshake themselves, one task per
//! connection (a slow or silent client holds up nobody), and hand tonic
//! streams whose [`Peer`] — the address and the verified [`Identity`] of
//! the client certificate, if one was presented — every request carries in
//! its extensions. Clients ([`ClientTls`]) dial through a connector that
//! verifies the server against the cluster CA under the DNS name of its
//! role ([`super::SCHEDULER_NAME`], [`super::AGENT_NAME`]), whatever
//! address was dialled, and present their own certificate.
//!
//! A client certificate is optional at the handshake so that joining
//! (which has none yet) can reach the join call; every other call is
//! refused without one by the server's own check, before any work. A
//! certificate that is presented must chain to the cluster CA, or the
//! handshake fails.
//!
//! Certificates are short-lived and renewed while the process serves, so
//! the material is [`LiveTls`]: replacing it changes what the next
//! handshake presents and trusts; established connections carry on.
//!
//! [`Security::Plaintext`] exists only for `--insecure-plaintext`.

use super::{ca, Credential, Identity, PkiError};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A handshake that takes longer than this is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Tls(format!("certificate PEM: {e:?}")))
}

fn key(pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| PkiError::Tls(format!("private key PEM: {e:?}")))
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, PkiError> {
    let mut roots = RootCertStore::empty();
    for c in certs(ca_pem)? {
        roots
            .add(c)
            .map_err(|e| PkiError::Tls(format!("CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(PkiError::Tls("no CA certificate".into()));
    }
    Ok(Arc::new(roots))
}

/// A verifier of scheduler certificates (server name
/// [`super::SCHEDULER_NAME`]) chaining to `ca_pem`.
pub fn scheduler_verifier(
    ca_pem: &str,
) -> Result<Arc<rustls::client::WebPkiServerVerifier>, PkiError> {
    rustls::client::WebPkiServerVerifier::builder_with_provider(roots(ca_pem)?, provider())
        .build()
        .map_err(|e| PkiError::Tls(e.to_string()))
}

/// What a process proves itself with and trusts: the cluster CA's
/// certificate and its own credential.
#[derive(Clone, Debug)]
pub struct TlsMaterial {
    pub ca_pem: String,
    pub credential: Credential,
}

impl TlsMaterial {
    /// `<dir>/ca.pem` and the credential `<dir>/<name>.{pem,key}`.
    pub fn load(dir: &std::path::Path, name: &str) -> Result<TlsMaterial, PkiError> {
        Ok(TlsMaterial {
            ca_pem: super::read(&dir.join("ca.pem"))?,
            credential: Credential::load(dir, name)?,
        })
    }

    /// The server side: presents the credential (with the CA after it, so
    /// a joiner can check the CA against its token's fingerprint) and
    /// verifies client certificates against the CA when presented.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, PkiError> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots(&self.ca_pem)?,
            provider(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| PkiError::Tls(e.to_string()))?;
        let mut chain = certs(&self.credential.cert_pem)?;
        chain.extend(certs(&self.ca_pem)?);
        let mut c = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| PkiError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key(&self.credential.key_pem)?)
            .map_err(|e| PkiError::Tls(format!("own certificate: {e}")))?;
        c.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(c))
    }

    /// The client side: trusts the CA only, presents the credential.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, PkiError> {
        client_config(&self.ca_pem, Some(&self.credential))
    }
}

/// A client configuration trusting `ca_pem`, presenting `credential` if given.
pub fn client_config(
    ca_pem: &str,
    credential: Option<&Credential>,
) -> Result<Arc<ClientConfig>, PkiError> {
    let b = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .with_root_certificates(roots(ca_pem)?);
    let mut c = match credential {
        Some(cred) => b
            .with_client_auth_cert(certs(&cred.cert_pem)?, key(&cred.key_pem)?)
            .map_err(|e| PkiError::Tls(format!("own certificate: {e}")))?,
        None => b.with_no_client_auth(),
    };
    c.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(c))
}

/// TLS material that can be replaced while the process serves: a renewed
/// certificate or a changed set of trusted CAs takes effect at the next
/// handshake, in both directions, with no restart and no dropped connection.
#[derive(Clone)]
pub struct LiveTls(Arc<RwLock<Live>>);

struct Live {
    material: TlsMaterial,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl Live {
    fn build(material: TlsMaterial) -> Result<Live, PkiError> {
        Ok(Live {
            server: material.server_config()?,
            client: material.client_config()?,
            material,
        })
    }
}

impl std::fmt::Debug for LiveTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveTls").finish_non_exhaustive()
    }
}

impl LiveTls {
    pub fn new(material: TlsMaterial) -> Result<LiveTls, PkiError> {
        Ok(LiveTls(Arc::new(RwLock::new(Live::build(material)?))))
    }

    /// What is presented and trusted now.
    pub fn material(&self) -> TlsMaterial {
        self.read().material.clone()
    }

    /// Presents and trusts `material` from the next handshake on. Material
    /// that does not make a working configuration is refused and the old
    /// one kept.
    pub fn replace(&self, material: TlsMaterial) -> Result<(), PkiError> {
        let live = Live::build(material)?;
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = live;
        Ok(())
    }

    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.read().server.clone()
    }

    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.read().client.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Live> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// A client configuration for joining: no CA yet, only its fingerprint
/// from the join token. The server must present a certificate chaining to a
/// CA certificate (sent after its own) whose SHA-256 is `fingerprint`;
/// anything else fails the handshake before a byte of the token is sent.
pub fn pinned_client_config(fingerprint: &str) -> Arc<ClientConfig> {
    let mut c = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa {
            fingerprint: fingerprint.to_ascii_lowercase(),
        }))
        .with_no_client_auth();
    c.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(c)
}

#[derive(Debug)]
struct PinnedCa {
    fingerprint: String,
}

impl PinnedCa {
    fn delegate(
        &self,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<Arc<rustls::client::WebPkiServerVerifier>, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| ca::fingerprint(c) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General("the server's CA is not the one the join token names".into())
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))
    }
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.delegate(intermediates)?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp,
            now,
        )
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
            &provider().signature_verification_algorithms,
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
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Whether connections are TLS (the default everywhere) or plaintext
/// (`--insecure-plaintext`, for nothing but debugging).
#[derive(Clone, Debug)]
pub enum Security {
    Tls(LiveTls),
    Plaintext,
}

/// Who is on the other end of a connection: in every request's extensions
/// (`request.extensions().get::<Peer>()`).
#[derive(Clone, Debug, Default)]
pub struct Peer {
    pub addr: Option<SocketAddr>,
    /// Verified against the CA in the handshake; `None` without a
    /// certificate (or on a plaintext connection).
    pub identity: Option<Identity>,
}

/// The identity of the peer of a request, if it presented a certificate.
pub fn peer_identity<T>(request: &tonic::Request<T>) -> Option<&Identity> {
    request
        .extensions()
        .get::<Peer>()
        .and_then(|p| p.identity.as_ref())
}

/// An accepted connection, plain or TLS.
pub enum ServerConn {
    Plain(TcpStream, Peer),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>, Peer),
}

impl tonic::transport::server::Connected for ServerConn {
    type ConnectInfo = Peer;
    fn connect_info(&self) -> Peer {
        match self {
            ServerConn::Plain(_, p) | ServerConn::Tls(_, p) => p.clone(),
        }
    }
}

macro_rules! delegate_io {
    ($t:ty, $($v:ident),+) => {
        impl AsyncRead for $t {
            fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
                match self.get_mut() { $(Self::$v(s, ..) => Pin::new(s).poll_read(cx, buf),)+ }
            }
        }
        impl AsyncWrite for $t {
            fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
                match self.get_mut() { $(Self::$v(s, ..) => Pin::new(s).poll_write(cx, buf),)+ }
            }
            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
                match self.get_mut() { $(Self::$v(s, ..) => Pin::new(s).poll_flush(cx),)+ }
            }
            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
                match self.get_mut() { $(Self::$v(s, ..) => Pin::new(s).poll_shutdown(cx),)+ }
            }
            fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
                match self.get_mut() { $(Self::$v(s, ..) => Pin::new(s).poll_write_vectored(cx, bufs),)+ }
            }
            fn is_write_vectored(&self) -> bool {
                match self { $(Self::$v(s, ..) => s.is_write_vectored(),)+ }
            }
        }
    };
}

delegate_io!(ServerConn, Plain, Tls);

/// Accepted connections, as tonic's `serve_with_incoming` takes them.
pub type Incoming = tokio_stream::wrappers::ReceiverStream<std::io::Result<ServerConn>>;

/// Accepts connections on `listener` for tonic's `serve_with_incoming`:
/// TLS handshakes run concurrently, each bounded by [`HANDSHAKE_TIMEOUT`];
/// a failed one is logged (with the peer's address and why) and dropped.
pub fn incoming(listener: TcpListener, security: &Security) -> Incoming {
    accepting(listener, security, None)
}

/// [`incoming`], but the connections' sockets wait for the network on the
/// runtime `sockets` (its threads see a socket ready even while the
/// caller's are all busy); the handshakes' cpu is spent on the caller's.
pub fn incoming_on(
    listener: TcpListener,
    security: &Security,
    sockets: &tokio::runtime::Handle,
) -> std::io::Result<Incoming> {
    let listener = listener.into_std()?;
    // A socket accepted there is registered there.
    let listener = {
        let _there = sockets.enter();
        TcpListener::from_std(listener)?
    };
    Ok(accepting(listener, security, Some(sockets)))
}

fn accepting(
    listener: TcpListener,
    security: &Security,
    sockets: Option<&tokio::runtime::Handle>,
) -> Incoming {
    let live = match security {
        Security::Tls(live) => Some(live.clone()),
        Security::Plaintext => None,
    };
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let here = tokio::runtime::Handle::current();
    let accept = sockets.unwrap_or(&here).clone();
    accept.spawn(async move {
        loop {
            let (tcp, addr) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors, say: wait rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let Some(acceptor) = live
                .as_ref()
                .map(|l| tokio_rustls::TlsAcceptor::from(l.server_config()))
            else {
                let peer = Peer {
                    addr: Some(addr),
                    identity: None,
                };
                if tx.send(Ok(ServerConn::Plain(tcp, peer))).await.is_err() {
                    return;
                }
                continue;
            };
            let tx = tx.clone();
            here.spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::info!(peer = %addr, error = %e, "TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(peer = %addr, "TLS handshake timed out");
                        return;
                    }
                };
                let identity = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| ca::identity_of(c));
                let peer = Peer {
                    addr: Some(addr),
                    identity,
                };
                let _ = tx.send(Ok(ServerConn::Tls(Box::new(tls), peer))).await;
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// How a client dials: plain, or TLS verifying the server as `server_name`.
#[derive(Clone, Default)]
pub enum ClientTls {
    #[default]
    Plain,
    Tls {
        config: ConfigSource,
        server_name: ServerName<'static>,
    },
}

/// Where a TLS client's configuration comes from at each dial.
#[derive(Clone)]
pub enum ConfigSource {
    Fixed(Arc<ClientConfig>),
    Live(LiveTls),
}

impl ConfigSource {
    fn get(&self) -> Arc<ClientConfig> {
        match self {
            ConfigSource::Fixed(c) => c.clone(),
            ConfigSource::Live(l) => l.client_config(),
        }
    }
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientTls::Plain => f.write_str("Plain"),
            ClientTls::Tls { server_name, .. } => write!(f, "Tls({server_name:?})"),
        }
    }
}

impl ClientTls {
    /// TLS to a server whose certificate is valid for `server_name`
    /// ([`super::SCHEDULER_NAME`] or [`super::AGENT_NAME`]).
    pub fn new(config: Arc<ClientConfig>, server_name: &'static str) -> ClientTls {
        ClientTls::Tls {
            config: ConfigSource::Fixed(config),
            server_name: ServerName::try_from(server_name).expect("a valid DNS name"),
        }
    }

    /// TLS with whatever `live` holds at each dial (renewed certificates
    /// are used on the next connection).
    pub fn live(live: LiveTls, server_name: &'static str) -> ClientTls {
        ClientTls::Tls {
            config: ConfigSource::Live(live),
            server_name: ServerName::try_from(server_name).expect("a valid DNS name"),
        }
    }

    /// From `security`, to servers named `server_name`.
    pub fn from_security(security: &Security, server_name: &'static str) -> ClientTls {
        match security {
            Security::Tls(live) => ClientTls::live(live.clone(), server_name),
            Security::Plaintext => ClientTls::Plain,
        }
    }

    /// Connects `endpoint` (an `http://HOST:PORT` endpoint: the scheme is
    /// ignored, TLS is this connector's).
    pub async fn connect(
        &self,
        endpoint: &tonic::transport::Endpoint,
    ) -> Result<tonic::transport::Channel, tonic::transport::Error> {
        endpoint
            .connect_with_connector(Connector(self.clone()))
            .await
    }

    /// Like [`Self::connect`], connecting on first use.
    pub fn connect_lazy(&self, endpoint: &tonic::transport::Endpoint) -> tonic::transport::Channel {
        endpoint.connect_with_connector_lazy(Connector(self.clone()))
    }
}

/// A dialled connection, plain or TLS.
pub enum ClientConn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

delegate_io!(ClientConn, Plain, Tls);

#[derive(Clone)]
struct Connector(ClientTls);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<ClientConn>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let tls = self.0.clone();
        Box::pin(async move {
            let host = uri.host().ok_or("the address has no host")?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = uri.port_u16().ok_or("the address has no port")?;
            let tcp = TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            match tls {
                ClientTls::Plain => Ok(TokioIo::new(ClientConn::Plain(tcp))),
                ClientTls::Tls {
                    config,
                    server_name,
                } => {
                    let c = tokio_rustls::TlsConnector::from(config.get());
                    let s = tokio::time::timeout(HANDSHAKE_TIMEOUT, c.connect(server_name, tcp))
                        .await
                        .map_err(|_| "TLS handshake timed out")??;
                    Ok(TokioIo::new(ClientConn::Tls(Box::new(s))))
                }
            }
        })
    }
}
