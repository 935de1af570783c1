//! The cluster certificate authority: created once at bootstrap, kept in
//! `<dir>/ca.pem` and `<dir>/ca.key` (0600) on scheduler replicas only,
//! signing the certificates of replicas, nodes and clients.

use super::{write_private, write_public, Credential, Identity, PkiError};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// How long a CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long the certificates it signs are valid (renewed before they end).
pub const LEAF_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);
/// Certificates start this long in the past, for clocks a little behind
/// (at most a tenth of their life, so that a short life stays short and
/// renewal, due two thirds in, comes after the issue).
const BACKDATE: Duration = Duration::from_secs(3600);

/// The CA: its certificate and key.
pub struct Ca {
    pub cert_pem: String,
    key_pem: String,
    cert_der: Vec<u8>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .expect("the system's random source");
    u32::from_le_bytes(b)
}

fn time(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

impl Ca {
    /// A new CA named `name` (shown in certificates; e.g. the cluster's name).
    pub fn generate(name: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::generate().map_err(|e| PkiError::cert("CA key", e))?;
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        // A name of its own (a rotation's new CA is told from the old by it).
        p.distinguished_name.push(
            DnType::CommonName,
            format!("drover CA {name} {:08x}", rand_u32()),
        );
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = SystemTime::now();
        p.not_before = time(now - BACKDATE);
        p.not_after = time(now + CA_VALIDITY);
        let cert = p
            .self_signed(&key)
            .map_err(|e| PkiError::cert("CA certificate", e))?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
        })
    }

    /// Loads `<dir>/ca.key` and, from `<dir>/ca.pem` (during a rotation,
    /// every trusted CA certificate: see [`bundle`]), the certificate that
    /// key belongs to, wherever it is in the file.
    pub fn load(dir: &Path) -> Result<Ca, PkiError> {
        let bundle = super::read(&dir.join("ca.pem"))?;
        let key_pem = super::read(&dir.join("ca.key"))?;
        let certs = split(&bundle);
        let mut first_error = None;
        for cert in &certs {
            match Ca::from_pem(cert.clone(), key_pem.clone()) {
                Ok(ca) => return Ok(ca),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| PkiError::cert("CA certificate", "none in ca.pem")))
    }

    /// A CA from its certificate and key (checks they belong together).
    pub fn from_pem(cert_pem: String, key_pem: String) -> Result<Ca, PkiError> {
        let cert_der = pem_to_der(&cert_pem)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::cert("CA key", e))?;
        let (_, x509) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| PkiError::cert("CA certificate", e))?;
        if x509.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
            return Err(PkiError::cert(
                "CA key",
                "does not belong to the CA certificate",
            ));
        }
        Ok(Ca {
            cert_pem,
            key_pem,
            cert_der,
        })
    }

    /// Another handle on the same CA.
    pub fn clone_of(ca: &Ca) -> Result<Ca, PkiError> {
        Ca::from_pem(ca.cert_pem.clone(), ca.key_pem.clone())
    }

    /// Whether `dir` holds a CA: its key is written last (see [`Ca::save`]),
    /// so a directory with the key has the certificate too.
    pub fn exists(dir: &Path) -> bool {
        dir.join("ca.key").exists()
    }

    /// Writes `<dir>/ca.pem`, then `<dir>/ca.key` (0600). The key is the
    /// commit point: a crash before it leaves a directory that does not
    /// count as having a CA, so the next start makes one afresh instead of
    /// failing on a missing certificate.
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        write_public(&dir.join("ca.pem"), self.cert_pem.as_bytes())?;
        write_private(&dir.join("ca.key"), self.key_pem.as_bytes())
    }

    /// The key, PEM (for a new scheduler replica only).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// SHA-256 of the CA certificate (DER), hex: what join tokens pin.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }

    /// The CA's name (its subject), as certificates it signs name their issuer.
    pub fn subject(&self) -> String {
        x509_parser::parse_x509_certificate(&self.cert_der)
            .map(|(_, x)| x.subject().to_string())
            .unwrap_or_default()
    }

    /// The secret join tokens are signed with: derived from the CA key, so
    /// every replica holding the CA can check a token and nothing is stored.
    pub fn join_secret(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"drover join token v1\0");
        h.update(self.key_pem.as_bytes());
        h.finalize().into()
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, PkiError> {
        let key = KeyPair::from_pem(&self.key_pem).map_err(|e| PkiError::cert("CA key", e))?;
        Issuer::from_ca_cert_pem(&self.cert_pem, key).map_err(|e| PkiError::cert("CA", e))
    }

    fn params(identity: &Identity, validity: Duration) -> Result<CertificateParams, PkiError> {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(DnType::CommonName, identity.to_string());
        let uri = identity
            .uri()
            .try_into()
            .map_err(|e| PkiError::cert(identity.to_string(), e))?;
        p.subject_alt_names = vec![SanType::URI(uri)];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if let Some(dns) = identity.server_name() {
            let dns = dns
                .try_into()
                .map_err(|e| PkiError::cert(identity.to_string(), e))?;
            p.subject_alt_names.push(SanType::DnsName(dns));
            p.extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        p.not_before = time(now - BACKDATE.min(validity / 10));
        p.not_after = time(now + validity);
        Ok(p)
    }

    /// A certificate (and a new key) for `identity`.
    pub fn issue(&self, identity: &Identity, validity: Duration) -> Result<Credential, PkiError> {
        let key = KeyPair::generate().map_err(|e| PkiError::cert("key", e))?;
        let cert = Ca::params(identity, validity)?
            .signed_by(&key, &self.issuer()?)
            .map_err(|e| PkiError::cert(identity.to_string(), e))?;
        Ok(Credential {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs the key of a certificate signing request for `identity`. The
    /// request proves possession of the key (its signature is checked); the
    /// names in it are ignored: the certificate names `identity` only.
    pub fn sign_request(
        &self,
        csr_pem: &str,
        identity: &Identity,
        validity: Duration,
    ) -> Result<String, PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::cert("certificate signing request", e))?;
        let cert = Ca::params(identity, validity)?
            .signed_by(&csr.public_key, &self.issuer()?)
            .map_err(|e| PkiError::cert(identity.to_string(), e))?;
        Ok(cert.pem())
    }
}

/// A new key and a certificate signing request for it (what a joining agent
/// or replica sends; the key never leaves it).
pub fn request() -> Result<(String, String), PkiError> {
    let key = KeyPair::generate().map_err(|e| PkiError::cert("key", e))?;
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| PkiError::cert("certificate signing request", e))?;
    Ok((csr, key.serialize_pem()))
}

