//! Test signers for the join broker: the fixture keys of fixtures/join/ sign AWS instance
//! identity documents and GCE identity tokens as AWS and Google would, so that the broker's
//! production verification code checks them.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// The DER of the first PEM block of `pem`.
fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    STANDARD.decode(body).expect("a PEM block")
}

/// RSA PKCS#1 v1.5 SHA-256 signature of `message` by the fixture key `name`
/// (`fixtures/join/<name>-test.key`).
pub fn sign(name: &str, message: &[u8]) -> Vec<u8> {
    let pem = std::fs::read_to_string(crate::fixture(&format!("join/{name}-test.key")))
        .expect("the fixture key");
    let key = ring::signature::RsaKeyPair::from_pkcs8(&pem_der(&pem)).expect("a PKCS#8 RSA key");
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        message,
        &mut sig,
    )
    .expect("signing");
    sig
}

/// The fixture certificate of `name` (PEM).
pub fn cert(name: &str) -> String {
    std::fs::read_to_string(crate::fixture(&format!("join/{name}-test.crt")))
        .expect("the fixture certificate")
}

/// The fixture certificate `fixtures/join/<file>.crt` (PEM).
pub fn cert_file(file: &str) -> String {
    std::fs::read_to_string(crate::fixture(&format!("join/{file}.crt")))
        .expect("the fixture certificate")
}

/// An instance identity document as IMDS serves it (tab-indented JSON).
pub fn aws_document(account: &str, region: &str, instance: &str, ip: &str) -> String {
    format!(
        "{{\n\t\"accountId\" : \"{account}\",\n\t\"architecture\" : \"x86_64\",\n\t\
         \"availabilityZone\" : \"{region}a\",\n\t\"imageId\" : \"ami-0123456789abcdef0\",\n\t\
         \"instanceId\" : \"{instance}\",\n\t\"instanceType\" : \"t3.micro\",\n\t\
         \"pendingTime\" : \"2026-11-30T08:00:00Z\",\n\t\"privateIp\" : \"{ip}\",\n\t\
         \"region\" : \"{region}\",\n\t\"version\" : \"2017-09-30\"\n}}"
    )
}

/// The base64 `signature` of a document, signed by the AWS test key.
pub fn aws_signature(document: &str) -> String {
    STANDARD.encode(sign("aws", document.as_bytes()))
}

/// The `aws` proof's fields: the document in base64 and its signature.
pub fn aws_proof(document: &str) -> (String, String) {
    (STANDARD.encode(document), aws_signature(document))
}

/// A GCE identity token with these claims, signed by the GCP test key as key ID `kid`.
pub fn gcp_token(kid: &str, claims: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"RS256","kid":"{kid}","typ":"JWT"}}"#));
    let claims = URL_SAFE_NO_PAD.encode(claims);
    let signed = format!("{header}.{claims}");
    let sig = URL_SAFE_NO_PAD.encode(sign("gcp", signed.as_bytes()));
    format!("{signed}.{sig}")
}

/// The claims of a GCE identity token (`format=full`).
#[allow(clippy::too_many_arguments)]
pub fn gcp_claims(aud: &str, iat: i64, exp: i64, project: &str, zone: &str, name: &str) -> String {
    format!(
        r#"{{"aud":"{aud}","azp":"1","exp":{exp},"iat":{iat},"iss":"https://accounts.google.com","sub":"1","google":{{"compute_engine":{{"instance_creation_timestamp":{iat},"instance_id":"4242","instance_name":"{name}","project_id":"{project}","project_number":1,"zone":"{zone}"}}}}}}"#
    )
}

/// How [`signed_data`] builds a CMS SignedData, as a real signer would or as a forger might.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmsShape {
    /// Sign the content through signed attributes (content type, message digest), as AWS and
    /// Azure do; else sign the content itself.
    pub signed_attributes: bool,
    /// Carry the content (attached); else leave it out (detached).
    pub attached: bool,
    /// Carry the signer's certificate (Azure does, AWS does not).
    pub with_certificate: bool,
}

impl CmsShape {
    pub const AWS: CmsShape = CmsShape {
        signed_attributes: true,
        attached: true,
        with_certificate: false,
    };
    pub const AZURE: CmsShape = CmsShape {
        signed_attributes: true,
        attached: true,
        with_certificate: true,
    };
}

