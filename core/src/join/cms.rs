//! CMS (PKCS#7) SignedData, as AWS's `/latest/dynamic/instance-identity/rsa2048` and Azure's
//! attested document carry it: the signed content attached (`id-data`), one signer, RSA
//! PKCS#1 v1.5 with SHA-256/384/512, signed attributes or none. RustCrypto's `cms` parses the
//! DER; the signature is checked with ring (the crypto already in the tree), so no second RSA
//! implementation comes in. Anything else (detached content, several signers, other
//! algorithms) is refused with a reason.

use base64::Engine;
use cms::cert::CertificateChoices;
use cms::cert::x509::Certificate;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier};
use der::asn1::{ObjectIdentifier as Oid, OctetString};
use der::{Decode, Encode};

use super::keys::RsaKey;
use super::protocol::{Refusal, RefusalCode};

/// The largest SignedData accepted, in bytes of DER (AWS's is about 1.5 KiB, Azure's with its
/// certificate about 3 KiB).
pub const MAX_DER: usize = 8192;

const ID_SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
const ID_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.1");
const ID_CONTENT_TYPE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.4");
const ID_SUBJECT_KEY_IDENTIFIER: Oid = Oid::new_unwrap("2.5.29.14");
const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");

/// The digests a signer may use, with their OIDs and the `…WithRSAEncryption` OIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    Sha256,
    Sha384,
    Sha512,
}

impl Digest {
    const ALL: [(Digest, Oid, Oid); 3] = [
        (
            Digest::Sha256,
            Oid::new_unwrap("2.16.840.1.101.3.4.2.1"),
            Oid::new_unwrap("1.2.840.113549.1.1.11"),
        ),
        (
            Digest::Sha384,
            Oid::new_unwrap("2.16.840.1.101.3.4.2.2"),
            Oid::new_unwrap("1.2.840.113549.1.1.12"),
        ),
        (
            Digest::Sha512,
            Oid::new_unwrap("2.16.840.1.101.3.4.2.3"),
            Oid::new_unwrap("1.2.840.113549.1.1.13"),
        ),
    ];

    fn of(bytes: &[u8], digest: Digest) -> Vec<u8> {
        let alg = match digest {
            Digest::Sha256 => &ring::digest::SHA256,
            Digest::Sha384 => &ring::digest::SHA384,
            Digest::Sha512 => &ring::digest::SHA512,
        };
        ring::digest::digest(alg, bytes).as_ref().to_vec()
    }
}

/// A parsed SignedData whose structure and message digest have been checked; its signature
/// is checked by [`Signed::verify_with`].
#[derive(Debug, Clone)]
pub struct Signed {
    /// The signed content (the document).
    pub content: Vec<u8>,
    /// The certificates it carries (Azure: the signer's; AWS: none).
    pub certificates: Vec<Certificate>,
    sid: SignerIdentifier,
    digest: Digest,
    /// The bytes the signature covers: the DER of the signed attributes, else the content.
    signed: Vec<u8>,
    signature: Vec<u8>,
}

fn bad(what: &str, reason: impl std::fmt::Display) -> Refusal {
    Refusal::new(RefusalCode::BadProof, format!("the {what} {reason}"))
}

/// Base64 (with line breaks, or PEM-armoured as `openssl smime` wants it) to DER, bounded.
pub fn decode_base64(text: &str, what: &str) -> Result<Vec<u8>, Refusal> {
    let compact: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("-----"))
        .flat_map(|l| l.split_ascii_whitespace())
        .collect();
    if compact.len() > MAX_DER / 3 * 4 + 4 {
        return Err(bad(what, format_args!("has more than {MAX_DER} bytes")));
    }
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| bad(what, "is not base64"))
}

