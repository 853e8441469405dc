//! TLS trust for 3D printers: a pinned certificate or a configured CA,
//! never "accept anything".
//!
//! - `pin_sha256`: the lower/upper-case hex SHA-256 of the server's **leaf
//!   certificate DER** (colons allowed) — what `openssl x509 -noout
//!   -fingerprint -sha256 -in cert.pem` prints. The pin is the trust: the
//!   leaf must hash to it, and the handshake signature must verify with its
//!   key (so a copied certificate without the key does not pass). Host name
//!   and validity dates are not checked: a pin names one exact certificate.
//! - `ca_file`: a PEM bundle of trust anchors. Standard WebPKI verification:
//!   chain, validity dates, `serverAuth`, and the URL's host against the
//!   certificate's SANs (a self-signed device certificate can be its own
//!   CA, if its SANs name the host polled).
//!
//! There is deliberately no third option.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `devices[].tls`: how the device's certificate is trusted. Exactly one of
/// the two keys is required.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsTrust {
    /// PEM file of CA certificates to verify the device against (with host
    /// name verification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Hex SHA-256 of the device's leaf certificate DER (colons allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_sha256: Option<String>,
}

/// Why a TLS handshake was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsFailure {
    /// The leaf certificate does not hash to `pin_sha256`.
    PinMismatch,
    /// The certificate does not name the host in the URL.
    NameMismatch,
    /// The certificate does not chain to `ca_file` (or is expired, or not for servers).
    Untrusted,
    /// Any other handshake failure (protocol error, peer hung up).
    Handshake,
}

impl TlsFailure {
    pub(crate) fn class(self) -> &'static str {
        match self {
            TlsFailure::PinMismatch => "https3d_tls_pin_mismatch",
            TlsFailure::NameMismatch => "https3d_tls_name_mismatch",
            TlsFailure::Untrusted => "https3d_tls_untrusted",
            TlsFailure::Handshake => "https3d_tls_handshake",
        }
    }
}

/// Decode a pin: 64 hex digits, colons and case ignored.
pub(crate) fn parse_pin(pin: &str) -> Result<[u8; 32], String> {
    let hex_only: String = pin.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(hex_only.trim())
        .map_err(|_| "must be hex (SHA-256 of the certificate DER)".to_string())?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("must be 32 bytes (64 hex digits), got {}", bytes.len()))
}

/// Read a PEM CA bundle; at least one certificate.
pub(crate) fn load_ca(path: &std::path::Path) -> Result<rustls::RootCertStore, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("{}: no usable CA certificate", path.display()));
    }
    Ok(roots)
}

/// Check a trust configuration without connecting (for config validation).
pub(crate) fn check(trust: &TlsTrust) -> Result<(), (&'static str, String)> {
    match (&trust.ca_file, &trust.pin_sha256) {
        (Some(_), Some(_)) => Err((
            "tls",
            "set either tls.ca_file or tls.pin_sha256, not both".into(),
        )),
        (None, None) => Err((
            "tls",
            "required: tls.ca_file (verify against a CA) or tls.pin_sha256 (pin the certificate); \
             verification cannot be turned off"
                .into(),
        )),
        (Some(ca), None) => load_ca(ca).map(|_| ()).map_err(|e| ("tls.ca_file", e)),
        (None, Some(pin)) => parse_pin(pin)
            .map(|_| ())
            .map_err(|e| ("tls.pin_sha256", e)),
    }
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration for `trust`; `Ok((config, pinned))`.
pub(crate) fn client_config(trust: &TlsTrust) -> Result<(rustls::ClientConfig, bool), String> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    match (&trust.ca_file, &trust.pin_sha256) {
        (Some(ca), None) => {
            let roots = load_ca(ca)?;
            Ok((
                builder.with_root_certificates(roots).with_no_client_auth(),
                false,
            ))
        }
        (None, Some(pin)) => {
            let verifier = PinVerifier {
                pin: parse_pin(pin)?,
                provider,
            };
            Ok((
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier))
                    .with_no_client_auth(),
                true,
            ))
        }
        _ => Err("exactly one of tls.ca_file and tls.pin_sha256 is required".into()),
    }
}

/// Accepts exactly the pinned leaf certificate (and checks the handshake
/// signature against its key).
#[derive(Debug)]
struct PinVerifier {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if got == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Classify a failed handshake (an `io::Error` from tokio-rustls).
pub(crate) fn classify(e: &std::io::Error, pinned: bool) -> TlsFailure {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return TlsFailure::Handshake;
    };
    match tls {
        rustls::Error::InvalidCertificate(_) if pinned => TlsFailure::PinMismatch,
        rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName
            | rustls::CertificateError::NotValidForNameContext { .. },
        ) => TlsFailure::NameMismatch,
        rustls::Error::InvalidCertificate(_) => TlsFailure::Untrusted,
        _ => TlsFailure::Handshake,
    }
}

/// Hex SHA-256 of a certificate DER (what `pin_sha256` takes).
pub fn cert_sha256_hex(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_and_trust_checks() {
        let pin = "AB:".repeat(31) + "AB";
        assert_eq!(parse_pin(&pin).unwrap(), [0xab; 32]);
        assert_eq!(parse_pin(&"0f".repeat(32)).unwrap(), [0x0f; 32]);
        assert!(parse_pin("abcd").unwrap_err().contains("32 bytes"));
        assert!(parse_pin(&"zz".repeat(32)).unwrap_err().contains("hex"));
        let none = check(&TlsTrust::default()).unwrap_err();
        assert_eq!(none.0, "tls");
        let both = TlsTrust {
            ca_file: Some("/x".into()),
            pin_sha256: Some("00".repeat(32)),
        };
        assert!(check(&both).unwrap_err().1.contains("not both"));
        let missing = TlsTrust {
            ca_file: Some("/nonexistent/ca.pem".into()),
            pin_sha256: None,
        };
        assert_eq!(check(&missing).unwrap_err().0, "tls.ca_file");
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let junk = TlsTrust {
            ca_file: Some(junk),
            pin_sha256: None,
        };
        assert!(check(&junk).unwrap_err().1.contains("no usable CA"));
    }
}
