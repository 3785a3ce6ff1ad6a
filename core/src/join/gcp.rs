//! The GCE instance identity token: a JWT (RS256) that Google signs, with the instance's
//! project, zone, ID and name (`format=full`). Verified offline against configured keys
//! (Google's `oauth2/v1/certs`, a file for air-gapped clusters).

use base64::Engine;
use serde::Deserialize;

use super::keys::KeySet;
use super::protocol::{Refusal, RefusalCode};

/// The largest token accepted (a real one is about 1 KiB).
pub const MAX_JWT: usize = 8192;

/// Google's issuers.
const ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];

/// The longest lifetime a GCE identity token has (one hour).
const MAX_LIFETIME: i64 = 3600;

/// Clock skew allowed on `iat`.
const SKEW: i64 = 60;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub google: Google,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Google {
    pub compute_engine: ComputeEngine,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ComputeEngine {
    pub project_id: String,
    pub zone: String,
    pub instance_id: String,
    pub instance_name: String,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

fn bad(reason: impl Into<String>) -> Refusal {
    Refusal::new(RefusalCode::BadProof, reason)
}

fn part<T: for<'de> Deserialize<'de>>(b64: &str, what: &str) -> Result<T, Refusal> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| bad(format!("the token's {what} is not base64url")))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        bad(format!(
            "the token's {what} is not as Google writes it: {}",
            super::protocol::json_error(&e)
        ))
    })
}

/// Verifies the token's signature, issuer, audience and times; its claims.
pub fn verify(jwt: &str, keys: &KeySet, audience: &str, now: i64) -> Result<Claims, Refusal> {
    if jwt.len() > MAX_JWT {
        return Err(bad(format!(
            "the token has {} bytes, at most {MAX_JWT}",
            jwt.len()
        )));
    }
    let mut parts = jwt.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("the token is not a JWT (three dot-separated parts)"));
    };
    let header: Header = part(h, "header")?;
    if header.alg != "RS256" {
        return Err(bad(format!(
            "the token is signed with {:?}, only RS256 is accepted",
            header.alg
        )));
    }
    let kid = header.kid.unwrap_or_default();
    let key = keys.get(&kid).ok_or_else(|| {
        bad(format!(
            "the token's key {kid:?} is not among the broker's Google keys (--gcp-certs): \
             refresh them from https://www.googleapis.com/oauth2/v1/certs"
        ))
    })?;
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| bad("the token's signature is not base64url"))?;
    let signed = &jwt[..h.len() + 1 + c.len()];
    if !key.verify_sha256(signed.as_bytes(), &sig) {
        return Err(bad("the token's signature does not verify"));
    }
    let claims: Claims = part(c, "claims")?;
    if !ISSUERS.contains(&claims.iss.as_str()) {
        return Err(bad(format!(
            "the token's issuer {:?} is not Google",
            claims.iss
        )));
    }
    if claims.aud != audience {
        return Err(bad(format!(
            "the token's audience {:?} is not this broker's ({audience:?}): request it with \
             audience={audience}&format=full",
            claims.aud
        )));
    }
    if claims.exp <= now {
        return Err(Refusal::new(
            RefusalCode::Expired,
            format!("the token expired {}s ago", now - claims.exp),
        ));
    }
    if claims.iat > now + SKEW || claims.exp - claims.iat > MAX_LIFETIME {
        return Err(bad(
            "the token's times are not a GCE identity token's (iat in the future, or longer than 1h)",
        ));
    }
    Ok(claims)
}
