//! TLS for the v1 protocol (rustls, ring provider) and the shared-secret token.
//!
//! The server loads a PEM certificate chain and key (`--tls-cert`, `--tls-key`); the
//! receiver trusts the CA certificates in `--tls-ca`, or, with `--tls-insecure`, any
//! certificate at all (the session is still encrypted, but not authenticated: a
//! man in the middle can read it). Legacy mode is always plaintext.

use anyhow::{bail, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::path::Path;
use std::sync::Arc;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why a PEM file holds nothing usable, when its text says: an encrypted key, or no
/// PEM at all (DER, say).
fn pem_hint(path: &Path) -> &'static str {
    let Ok(bytes) = std::fs::read(path) else {
        return "";
    };
    let text = String::from_utf8_lossy(&bytes);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || text.contains("Proc-Type: 4,ENCRYPTED")
    {
        " (the key is encrypted with a passphrase, which rawlink does not read: decrypt it, e.g. `openssl pkey -in KEY -out PLAIN`)"
    } else if !text.contains("-----BEGIN ") {
        " (expected PEM text with -----BEGIN lines; convert DER with `openssl x509 -inform der` or `openssl pkey -inform der`)"
    } else {
        ""
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("bad PEM certificate in {}", path.display()))?;
    if certs.is_empty() {
        bail!(
            "no certificate found in {}{}",
            path.display(),
            pem_hint(path)
        );
    }
    Ok(certs)
}

/// The server side: certificate chain and private key from PEM files.
pub fn acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor> {
    let certs = read_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "cannot read a private key from {}{}",
            key.display(),
            pem_hint(key)
        )
    })?;
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not form a usable pair")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// How the receiver checks the server's certificate.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Only certificates issued by the CAs in this PEM file.
    Ca(std::path::PathBuf),
    /// Any certificate (encrypted, not authenticated).
    Insecure,
}

/// The client side.
pub fn connector(trust: &Trust) -> Result<tokio_rustls::TlsConnector> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let cfg = match trust {
        Trust::Ca(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(path)? {
                roots
                    .add(c)
                    .with_context(|| format!("unusable CA certificate in {}", path.display()))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
            .with_no_client_auth(),
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

/// A TLS handshake failure in words. rustls reports some certificate problems only
/// as the Debug string of a webpki error; the common ones are named here.
pub fn describe_handshake_error(e: &std::io::Error) -> String {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return e.to_string();
    };
    describe_rustls_error(tls)
}

fn describe_rustls_error(e: &rustls::Error) -> String {
    if let rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) = e {
        // The first bytes back were not a TLS record: a plaintext server (a --legacy
        // one sends frames at once).
        return "the server's answer is not TLS: is it a plaintext or --legacy server? (drop --tls-ca/--tls-insecure, or start it with --tls-cert/--tls-key)".into();
    }
    if let rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) = e {
        if format!("{other:?}").contains("CaUsedAsEndEntity") {
            return "the server's certificate is a CA certificate; serve a leaf certificate signed by the CA given to --tls-ca".into();
        }
    }
    e.to_string()
}

/// The name to check the server's certificate against: the host part of `HOST:PORT`
/// (an IP address is matched against the certificate's IP addresses).
pub fn server_name(connect: &str) -> Result<ServerName<'static>> {
    let host = match connect.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => connect,
    };
    ServerName::try_from(host.to_string())
        .with_context(|| format!("{host:?} is not a valid TLS server name"))
}

/// `--tls-insecure`: accepts any certificate, but still checks the handshake signatures.
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
        verify_tls12_signature(
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
        verify_tls13_signature(
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

/// Reads a token file: its first line, trimmed. Refuses empty or malformed tokens and,
/// on Unix, files that other users can read.
pub fn read_token(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if !rawlink_proto::valid_token(&token) {
        bail!(
            "the token file {} must hold one token of printable ASCII without spaces (1..=1024 bytes)",
            path.display()
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            if m.permissions().mode() & 0o004 != 0 {
                tracing::warn!(
                    "the token file {} is readable by every user; chmod 600 it",
                    path.display()
                );
            }
        }
    }
    Ok(token)
}

/// Compares a presented token with the expected one in constant time (for tokens of
/// the same length; the length itself is not secret).
pub fn token_matches(expected: &str, presented: Option<&str>) -> bool {
    use subtle::ConstantTimeEq;
    match presented {
        Some(p) => bool::from(expected.as_bytes().ct_eq(p.as_bytes())),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An encrypted key and a DER file are named as such, not as "no items found".
    #[test]
    fn unusable_pem_files_say_why() {
        let d = tempfile::tempdir().unwrap();
        let enc = d.path().join("enc.key");
        std::fs::write(
            &enc,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjAp\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        let der = d.path().join("cert.der");
        std::fs::write(&der, [0x30u8, 0x82, 0x01, 0x0a, 0x02, 0x82]).unwrap();
        let e = format!("{:#}", acceptor(&der, &enc).err().unwrap());
        assert!(
            e.contains("no certificate found") && e.contains("expected PEM"),
            "{e}"
        );
        let good = d.path().join("cert.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(&good, cert.pem()).unwrap();
        let e = format!("{:#}", acceptor(&good, &enc).err().unwrap());
        assert!(
            e.contains("cannot read a private key") && e.contains("encrypted with a passphrase"),
            "{e}"
        );
    }

    #[test]
    fn a_ca_certificate_served_as_a_leaf_is_explained() {
        // rustls carries webpki's CaUsedAsEndEntity as an opaque error; only its Debug
        // string names it.
        #[derive(Debug)]
        enum WebpkiError {
            CaUsedAsEndEntity,
        }
        impl std::fmt::Display for WebpkiError {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{self:?}")
            }
        }
        impl std::error::Error for WebpkiError {}
        let e = rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
            rustls::OtherError(Arc::new(WebpkiError::CaUsedAsEndEntity)),
        ));
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        assert_eq!(
            describe_handshake_error(&io),
            "the server's certificate is a CA certificate; serve a leaf certificate signed by the CA given to --tls-ca"
        );
        let other = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        assert!(
            describe_rustls_error(&other).contains("UnknownIssuer"),
            "{}",
            describe_rustls_error(&other)
        );
    }

    #[test]
    fn token_comparison() {
        assert!(token_matches("abc123", Some("abc123")));
        assert!(!token_matches("abc123", Some("abc124")));
        assert!(!token_matches("abc123", Some("abc12")));
        assert!(!token_matches("abc123", None));
    }

    #[test]
    fn token_file_rules() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t");
        std::fs::write(&p, "  s3cret \n second line ignored\n").unwrap();
        assert_eq!(read_token(&p).unwrap(), "s3cret");
        std::fs::write(&p, "two words\n").unwrap();
        assert!(read_token(&p).is_err());
        std::fs::write(&p, "\n").unwrap();
        assert!(read_token(&p).is_err());
        assert!(read_token(&d.path().join("missing")).is_err());
    }

    #[test]
    fn server_names() {
        assert!(matches!(
            server_name("127.0.0.1:8080").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]:8080").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("camera.local:8080").unwrap(),
            ServerName::DnsName(_)
        ));
    }
}
