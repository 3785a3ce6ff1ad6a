//! The Azure IMDS attested document (`/metadata/attested/document?nonce=…`): a CMS SignedData
//! of a small JSON document (subscription, VM ID, the caller's nonce, when it was made and
//! until when it holds), signed by a certificate for `metadata.azure.com` that it carries.
//! Verified offline: the signer certificate must chain to the configured roots (the real
//! ones are Microsoft's/DigiCert's; Azure leaves the issuing CA out of the document, so the
//! broker is given it too) — path validation by rustls-webpki, rustls's own verifier — and be
//! for `metadata.azure.com` or a name below it; then the signature, the nonce and the times.

use rustls_pki_types::{self as pki_types, CertificateDer, TrustAnchor, UnixTime};
use serde::Deserialize;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

use super::cms;
use super::protocol::{Refusal, RefusalCode};

/// The name the signer certificate must be for (or a name below it).
pub const SIGNER_NAME: &str = "metadata.azure.com";

/// How long an attested document is taken after it was made, at most, and the clock skew
/// allowed on `createdOn`: the document must be fetched for this request (its nonce says so).
pub const MAX_DOCUMENT_AGE: i64 = 600;

/// The signature algorithms a certificate of the signer's path may use.
static ALGORITHMS: &[&dyn pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
];

const ID_SUBJECT_ALT_NAME: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("2.5.29.17");

/// The roots (and issuing CAs) the attested document's signer must chain to.
#[derive(Debug, Clone, Default)]
pub struct AzureTrust {
    roots: Vec<TrustAnchor<'static>>,
    intermediates: Vec<CertificateDer<'static>>,
}

