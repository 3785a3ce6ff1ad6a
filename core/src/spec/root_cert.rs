//! The mesh's root certificate (root-cert.pem) as a VM receives it: the CA certificate(s) the
//! VM's sidecar trusts istiod with. One or more PEM `CERTIFICATE` blocks (several while a root
//! is being rotated), each a CA certificate, at least one of them valid now. During a CA
//! rotation the bundle holds the old root beside the new one; when the old one has expired
//! (or the new one is not valid yet) the bundle is still usable: [`RootCert::unusable`] says
//! which, for a warning.

use time::UtcDateTime;
use x509_parser::pem::Pem;

use crate::timestamp::rfc3339;

/// What the check found: one entry per certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootCert {
    pub subject: String,
    pub not_after: UtcDateTime,
    /// Why this certificate is not valid now (it expired, or is not valid yet) while another
    /// of the bundle is; `None` for a certificate valid now.
    pub unusable: Option<RootCertError>,
}

/// What to do about a [`rotation_warnings`] warning.
pub const ROTATION_HINT: &str = "remove the old certificate once every VM trusts the new one";

/// One warning per certificate of a bundle that is not valid now, naming one that is (the
/// hint is [`ROTATION_HINT`]).
pub fn rotation_warnings(certs: &[RootCert]) -> Vec<String> {
    let Some(valid) = certs.iter().find(|c| c.unusable.is_none()) else {
        return Vec::new();
    };
    certs
        .iter()
        .filter_map(|c| c.unusable.as_ref())
        .map(|why| {
            format!(
                "{why}; the bundle is accepted (a CA rotation?) because `{}` is valid until {}",
                valid.subject,
                rfc3339(valid.not_after)
            )
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RootCertError {
    #[error("the root certificate has no PEM `-----BEGIN CERTIFICATE-----` block")]
    NoCertificate,
    #[error("the root certificate's PEM block {index} is damaged: {reason}")]
    Pem { index: usize, reason: String },
    #[error("the root certificate's PEM block {index} is a {label}, not a CERTIFICATE")]
    NotCertificate { index: usize, label: String },
    #[error("the root certificate's block {index} is not an X.509 certificate: {reason}")]
    X509 { index: usize, reason: String },
    #[error(
        "the root certificate `{subject}` is not a CA certificate (basicConstraints CA:TRUE is missing)"
    )]
    NotCa { subject: String },
    #[error("the root certificate `{subject}` expired at {}", rfc3339(*.not_after))]
    Expired {
        subject: String,
        not_after: UtcDateTime,
    },
    #[error("the root certificate `{subject}` is not valid before {}", rfc3339(*.not_before))]
    NotYetValid {
        subject: String,
        not_before: UtcDateTime,
    },
}

impl RootCertError {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            RootCertError::NotCa { .. } => {
                "give the root CA that signs istiod's certificates (root-cert.pem of the istio-ca-root-cert ConfigMap), not a leaf certificate"
            }
            RootCertError::Expired { .. } => {
                "the mesh needs a new root CA: roll one out, then give its certificate"
            }
            RootCertError::NotYetValid { .. } => {
                "check this machine's clock, or wait until the certificate is valid"
            }
            _ => {
                "give the mesh's root CA certificate in PEM: root-cert.pem of the istio-ca-root-cert ConfigMap"
            }
        }
    }
}

impl RootCertError {
    pub fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::InvalidInput
    }
}

