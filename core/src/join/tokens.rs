//! Join tokens for on-premises VMs (`meshvm join-token create|list|revoke`): random bearer
//! tokens bound to one group (and optionally one VM), with a TTL and a number of uses. Only
//! their SHA-256 is stored; the token itself is shown once, at creation. The book is data:
//! the caller brings the randomness and the clock, and stores it (a file or a Secret).

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::protocol::{Refusal, RefusalCode};

/// The prefix of every join token, so that scanners and people can tell what one is.
pub const PREFIX: &str = "mvjt";

/// Random bytes a token needs: 6 for its public ID, 32 for its secret.
pub const RANDOM_BYTES: usize = 38;

/// The stored book of join tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenBook {
    #[serde(default)]
    pub tokens: Vec<Entry>,
}

/// One token, without the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Entry {
    /// The public ID (12 hex digits): in the token, the list and the audit lines.
    pub id: String,
    /// SHA-256 of the whole token, hex.
    pub sha256: String,
    pub namespace: String,
    pub group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
    /// Seconds since the epoch.
    pub created: i64,
    pub expires: i64,
    pub uses_left: u32,
}

/// What `create` makes: the token (shown once) and its entry.
pub struct Created {
    pub token: String,
    pub entry: Entry,
}

impl std::fmt::Debug for Created {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Created")
            .field("token", &"(redacted)")
            .field("entry", &self.entry)
            .finish()
    }
}

pub fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The public ID of a well-formed token: `mvjt_<12 hex>_<43 base64url>`.
fn token_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(PREFIX)?.strip_prefix('_')?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let secret_ok = secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some(id)
}

fn bad_token(reason: impl Into<String>) -> Refusal {
    Refusal::new(RefusalCode::BadToken, reason)
}

/// Equal hex digests, in time independent of where they differ.
fn same_digest(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl TokenBook {
    /// Makes a token for a group from `random` bytes (from the system's CSPRNG).
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &mut self,
        random: [u8; RANDOM_BYTES],
        namespace: &str,
        group: &str,
        vm: Option<&str>,
        ttl_seconds: i64,
        uses: u32,
        now: i64,
    ) -> Created {
        let id: String = random[..6].iter().map(|b| format!("{b:02x}")).collect();
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&random[6..]);
        let token = format!("{PREFIX}_{id}_{secret}");
        let entry = Entry {
            id,
            sha256: sha256_hex(&token),
            namespace: namespace.to_owned(),
            group: group.to_owned(),
            vm: vm.map(str::to_owned),
            created: now,
            expires: now.saturating_add(ttl_seconds),
            uses_left: uses,
        };
        self.tokens.push(entry.clone());
        Created { token, entry }
    }

    /// The entry of a token that may be used now.
    pub fn check(&self, token: &str, now: i64) -> Result<&Entry, Refusal> {
        let id = token_id(token).ok_or_else(|| bad_token("not a meshvm join token"))?;
        let entry = self
            .tokens
            .iter()
            .find(|e| e.id == id && same_digest(&e.sha256, &sha256_hex(token)))
            .ok_or_else(|| {
                bad_token(format!(
                    "join token {id} is unknown or revoked: create one with `meshvm join-token \
                     create`"
                ))
            })?;
        if entry.expires <= now {
            return Err(Refusal::new(
                RefusalCode::Expired,
                format!("join token {id} expired {}s ago", now - entry.expires),
            ));
        }
        if entry.uses_left == 0 {
            return Err(bad_token(format!("join token {id} is used up")));
        }
        Ok(entry)
    }

    /// Uses a token once.
    pub fn consume(&mut self, token: &str, now: i64) -> Result<(), Refusal> {
        let id = self.check(token, now)?.id.clone();
        if let Some(e) = self.tokens.iter_mut().find(|e| e.id == id) {
            e.uses_left -= 1;
        }
        Ok(())
    }

    /// Removes a token by ID; false when there is none.
    pub fn revoke(&mut self, id: &str) -> bool {
        let before = self.tokens.len();
        self.tokens.retain(|e| e.id != id);
        self.tokens.len() != before
    }

    /// Drops the tokens that expired or are used up.
    pub fn prune(&mut self, now: i64) {
        self.tokens.retain(|e| e.expires > now && e.uses_left > 0);
    }
}