/// SHA-256 of a DER certificate, hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The DER of the first certificate in `pem`.
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, PkiError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.to_vec())
        .map_err(|e| PkiError::cert("certificate", format!("not PEM: {e:?}")))
}

/// The identity a certificate names (its `spiffe://drover/…` URI SAN).
pub fn identity_of(der: &[u8]) -> Option<Identity> {
    let (_, x509) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = x509.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) => Identity::from_uri(u),
        _ => None,
    })
}

/// Whether the key in `key_pem` is the one certificate `cert_pem` names.
pub fn pair_matches(cert_pem: &str, key_pem: &str) -> bool {
    let (Ok(der), Ok(key)) = (pem_to_der(cert_pem), KeyPair::from_pem(key_pem)) else {
        return false;
    };
    x509_parser::parse_x509_certificate(&der).is_ok_and(|(_, x509)| {
        x509.public_key().raw == rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
    })
}

/// The certificates in a PEM bundle, each as its own PEM.
pub fn split(bundle: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in bundle.lines() {
        if line.starts_with("-----BEGIN ") {
            cur.clear();
        }
        cur.push_str(line);
        cur.push('\n');
        if line.starts_with("-----END ") {
            out.push(std::mem::take(&mut cur));
        }
    }
    out
}

/// A short name for a set of trusted CA certificates, whatever their
/// order: agents and schedulers compare theirs by it during a rotation.
pub fn bundle_id(bundle: &str) -> String {
    let mut fps: Vec<String> = split(bundle)
        .iter()
        .filter_map(|c| pem_to_der(c).ok())
        .map(|d| fingerprint(&d))
        .collect();
    fps.sort();
    fps.dedup();
    hex::encode(&Sha256::digest(fps.join(",").as_bytes())[..8])
}

/// The name of the CA that signed the certificate in `cert_pem`.
pub fn issuer(cert_pem: &str) -> Option<String> {
    let der = pem_to_der(cert_pem).ok()?;
    let (_, x509) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(x509.issuer().to_string())
}

/// When a certificate ends.
pub fn not_after(der: &[u8]) -> Option<SystemTime> {
    validity(der).map(|(_, end)| end)
}