/// Checks `pem` as a mesh root certificate at `now`.
pub fn check(pem: &str, now: UtcDateTime) -> Result<Vec<RootCert>, RootCertError> {
    let mut certs = Vec::new();
    for (i, block) in Pem::iter_from_buffer(pem.as_bytes()).enumerate() {
        let index = i + 1;
        let block = block.map_err(|e| RootCertError::Pem {
            index,
            reason: e.to_string(),
        })?;
        if block.label != "CERTIFICATE" {
            return Err(RootCertError::NotCertificate {
                index,
                label: block.label,
            });
        }
        let cert = block.parse_x509().map_err(|e| RootCertError::X509 {
            index,
            reason: e.to_string(),
        })?;
        let subject = cert.subject().to_string();
        let validity = cert.validity();
        let not_after = validity.not_after.to_datetime().to_utc();
        let not_before = validity.not_before.to_datetime().to_utc();
        if !cert.is_ca() {
            return Err(RootCertError::NotCa { subject });
        }
        let unusable = if not_after <= now {
            Some(RootCertError::Expired {
                subject: subject.clone(),
                not_after,
            })
        } else if not_before > now {
            Some(RootCertError::NotYetValid {
                subject: subject.clone(),
                not_before,
            })
        } else {
            None
        };
        certs.push(RootCert {
            subject,
            not_after,
            unusable,
        });
    }
    if certs.is_empty() {
        return Err(RootCertError::NoCertificate);
    }
    // A bundle with no certificate valid now cannot be used: the first one's reason.
    if certs.iter().all(|c| c.unusable.is_some()) {
        return Err(certs.swap_remove(0).unusable.expect("checked"));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = include_str!("../../../fixtures/certs/test-root-cert.pem");
    const LEAF: &str = include_str!("../../../fixtures/certs/test-leaf-cert.pem");

    fn at(secs: i64) -> UtcDateTime {
        UtcDateTime::from_unix_timestamp(secs).unwrap()
    }

    /// Well inside the fixture CA's validity (2026-11-26 to 2126-11-02).
    const NOW: i64 = 1_900_000_000;

    #[test]
    fn accepts_the_fixture_ca_and_a_bundle() {
        let certs = check(CA, at(NOW)).unwrap();
        assert_eq!(certs.len(), 1);
        assert!(certs[0].subject.contains("meshvm test root CA"));
        let bundle = format!("{CA}{CA}");
        assert_eq!(check(&bundle, at(NOW)).unwrap().len(), 2);
    }

    #[test]
    fn a_rotation_bundle_with_an_expired_old_root_is_accepted_with_a_warning() {
        const EXPIRED: &str = include_str!("../../../fixtures/invalid/certs/expired-root-cert.pem");
        assert!(matches!(
            check(EXPIRED, at(NOW)),
            Err(RootCertError::Expired { .. })
        ));
        for bundle in [format!("{EXPIRED}{CA}"), format!("{CA}{EXPIRED}")] {
            let certs = check(&bundle, at(NOW)).unwrap();
            assert_eq!(certs.len(), 2);
            let warnings = rotation_warnings(&certs);
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            assert!(
                warnings[0].contains("expired at 2021-01-01T")
                    && warnings[0].contains("the bundle is accepted (a CA rotation?)")
                    && warnings[0].contains("meshvm test root CA"),
                "{warnings:?}"
            );
        }
        assert!(rotation_warnings(&check(CA, at(NOW)).unwrap()).is_empty());
        // Every certificate expired: refused, as one alone is.
        let err = check(&format!("{EXPIRED}{EXPIRED}"), at(NOW)).unwrap_err();
        assert!(matches!(err, RootCertError::Expired { .. }), "{err}");
    }

    #[test]
    fn rejects_what_a_vm_could_not_use() {
        let cases: Vec<(String, i64, &str)> = vec![
            (String::new(), NOW, "no PEM"),
            ("hello".into(), NOW, "no PEM"),
            (LEAF.into(), NOW, "is not a CA certificate"),
            (CA.into(), 5_000_000_000, "expired at 2126-11-02T"),
            (CA.into(), 1_700_000_000, "is not valid before 2026-11-26T"),
            (
                CA.replace("CERTIFICATE", "PRIVATE KEY"),
                NOW,
                "block 1 is a PRIVATE KEY, not a CERTIFICATE",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
                NOW,
                "block 1 is not an X.509 certificate",
            ),
            (
                format!("{CA}-----BEGIN CERTIFICATE-----\nMIIB"),
                NOW,
                "PEM block 2 is damaged",
            ),
        ];
        for (pem, now, expected) in cases {
            let err = check(&pem, at(now)).unwrap_err().to_string();
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }
}