/// A CMS SignedData (DER) of `content`, signed (RSA PKCS#1 v1.5, SHA-256) by the fixture key
/// `key` and naming the signer as the fixture certificate `cert` (`fixtures/join/<cert>.crt`),
/// which it carries when `shape.with_certificate`. `tamper` changes the content after signing.
pub fn signed_data(
    content: &[u8],
    key: &str,
    cert: &str,
    shape: CmsShape,
    tamper: Option<&[u8]>,
) -> Vec<u8> {
    use cms::cert::x509::Certificate;
    use cms::cert::x509::attr::Attribute;
    use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
    use cms::content_info::{CmsVersion, ContentInfo};
    use cms::signed_data::{
        CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo,
        SignerInfos,
    };
    use der::asn1::{Any, ObjectIdentifier as Oid, OctetString, SetOfVec};
    use der::{Decode, Encode};

    let id_data = Oid::new_unwrap("1.2.840.113549.1.7.1");
    let cert = Certificate::from_der(&pem_der(&cert_file(cert))).expect("a certificate");
    let attr = |oid: &str, value: Any| Attribute {
        oid: Oid::new_unwrap(oid),
        values: SetOfVec::try_from(vec![value]).unwrap(),
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, content);
    let attrs = SetOfVec::try_from(vec![
        attr("1.2.840.113549.1.9.3", Any::encode_from(&id_data).unwrap()),
        attr(
            "1.2.840.113549.1.9.4",
            Any::encode_from(&OctetString::new(digest.as_ref()).unwrap()).unwrap(),
        ),
    ])
    .unwrap();
    let signature = if shape.signed_attributes {
        sign(key, &attrs.to_der().unwrap())
    } else {
        sign(key, content)
    };
    let alg = |oid: &str| cms::cert::x509::spki::AlgorithmIdentifierOwned {
        oid: Oid::new_unwrap(oid),
        parameters: None,
    };
    let signer = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: cert.tbs_certificate.issuer.clone(),
            serial_number: cert.tbs_certificate.serial_number.clone(),
        }),
        digest_alg: alg("2.16.840.1.101.3.4.2.1"),
        signed_attrs: shape.signed_attributes.then_some(attrs),
        signature_algorithm: alg("1.2.840.113549.1.1.1"),
        signature: OctetString::new(signature).unwrap(),
        unsigned_attrs: None,
    };
    let carried = tamper.unwrap_or(content);
    let data = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::try_from(vec![alg("2.16.840.1.101.3.4.2.1")]).unwrap(),
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: id_data,
            econtent: shape
                .attached
                .then(|| Any::encode_from(&OctetString::new(carried).unwrap()).unwrap()),
        },
        certificates: shape.with_certificate.then(|| {
            CertificateSet(SetOfVec::try_from(vec![CertificateChoices::Certificate(cert)]).unwrap())
        }),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::try_from(vec![signer]).unwrap()),
    };
    ContentInfo {
        content_type: Oid::new_unwrap("1.2.840.113549.1.7.2"),
        content: Any::encode_from(&data).unwrap(),
    }
    .to_der()
    .unwrap()
}

/// An Azure attested document's JSON, as IMDS signs it.
pub fn azure_document(nonce: &str, subscription: &str, vm_id: &str, created: i64) -> String {
    let stamp = |t: i64| {
        let at = time::OffsetDateTime::from_unix_timestamp(t).expect("a time");
        format!(
            "{:02}/{:02}/{:02} {:02}:{:02}:{:02} -0000",
            u8::from(at.month()),
            at.day(),
            at.year() % 100,
            at.hour(),
            at.minute(),
            at.second()
        )
    };
    format!(
        r#"{{"licenseType":"","nonce":"{nonce}","plan":{{"name":"","product":"","publisher":""}},"sku":"22_04-lts-gen2","subscriptionId":"{subscription}","timeStamp":{{"createdOn":"{}","expiresOn":"{}"}},"vmId":"{vm_id}"}}"#,
        stamp(created),
        stamp(created + 6 * 3600)
    )
}

/// The `signature` IMDS's attested document JSON holds: base64 of the SignedData of
/// `document` by the Azure test signer.
pub fn azure_signature(document: &str) -> String {
    STANDARD.encode(signed_data(
        document.as_bytes(),
        "azure",
        "azure-test",
        CmsShape::AZURE,
        None,
    ))
}
