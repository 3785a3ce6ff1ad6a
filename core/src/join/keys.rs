//! Trusted RSA public keys by name (an AWS region, a Google key ID), read from the formats
//! the providers publish them in: a JSON object of PEM certificates by name (Google's
//! `https://www.googleapis.com/oauth2/v1/certs`; for AWS, the regional RSA certificates of
//! `regions-certs.html` written the same way). A certificate is a pinned key here: its
//! validity dates are not checked (AWS's own recipe skips them too, `-noverify`).

use std::collections::BTreeMap;

use x509_parser::pem::Pem;

/// An RSA public key (PKCS#1 `RSAPublicKey`, DER).
#[derive(Clone, PartialEq, Eq)]
pub struct RsaKey(Vec<u8>);

impl std::fmt::Debug for RsaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RsaKey({} bytes)", self.0.len())
    }
}

impl RsaKey {
    /// The RSA key of the first certificate in `pem`.
    pub fn from_cert_pem(pem: &str) -> Result<RsaKey, String> {
        let block = Pem::iter_from_buffer(pem.as_bytes())
            .next()
            .ok_or("holds no PEM block")?
            .map_err(|e| format!("is not PEM: {e}"))?;
        if block.label != "CERTIFICATE" {
            return Err(format!("holds a {} block, not a CERTIFICATE", block.label));
        }
        let cert = block
            .parse_x509()
            .map_err(|e| format!("is not an X.509 certificate: {e}"))?;
        let spki = &cert.tbs_certificate.subject_pki;
        if spki.algorithm.algorithm != x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION {
            return Err("does not hold an RSA key".into());
        }
        Ok(RsaKey(spki.subject_public_key.data.to_vec()))
    }

    /// A key from its PKCS#1 `RSAPublicKey` DER (a certificate's subject public key).
    pub(crate) fn from_pkcs1_der(der: Vec<u8>) -> RsaKey {
        RsaKey(der)
    }

    /// True when `signature` is this key's RSA PKCS#1 v1.5 signature of `message` with
    /// `digest`, the key having 2048 bits or more (CMS signers: AWS `rsa2048`, Azure).
    pub fn verify_pkcs1_2048(
        &self,
        digest: super::cms::Digest,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        use super::cms::Digest;
        let alg = match digest {
            Digest::Sha256 => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            Digest::Sha384 => &ring::signature::RSA_PKCS1_2048_8192_SHA384,
            Digest::Sha512 => &ring::signature::RSA_PKCS1_2048_8192_SHA512,
        };
        ring::signature::UnparsedPublicKey::new(alg, &self.0)
            .verify(message, signature)
            .is_ok()
    }

    /// True when `signature` is this key's RSA PKCS#1 v1.5 SHA-256 signature of `message`.
    /// Keys of 1024 bits are accepted: AWS's `/signature` keys have that size.
    pub fn verify_sha256(&self, message: &[u8], signature: &[u8]) -> bool {
        let alg = &ring::signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY;
        ring::signature::UnparsedPublicKey::new(alg, &self.0)
            .verify(message, signature)
            .is_ok()
    }
}

/// Keys by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet(BTreeMap<String, RsaKey>);

impl KeySet {
    /// Reads `{"name": "-----BEGIN CERTIFICATE-----…", …}`.
    pub fn from_json(text: &str) -> Result<KeySet, String> {
        let map: BTreeMap<String, String> = serde_json::from_str(text).map_err(|e| {
            format!(
                "is not a JSON object of PEM certificates by name: {}",
                super::protocol::json_error(&e)
            )
        })?;
        let mut keys = BTreeMap::new();
        for (name, pem) in map {
            let key = RsaKey::from_cert_pem(&pem).map_err(|e| format!("{name:?} {e}"))?;
            keys.insert(name, key);
        }
        Ok(KeySet(keys))
    }

    pub fn insert(&mut self, name: impl Into<String>, key: RsaKey) {
        self.0.insert(name.into(), key);
    }

    pub fn get(&self, name: &str) -> Option<&RsaKey> {
        self.0.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}
