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
