//! The broker's wire protocol: `POST /v1/join` with a JSON [`JoinRequest`]; `200` with a
//! [`JoinResponse`], or an error status with a [`Refusal`] (`{"error": code, "reason": …}`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::spec::JoinMethod;

/// The largest request body the broker reads (an AWS document and signature, or a GCE token,
/// fit many times over).
pub const MAX_BODY: usize = 16 * 1024;

/// A VM's request: the group it wants to join, a fresh nonce and its own clock's time
/// (replay protection), and its proof of identity.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinRequest {
    pub namespace: String,
    pub group: String,
    /// 16 to 64 characters of `[A-Za-z0-9_-]`, new for every request.
    pub nonce: String,
    /// Seconds since the Unix epoch when the request was made.
    pub timestamp: i64,
    pub proof: Proof,
}

impl fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinRequest")
            .field("namespace", &self.namespace)
            .field("group", &self.group)
            .field("nonce", &self.nonce)
            .field("timestamp", &self.timestamp)
            .field("proof", &self.proof)
            .finish()
    }
}

/// A proof of identity. Its secrets never reach a `Debug` output or a message.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Proof {
    /// A join token from `meshvm join-token create`.
    JoinToken { token: String },
    /// The EC2 instance identity document, base64 of its bytes exactly as IMDS served them
    /// (`base64 -w0` on the VM: no JSON escaping in shell), and its base64 RSA-SHA256
    /// `signature` (`/latest/dynamic/instance-identity/signature`).
    Aws { document: String, signature: String },
    /// The EC2 instance identity document in its PKCS#7 form
    /// (`/latest/dynamic/instance-identity/rsa2048`, base64 as IMDS serves it): the document
    /// is inside, signed with the region's RSA-2048 certificate.
    AwsRsa2048 { pkcs7: String },
    /// The GCE instance identity token (`format=full`, audience the broker's URL).
    Gcp { jwt: String },
    /// The Azure IMDS attested document's `signature` (base64 PKCS#7), fetched with the
    /// request's nonce (`/metadata/attested/document?nonce=…`).
    Azure { signature: String },
}

impl Proof {
    pub fn method(&self) -> JoinMethod {
        match self {
            Proof::JoinToken { .. } => JoinMethod::JoinToken,
            Proof::Aws { .. } | Proof::AwsRsa2048 { .. } => JoinMethod::Aws,
            Proof::Gcp { .. } => JoinMethod::Gcp,
            Proof::Azure { .. } => JoinMethod::Azure,
        }
    }
}

impl fmt::Debug for Proof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Proof({}, redacted)", self.method().as_str())
    }
}

/// What the broker returns: the istio-token and what the VM needs that is not in its
/// user-data.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinResponse {
    /// The ServiceAccount token (audience `istio-ca`), for `/var/run/secrets/tokens/istio-token`.
    pub token: String,
    /// When the token expires (RFC 3339, as the TokenRequest API says).
    pub expiration_timestamp: String,
    pub namespace: String,
    pub group: String,
    pub service_account: String,
    /// The fleet's VM at the proven address or name (static groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

impl fmt::Debug for JoinResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinResponse")
            .field("token", &"(redacted)")
            .field("expiration_timestamp", &self.expiration_timestamp)
            .field("namespace", &self.namespace)
            .field("group", &self.group)
            .field("service_account", &self.service_account)
            .field("instance", &self.instance)
            .finish()
    }
}

/// The broker's decision to issue a token: for which ServiceAccount, and who asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub namespace: String,
    pub group: String,
    pub service_account: String,
    pub instance: Option<String>,
    /// The proven identity, for the audit line (`aws:ACCOUNT/REGION/INSTANCE`, `join-token:ID`,
    /// …); never a secret.
    pub identity: String,
}

/// Why a request was refused: a stable code (for scripts and the audit line) and a reason an
/// operator can act on. Never holds a secret of the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    #[serde(rename = "error")]
    pub code: RefusalCode,
    pub reason: String,
}