impl AzureTrust {
    /// Reads PEM bundles: the root CAs, and the issuing CAs (may be empty).
    pub fn from_pem(roots: &str, intermediates: &str) -> Result<AzureTrust, String> {
        let certs = |pem: &str, what: &str| -> Result<Vec<CertificateDer<'static>>, String> {
            x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
                .map(|block| {
                    let block = block.map_err(|e| format!("the {what} are not PEM: {e}"))?;
                    if block.label != "CERTIFICATE" {
                        return Err(format!(
                            "the {what} hold a {} block, not a CERTIFICATE",
                            block.label
                        ));
                    }
                    Ok(CertificateDer::from(block.contents))
                })
                .collect()
        };
        let roots = certs(roots, "roots")?
            .iter()
            .map(|der| {
                webpki::anchor_from_trusted_cert(der)
                    .map(|a| a.to_owned())
                    .map_err(|e| format!("a root is not a CA certificate webpki reads: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if roots.is_empty() {
            return Err("the roots hold no certificate".into());
        }
        Ok(AzureTrust {
            roots,
            intermediates: certs(intermediates, "issuing CAs")?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }
}

/// The attested document's fields the broker uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attested {
    #[serde(default)]
    pub nonce: String,
    pub subscription_id: String,
    pub vm_id: String,
    pub time_stamp: TimeStamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeStamp {
    pub created_on: String,
    pub expires_on: String,
}

fn bad(reason: impl Into<String>) -> Refusal {
    Refusal::new(RefusalCode::BadProof, reason)
}

const WHAT: &str = "attested document";

/// Verifies the attested document's `signature` (base64 SignedData, as IMDS's JSON holds it):
/// its signer's certificate path and name, the signature, and that it is valid at `now`.
pub fn verify(signature: &str, trust: &AzureTrust, now: i64) -> Result<Attested, Refusal> {
    let signed = cms::parse(&cms::decode_base64(signature, WHAT)?, WHAT)?;
    let signer = signed
        .signer_certificate()
        .ok_or_else(|| bad("the attested document does not hold its signer's certificate"))?;
    let signer_der = der::Encode::to_der(signer)
        .map_err(|e| bad(format!("the attested document's signer certificate: {e}")))?;
    let mut intermediates = trust.intermediates.clone();
    for c in signed.other_certificates() {
        if let Ok(der) = der::Encode::to_der(c) {
            intermediates.push(CertificateDer::from(der));
        }
    }
    let signer_der = CertificateDer::from(signer_der);
    let end_entity = webpki::EndEntityCert::try_from(&signer_der)
        .map_err(|e| bad(format!("the attested document's signer certificate: {e}")))?;
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(now).unwrap_or(0),
    ));
    end_entity
        .verify_for_usage(
            ALGORITHMS,
            &trust.roots,
            &intermediates,
            time,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| {
            bad(format!(
                "the attested document's signer certificate does not chain to the broker's \
                 Azure roots ({e}): check --azure-roots and --azure-intermediates"
            ))
        })?;
    let names = dns_names(signer);
    if !names.iter().any(|n| for_metadata(n)) {
        return Err(bad(format!(
            "the attested document is signed by a certificate for {names:?}, not for \
             {SIGNER_NAME}"
        )));
    }
    let key = cms::rsa_key(signer)
        .ok_or_else(|| bad("the attested document's signer certificate holds no RSA key"))?;
    if !signed.verify_with(&key) {
        return Err(bad(
            "the attested document's signature does not verify with its signer certificate",
        ));
    }
    let doc: Attested = serde_json::from_slice(&signed.content).map_err(|e| {
        bad(format!(
            "the attested document is not one: {}",
            super::protocol::json_error(&e)
        ))
    })?;
    check_times(&doc, now)?;
    Ok(doc)
}

/// `metadata.azure.com`, `*.metadata.azure.com` or a name below it.
fn for_metadata(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == SIGNER_NAME
        || name
            .strip_suffix(SIGNER_NAME)
            .is_some_and(|head| head.ends_with('.'))
}

/// The DNS names of a certificate's subjectAltName.
fn dns_names(cert: &x509_cert::Certificate) -> Vec<String> {
    cert.tbs_certificate
        .extensions
        .iter()
        .flatten()
        .filter(|e| e.extn_id == ID_SUBJECT_ALT_NAME)
        .filter_map(|e| <SubjectAltName as der::Decode>::from_der(e.extn_value.as_bytes()).ok())
        .flat_map(|san| san.0)
        .filter_map(|n| match n {
            GeneralName::DnsName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

/// `createdOn` and `expiresOn` (`11/30/26 21:19:19 -0000`, as IMDS writes them) against `now`.
fn check_times(doc: &Attested, now: i64) -> Result<(), Refusal> {
    let at = |text: &str, field: &str| {
        timestamp_seconds(text).ok_or_else(|| {
            bad(format!(
                "the attested document's timeStamp.{field} {text:?} is not MM/DD/YY HH:MM:SS -0000"
            ))
        })
    };
    let created = at(&doc.time_stamp.created_on, "createdOn")?;
    let expires = at(&doc.time_stamp.expires_on, "expiresOn")?;
    if expires <= now {
        return Err(Refusal::new(
            RefusalCode::Expired,
            format!(
                "the attested document expired at {} ({} s ago): fetch a new one",
                doc.time_stamp.expires_on,
                now - expires
            ),
        ));
    }
    let age = now - created;
    if age > MAX_DOCUMENT_AGE || -age > MAX_DOCUMENT_AGE {
        return Err(Refusal::new(
            RefusalCode::Stale,
            format!(
                "the attested document was made at {}, {age} s from the broker's clock, at most \
                 {MAX_DOCUMENT_AGE} s: fetch it for this request, and check the clocks (NTP)",
                doc.time_stamp.created_on
            ),
        ));
    }
    Ok(())
}

/// `MM/DD/YY HH:MM:SS -0000` (UTC; years 20YY) as Unix seconds.
pub fn timestamp_seconds(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let shape_ok = b.len() == 23
        && b.iter().enumerate().all(|(i, c)| match i {
            2 | 5 => *c == b'/',
            8 | 17 => *c == b' ',
            11 | 14 => *c == b':',
            18 => *c == b'-' || *c == b'+',
            _ => c.is_ascii_digit(),
        });
    if !shape_ok || &text[19..] != "0000" {
        return None;
    }
    let n = |r: std::ops::Range<usize>| text[r].parse::<u8>().ok();
    let month = time::Month::try_from(n(0..2)?).ok()?;
    let date = time::Date::from_calendar_date(2000 + i32::from(n(6..8)?), month, n(3..5)?).ok()?;
    let at = date.with_hms(n(9..11)?, n(12..14)?, n(15..17)?).ok()?;
    Some(at.assume_utc().unix_timestamp())
}
