//! The istio-token: a Kubernetes ServiceAccount token (a JWT) that a VM presents to istiod
//! once, for its first certificate.
//!
//! meshvm checks the token before it puts it into a VM's user-data, so that a wrong or
//! short-lived token fails here, with a clear message, rather than on a VM that never joins:
//! the audience must be `istio-ca`, the subject the VM's ServiceAccount, and the token must
//! stay valid long enough for the VM to boot.
//!
//! **The signature is not verified**: meshvm has no access to the cluster's keys, and does not
//! need them: istiod verifies the token when the VM presents it. These checks catch mistakes,
//! not forgeries.
//!
//! The token is a bearer secret: it never appears in an error message or a `Debug` output.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use time::UtcDateTime;

use crate::timestamp::{human_duration, rfc3339};

/// The audience istiod accepts (`--audience istio-ca` of `kubectl create token`).
pub const ISTIO_CA_AUDIENCE: &str = "istio-ca";

/// Largest token accepted; real ServiceAccount tokens are about 1 KiB.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A token that passed [`check`]. Its `Debug` output never shows the token.
#[derive(Clone, PartialEq, Eq)]
pub struct IstioToken {
    secret: String,
    /// `sub`: `system:serviceaccount:<namespace>:<name>`.
    pub subject: String,
    /// `exp`.
    pub expires_at: UtcDateTime,
}

impl IstioToken {
    /// The token itself, to be written into the VM's files and nowhere else.
    pub fn expose_secret(&self) -> &str {
        &self.secret
    }
}

impl fmt::Debug for IstioToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IstioToken")
            .field("secret", &"<redacted>")
            .field("subject", &self.subject)
            .field("expires_at", &rfc3339(self.expires_at))
            .finish()
    }
}

/// Why a token cannot be used. The messages name claims, never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is empty")]
    Empty,
    #[error("the token is {0} bytes, larger than any ServiceAccount token")]
    TooLarge(usize),
    #[error("the token is not a JWT (three base64url parts separated by dots): {0}")]
    NotJwt(&'static str),
    #[error("the token's payload is not a JSON object of claims: {0}")]
    BadClaims(String),
    #[error("the token's audience is {found}, not `istio-ca`")]
    Audience { found: String },
    #[error("the token is for {found}, not for the VM's ServiceAccount {expected}")]
    Subject { found: String, expected: String },
    #[error("the token has no expiry (`exp`); istiod only accepts bound ServiceAccount tokens")]
    NoExpiry,
    #[error("the token expired at {}", rfc3339(*.expired_at))]
    Expired { expired_at: UtcDateTime },
    #[error("the token is not valid before {}", rfc3339(*.not_before))]
    NotYetValid { not_before: UtcDateTime },
    #[error(
        "the token expires at {} (in {}), sooner than the {} a VM needs to boot and use it",
        rfc3339(*.expires_at),
        human_duration(*.remaining),
        human_duration(*.minimum)
    )]
    ExpiresTooSoon {
        expires_at: UtcDateTime,
        remaining: Duration,
        minimum: Duration,
    },
}

impl TokenError {
    pub fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::InvalidInput
    }
}

impl TokenError {
    /// How to get a good token, for the group's ServiceAccount.
    pub fn hint(namespace: &str, service_account: &str) -> String {
        format!(
            "create one with `kubectl create token {service_account} -n {namespace} --audience {ISTIO_CA_AUDIENCE} --duration 1h`"
        )
    }
}

/// The subject of a ServiceAccount's tokens.
pub fn service_account_subject(namespace: &str, service_account: &str) -> String {
    format!("system:serviceaccount:{namespace}:{service_account}")
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    nbf: Option<i64>,
}

/// `aud` is a string or a list of strings (RFC 7519 §4.1.3).
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Checks `raw` (surrounding whitespace ignored) as a token for `expected_subject`, valid at
/// `now` and for at least `min_validity` after it. See the module docs: no signature check.
pub fn check(
    raw: &str,
    expected_subject: &str,
    now: UtcDateTime,
    min_validity: Duration,
) -> Result<IstioToken, TokenError> {
    let token = raw.trim();
    if token.is_empty() {
        return Err(TokenError::Empty);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge(token.len()));
    }
    // Only base64url and dots: this also keeps the token from carrying anything into the
    // YAML or shell around it.
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(TokenError::NotJwt("it has characters outside base64url"));
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = parts[..] else {
        return Err(TokenError::NotJwt("it does not have three parts"));
    };
    if header.is_empty() || payload.is_empty() || signature.is_empty() {
        return Err(TokenError::NotJwt("a part is empty"));
    }
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::NotJwt("its header is not base64url"))?;
    if !serde_json::from_slice::<serde_json::Value>(&header).is_ok_and(|h| h.is_object()) {
        return Err(TokenError::NotJwt("its header is not a JSON object"));
    }
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::NotJwt("its payload is not base64url"))?;
    // serde's message names the field and type at fault, never the payload's values.
    let claims: Claims =
        serde_json::from_slice(&payload).map_err(|e| TokenError::BadClaims(e.to_string()))?;

    let audiences = match claims.aud {
        Some(Audience::One(a)) => vec![a],
        Some(Audience::Many(a)) => a,
        None => Vec::new(),
    };
    if !audiences.iter().any(|a| a == ISTIO_CA_AUDIENCE) {
        return Err(TokenError::Audience {
            found: if audiences.is_empty() {
                "missing".to_owned()
            } else {
                audiences
                    .iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        });
    }
    let subject = claims.sub.unwrap_or_default();
    if subject != expected_subject {
        return Err(TokenError::Subject {
            found: if subject.is_empty() {
                "no subject".to_owned()
            } else {
                format!("`{subject}`")
            },
            expected: format!("`{expected_subject}`"),
        });
    }
    // Claims are whole seconds: so is the time they are compared with.
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let expires_at = claims_time(claims.exp.ok_or(TokenError::NoExpiry)?, "exp")?;
    if expires_at <= now {
        return Err(TokenError::Expired {
            expired_at: expires_at,
        });
    }
    if let Some(not_before) = claims.nbf {
        let not_before = claims_time(not_before, "nbf")?;
        if not_before > now {
            return Err(TokenError::NotYetValid { not_before });
        }
    }
    let remaining = Duration::try_from(expires_at - now).unwrap_or_default();
    if remaining < min_validity {
        return Err(TokenError::ExpiresTooSoon {
            expires_at,
            remaining,
            minimum: min_validity,
        });
    }
    Ok(IstioToken {
        secret: token.to_owned(),
        subject,
        expires_at,
    })
}