impl Refusal {
    pub fn new(code: RefusalCode, reason: impl Into<String>) -> Refusal {
        Refusal {
            code,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.reason)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefusalCode {
    /// The body is not a join request (JSON, fields, sizes).
    BadRequest,
    /// The body is larger than [`MAX_BODY`].
    TooLarge,
    /// The timestamp is too old or in the future.
    Stale,
    /// The nonce (or the one-time proof) was seen before.
    Replayed,
    /// Too many requests from this address.
    RateLimited,
    /// The group is not in the policy.
    UnknownGroup,
    /// The group joins by another method.
    WrongMethod,
    /// The proof does not verify (signature, key, format).
    BadProof,
    /// The proof has expired (a join token past its TTL, a GCE token past `exp`).
    Expired,
    /// The join token is unknown, revoked or used up.
    BadToken,
    /// The proof is valid but the policy does not let that identity into the group.
    Forbidden,
    /// The broker could not get a token from Kubernetes.
    Upstream,
}

impl RefusalCode {
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalCode::BadRequest => "bad-request",
            RefusalCode::TooLarge => "too-large",
            RefusalCode::Stale => "stale",
            RefusalCode::Replayed => "replayed",
            RefusalCode::RateLimited => "rate-limited",
            RefusalCode::UnknownGroup => "unknown-group",
            RefusalCode::WrongMethod => "wrong-method",
            RefusalCode::BadProof => "bad-proof",
            RefusalCode::Expired => "expired",
            RefusalCode::BadToken => "bad-token",
            RefusalCode::Forbidden => "forbidden",
            RefusalCode::Upstream => "upstream",
        }
    }

    /// The HTTP status of a refusal.
    pub fn http_status(self) -> u16 {
        match self {
            RefusalCode::BadRequest => 400,
            RefusalCode::TooLarge => 413,
            RefusalCode::RateLimited => 429,
            RefusalCode::Upstream => 502,
            RefusalCode::UnknownGroup
            | RefusalCode::WrongMethod
            | RefusalCode::Forbidden
            | RefusalCode::Stale
            | RefusalCode::Replayed => 403,
            RefusalCode::BadProof | RefusalCode::Expired | RefusalCode::BadToken => 401,
        }
    }
}

/// Reads a request body: bounded, JSON, every field known.
pub fn parse_request(body: &[u8]) -> Result<JoinRequest, Refusal> {
    if body.len() > MAX_BODY {
        return Err(Refusal::new(
            RefusalCode::TooLarge,
            format!(
                "the request has {} bytes, at most {MAX_BODY} are read",
                body.len()
            ),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        Refusal::new(
            RefusalCode::BadRequest,
            format!("not a join request: {}", json_error(&e)),
        )
    })
}

/// serde_json's error without the text it quotes from the input: its kind and position.
pub(crate) fn json_error(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "cannot read",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "a field is missing, unknown or of the wrong type",
        serde_json::error::Category::Eof => "the JSON ends early",
    };
    format!("{what} (line {}, column {})", e.line(), e.column())
}

/// The checks every request passes first: names, nonce and timestamp.
pub fn check_request(req: &JoinRequest, now: i64, max_age: i64) -> Result<(), Refusal> {
    let bad = |what: String| Err(Refusal::new(RefusalCode::BadRequest, what));
    for (field, value) in [("namespace", &req.namespace), ("group", &req.group)] {
        if crate::spec::names::dns1123_label(value).is_err() {
            return bad(format!("`{field}` is not a Kubernetes name"));
        }
    }
    let nonce_ok = (16..=64).contains(&req.nonce.len())
        && req
            .nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !nonce_ok {
        return bad("`nonce` must be 16 to 64 characters of [A-Za-z0-9_-]".into());
    }
    let age = now.saturating_sub(req.timestamp);
    if age > max_age || age < -max_age {
        return Err(Refusal::new(
            RefusalCode::Stale,
            format!(
                "the request's timestamp is {age}s from the broker's clock, at most {max_age}s \
                 are accepted: check the VM's clock (NTP)"
            ),
        ));
    }
    Ok(())
}