/// Parses `der` as a ContentInfo holding a SignedData with attached `id-data` content and one
/// RSA signer, and checks its signed attributes' content type and message digest.
pub fn parse(der: &[u8], what: &str) -> Result<Signed, Refusal> {
    let info = ContentInfo::from_der(der)
        .map_err(|e| bad(what, format_args!("is not a CMS (PKCS#7) structure: {e}")))?;
    if info.content_type != ID_SIGNED_DATA {
        return Err(bad(
            what,
            format_args!("holds {}, not a SignedData", info.content_type),
        ));
    }
    let data: SignedData = info
        .content
        .decode_as()
        .map_err(|e| bad(what, format_args!("is not a SignedData: {e}")))?;
    let encap = &data.encap_content_info;
    if encap.econtent_type != ID_DATA {
        return Err(bad(
            what,
            format_args!("signs {}, not data", encap.econtent_type),
        ));
    }
    let content = encap
        .econtent
        .as_ref()
        .ok_or_else(|| {
            bad(
                what,
                "is detached (it does not hold the document it signs): send the SignedData \
                 with the document in it, as the metadata service serves it",
            )
        })?
        .decode_as::<OctetString>()
        .map_err(|e| bad(what, format_args!("holds content that is not bytes: {e}")))?
        .into_bytes();
    let signers = data.signer_infos.0.as_slice();
    let [signer] = signers else {
        return Err(bad(
            what,
            format_args!("has {} signers, exactly one is accepted", signers.len()),
        ));
    };
    let (digest, _, with_rsa) = Digest::ALL
        .into_iter()
        .find(|(_, oid, _)| *oid == signer.digest_alg.oid)
        .ok_or_else(|| {
            bad(
                what,
                format_args!(
                    "uses digest {}; SHA-256, SHA-384 and SHA-512 are accepted",
                    signer.digest_alg.oid
                ),
            )
        })?;
    let sig_alg = signer.signature_algorithm.oid;
    if sig_alg != RSA_ENCRYPTION && sig_alg != with_rsa {
        return Err(bad(
            what,
            format_args!("is signed with {sig_alg}; only RSA PKCS#1 v1.5 is accepted"),
        ));
    }
    let signed = match &signer.signed_attrs {
        None => content.clone(),
        Some(attrs) => {
            let value = |oid: Oid, name: &str| {
                let found: Vec<_> = attrs.iter().filter(|a| a.oid == oid).collect();
                match found.as_slice() {
                    [a] if a.values.len() == 1 => Ok(a.values.as_slice()[0].clone()),
                    _ => Err(bad(
                        what,
                        format_args!("must sign exactly one {name} attribute"),
                    )),
                }
            };
            let content_type: Oid = value(ID_CONTENT_TYPE, "content-type")?
                .decode_as()
                .map_err(|_| bad(what, "has a content-type attribute that is not an OID"))?;
            if content_type != ID_DATA {
                return Err(bad(
                    what,
                    "has a content-type attribute other than its content's",
                ));
            }
            let message_digest: OctetString = value(ID_MESSAGE_DIGEST, "message-digest")?
                .decode_as()
                .map_err(|_| bad(what, "has a message-digest attribute that is not bytes"))?;
            if message_digest.as_bytes() != Digest::of(&content, digest) {
                return Err(bad(
                    what,
                    "does not match its signed digest: its content was changed after signing",
                ));
            }
            attrs.to_der().map_err(|e| {
                bad(
                    what,
                    format_args!("has signed attributes DER cannot hold: {e}"),
                )
            })?
        }
    };
    let certificates = data
        .certificates
        .iter()
        .flat_map(|set| set.0.iter())
        .filter_map(|c| match c {
            CertificateChoices::Certificate(c) => Some(c.clone()),
            CertificateChoices::Other(_) => None,
        })
        .collect();
    Ok(Signed {
        content,
        certificates,
        sid: signer.sid.clone(),
        digest,
        signed,
        signature: signer.signature.as_bytes().to_vec(),
    })
}

impl Signed {
    /// True when `key` made the signature.
    pub fn verify_with(&self, key: &RsaKey) -> bool {
        key.verify_pkcs1_2048(self.digest, &self.signed, &self.signature)
    }

    /// The carried certificate the signer names (issuer and serial number, or subject key
    /// identifier).
    pub fn signer_certificate(&self) -> Option<&Certificate> {
        self.certificates.iter().find(|c| names(&self.sid, c))
    }

    /// The carried certificates but the signer's (intermediates, perhaps).
    pub fn other_certificates(&self) -> impl Iterator<Item = &Certificate> {
        self.certificates.iter().filter(|c| !names(&self.sid, c))
    }
}

/// Whether `sid` names `cert`.
fn names(sid: &SignerIdentifier, cert: &Certificate) -> bool {
    let tbs = &cert.tbs_certificate;
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(ias) => {
            ias.issuer == tbs.issuer && ias.serial_number == tbs.serial_number
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => tbs
            .extensions
            .iter()
            .flatten()
            .filter(|e| e.extn_id == ID_SUBJECT_KEY_IDENTIFIER)
            .filter_map(|e| OctetString::from_der(e.extn_value.as_bytes()).ok())
            .any(|id| id == ski.0),
    }
}

/// The RSA key of a certificate.
pub fn rsa_key(cert: &Certificate) -> Option<RsaKey> {
    let spki = &cert.tbs_certificate.subject_public_key_info;
    (spki.algorithm.oid == RSA_ENCRYPTION)
        .then(|| spki.subject_public_key.as_bytes())
        .flatten()
        .map(|k| RsaKey::from_pkcs1_der(k.to_vec()))
}