/// A claim of seconds since the Unix epoch (RFC 7519's NumericDate) as a time.
fn claims_time(secs: i64, claim: &str) -> Result<UtcDateTime, TokenError> {
    UtcDateTime::from_unix_timestamp(secs)
        .map_err(|_| TokenError::BadClaims(format!("`{claim}` is out of range")))
}

/// An unsigned JWT with the given claims, for tests (meshvm's and its users'): it passes
/// [`check`] but istiod would reject it.
pub fn unsigned_test_token(claims: &serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":"meshvm-test"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signature = URL_SAFE_NO_PAD.encode(b"not a signature");
    format!("{header}.{payload}.{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;
    const SUB: &str = "system:serviceaccount:vm-apps:tester";

    fn at(secs: i64) -> UtcDateTime {
        UtcDateTime::from_unix_timestamp(secs).unwrap()
    }

    fn token(claims: serde_json::Value) -> String {
        unsigned_test_token(&claims)
    }

    fn check_at_now(raw: &str) -> Result<IstioToken, TokenError> {
        check(raw, SUB, at(NOW), Duration::from_secs(15 * 60))
    }

    #[test]
    fn accepts_a_good_token_with_either_audience_form() {
        for aud in [json!("istio-ca"), json!(["other", "istio-ca"])] {
            let raw = token(json!({"aud": aud, "sub": SUB, "exp": NOW + 3600, "iat": NOW}));
            let t = check_at_now(&format!("  {raw}\n")).unwrap();
            assert_eq!(t.expose_secret(), raw, "whitespace around it is dropped");
            assert_eq!(t.expires_at, at(NOW + 3600));
        }
    }

    #[test]
    fn rejects_bad_tokens_with_clear_messages() {
        let good = json!({"aud": ["istio-ca"], "sub": SUB, "exp": NOW + 3600});
        let with = |k: &str, v: serde_json::Value| {
            let mut c = good.clone();
            c[k] = v;
            token(c)
        };
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "the token is empty"),
            (
                "abc".into(),
                "not a JWT (three base64url parts separated by dots): it does not have three parts",
            ),
            ("a b.c.d".into(), "characters outside base64url"),
            ("e30..c2ln".into(), "a part is empty"),
            ("bm90IGpzb24.e30.c2ln".into(), "header is not a JSON object"),
            (
                format!("e30.{}.c2ln", URL_SAFE_NO_PAD.encode("[1]")),
                "payload is not a JSON object of claims",
            ),
            (
                with("aud", json!(["kubernetes.default.svc"])),
                "audience is `kubernetes.default.svc`, not `istio-ca`",
            ),
            (
                with("aud", json!(null)),
                "audience is missing, not `istio-ca`",
            ),
            (
                with("sub", json!("system:serviceaccount:default:default")),
                "the token is for `system:serviceaccount:default:default`, not for the VM's ServiceAccount `system:serviceaccount:vm-apps:tester`",
            ),
            (with("exp", json!(null)), "no expiry"),
            (with("exp", json!(i64::MAX)), "`exp` is out of range"),
            (
                with("exp", json!(NOW - 1)),
                "the token expired at 2027-01-15T07:59:59Z",
            ),
            (
                with("nbf", json!(NOW + 60)),
                "not valid before 2027-01-15T08:01:00Z",
            ),
            (
                with("exp", json!(NOW + 600)),
                "the token expires at 2027-01-15T08:10:00Z (in 10m), sooner than the 15m a VM needs",
            ),
        ];
        for (raw, expected) in cases {
            let err = check_at_now(&raw).unwrap_err().to_string();
            assert!(err.contains(expected), "{raw}: {err}");
            if raw.len() > 10 {
                assert!(!err.contains(&raw), "the token leaks into {err}");
            }
        }
    }

    #[test]
    fn debug_output_hides_the_token() {
        let raw = token(json!({"aud": "istio-ca", "sub": SUB, "exp": NOW + 3600}));
        let t = check_at_now(&raw).unwrap();
        let shown = format!("{t:?}");
        assert!(
            !shown.contains(&raw) && shown.contains("<redacted>"),
            "{shown}"
        );
    }
}