/// When a certificate starts and ends.
pub fn validity(der: &[u8]) -> Option<(SystemTime, SystemTime)> {
    let (_, x509) = x509_parser::parse_x509_certificate(der).ok()?;
    let at = |t: &x509_parser::time::ASN1Time| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
    };
    Some((
        at(&x509.validity().not_before),
        at(&x509.validity().not_after),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_signs_certificates_that_name_their_holder() {
        let ca = Ca::generate("test").unwrap();
        let id = Identity::Node("node-1".into());
        let c = ca.issue(&id, LEAF_VALIDITY).unwrap();
        assert_eq!(c.identity().unwrap(), id);
        let end = not_after(&pem_to_der(&c.cert_pem).unwrap()).unwrap();
        let left = end.duration_since(SystemTime::now()).unwrap();
        assert!(left > LEAF_VALIDITY - Duration::from_secs(60) && left <= LEAF_VALIDITY);
    }

    #[test]
    fn a_request_gets_the_identity_the_ca_chooses_not_the_one_it_asks_for() {
        let ca = Ca::generate("test").unwrap();
        let key = KeyPair::generate().unwrap();
        let mut asked = CertificateParams::new(vec!["scheduler.drover".to_string()]).unwrap();
        asked.subject_alt_names.push(SanType::URI(
            Identity::Scheduler(1).uri().try_into().unwrap(),
        ));
        let csr = asked.serialize_request(&key).unwrap().pem().unwrap();
        let id = Identity::Node("node-2".into());
        let pem = ca.sign_request(&csr, &id, LEAF_VALIDITY).unwrap();
        let der = pem_to_der(&pem).unwrap();
        assert_eq!(identity_of(&der), Some(id));
        let (_, x509) = x509_parser::parse_x509_certificate(&der).unwrap();
        let names = format!("{:?}", x509.subject_alternative_name().unwrap().unwrap());
        assert!(!names.contains("scheduler.drover"), "{names}");
    }

    #[test]
    fn a_tampered_request_is_refused() {
        let ca = Ca::generate("test").unwrap();
        let (csr, _) = request().unwrap();
        let mut bytes = pem_body(&csr);
        let n = bytes.len();
        bytes[n - 5] ^= 0xff;
        let tampered = pem_wrap("CERTIFICATE REQUEST", &bytes);
        let err = ca
            .sign_request(&tampered, &Identity::Node("x".into()), LEAF_VALIDITY)
            .unwrap_err();
        assert!(
            err.to_string().contains("certificate signing request"),
            "{err}"
        );
    }

    #[test]
    fn a_ca_round_trips_through_its_files_and_a_foreign_key_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let ca = Ca::generate("test").unwrap();
        ca.save(d.path()).unwrap();
        let back = Ca::load(d.path()).unwrap();
        assert_eq!(back.fingerprint(), ca.fingerprint());
        assert_eq!(back.join_secret(), ca.join_secret());
        let other = Ca::generate("other").unwrap();
        let err = Ca::from_pem(ca.cert_pem.clone(), other.key_pem.clone()).unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
    }

    #[test]
    fn a_bundle_is_named_by_its_certificates_and_the_key_finds_its_own() {
        let a = Ca::generate("a").unwrap();
        let b = Ca::generate("b").unwrap();
        let ab = format!("{}{}", a.cert_pem, b.cert_pem);
        let ba = format!("{}{}", b.cert_pem, a.cert_pem);
        assert_eq!(split(&ab).len(), 2);
        assert_eq!(bundle_id(&ab), bundle_id(&ba));
        assert_ne!(bundle_id(&ab), bundle_id(&a.cert_pem));
        // The key of the second certificate in ca.pem finds it.
        let d = tempfile::tempdir().unwrap();
        write_public(&d.path().join("ca.pem"), ab.as_bytes()).unwrap();
        write_private(&d.path().join("ca.key"), b.key_pem().as_bytes()).unwrap();
        assert_eq!(Ca::load(d.path()).unwrap().fingerprint(), b.fingerprint());
        let leaf = b.issue(&Identity::Node("n".into()), LEAF_VALIDITY).unwrap();
        assert_eq!(issuer(&leaf.cert_pem).unwrap(), b.subject());
        assert_ne!(a.subject(), b.subject());
    }

    pub(super) fn pem_body(pem: &str) -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec()
    }

    fn pem_wrap(label: &str, der: &[u8]) -> String {
        pem::encode(&pem::Pem::new(label, der.to_vec()))
    }
}
