//! Which certificate Janus may serve: one that chains to the system's
//! trusted roots or to a CA in `janus.ca_file`, as webpki checks it (name,
//! dates, CA:FALSE), or one that is byte-for-byte a certificate in
//! `janus.ca_file`: pinned, as SSH pins a host key in known_hosts. A
//! pinned certificate is trusted whatever names, CA flag or dates it
//! carries (a bare `openssl req -x509` makes a CA certificate for one
//! month), but the server must still prove in the handshake that it holds
//! its key: the signature checks always run.
//!
//! ureq 3 takes no rustls verifier of its own, so this module wraps the
//! TCP connection in rustls itself: the last link of a ureq connector
//! chain, in place of ureq's `RustlsConnector`.

use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, StreamOwned};
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{
    Buffers, ConnectProxyConnector, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout,
    TcpConnector, Transport, TransportAdapter,
};

/// Debian's and Raspberry Pi OS's bundle of the system's trusted CAs.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The client could not be set up from its settings.
#[derive(Debug, thiserror::Error)]
#[error("janus.ca_file: {path}: {reason}")]
pub struct TlsSetupError {
    path: String,
    reason: String,
}

/// A ureq agent with `config` whose https connections trust what this
/// module describes: the system's roots, `ca_file`'s CAs, and `ca_file`'s
/// certificates pinned.
pub(super) fn agent(
    config: ureq::config::Config,
    ca_file: Option<&Path>,
) -> Result<ureq::Agent, TlsSetupError> {
    let tls = PinningTls::new(ca_file)?;
    // ureq's default chain without its TLS link: an HTTP CONNECT proxy
    // when one is configured (HTTPS_PROXY), else TCP; then our TLS.
    let connector =
        ().chain(ConnectProxyConnector::default())
            .chain(TcpConnector::default())
            .chain(tls);
    Ok(ureq::Agent::with_parts(
        config,
        connector,
        DefaultResolver::default(),
    ))
}

/// The certificates in `ca_file` (none when unset); a file without any is
/// an error, as it can only be a mistake.
fn ca_file_certificates(
    ca_file: Option<&Path>,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let Some(path) = ca_file.filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(Vec::new());
    };
    let setup_error = |reason: String| TlsSetupError {
        path: path.display().to_string(),
        reason,
    };
    let pem = fs::read(path).map_err(|e| setup_error(e.to_string()))?;
    let certs = pem_certificates(&pem);
    if certs.is_empty() {
        return Err(setup_error("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// The system's trusted roots plus `extra`; the roots webpki-roots ships
/// when the system has no bundle.
fn root_store(extra: &[CertificateDer<'static>]) -> RootCertStore {
    let mut roots = match fs::read(SYSTEM_BUNDLE) {
        Ok(pem) => {
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(pem_certificates(&pem));
            roots
        }
        Err(_) if extra.is_empty() => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
        Err(_) => RootCertStore::empty(),
    };
    // A certificate webpki cannot take as a trust anchor may still be pinned.
    roots.add_parsable_certificates(extra.iter().cloned());
    roots
}

fn pem_certificates(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

/// Trusts a server certificate pinned in `ca_file`; leaves everything
/// else, and every handshake signature, to webpki.
#[derive(Debug)]
struct PinningVerifier {
    pinned: Vec<CertificateDer<'static>>,
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|pin| pin.as_ref() == end_entity.as_ref())
        {
            log::debug!("Janus serves the certificate pinned in janus.ca_file");
            return Ok(ServerCertVerified::assertion());
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The TLS link of the connector chain: wraps an https connection in
/// rustls with the [`PinningVerifier`].
struct PinningTls {
    config: Arc<ClientConfig>,
}

impl PinningTls {
    fn new(ca_file: Option<&Path>) -> Result<Self, TlsSetupError> {
        let pinned = ca_file_certificates(ca_file)?;
        let setup_error = |reason: String| TlsSetupError {
            path: ca_file.map(|p| p.display().to_string()).unwrap_or_default(),
            reason,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(root_store(&pinned));
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| setup_error(e.to_string()))?;
        let verifier = PinningVerifier { pinned, webpki };
        let config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .map_err(|e| setup_error(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
        })
    }
}

impl fmt::Debug for PinningTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinningTls").finish_non_exhaustive()
    }
}

impl<In: Transport> Connector<In> for PinningTls {
    type Out = Either<In, TlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details.uri.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host)
            .map_err(|_| ureq::Error::Tls("janus.url: the host is no DNS name or IP address"))?
            .to_owned();
        let mut conn = ClientConnection::new(self.config.clone(), name)?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        conn.complete_io(&mut sock)?;
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Either::B(TlsTransport {
            buffers,
            stream: StreamOwned { conn, sock },
        })))
    }
}

/// An https connection: rustls over the chained transport.
pub(super) struct TlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport")
            .field("chained", &self.stream.sock.inner())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_ca_file_is_named() {
        let e = PinningTls::new(Some(Path::new("/nonexistent/ca.pem")))
            .expect_err("missing file is an error");
        assert!(e
            .to_string()
            .starts_with("janus.ca_file: /nonexistent/ca.pem"));
    }
}
