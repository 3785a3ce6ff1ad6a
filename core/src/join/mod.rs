//! The join broker's logic (`meshvm join-server`): who may join which workload group, the
//! proofs a VM offers (a join token, an AWS instance identity document, a GCE identity
//! token, an Azure attested document), the request and response, and the broker's small in-memory guards (replay cache,
//! rate limit). Pure: the clock's reading, the trusted keys and the stored token hashes are
//! passed in; the server in the binary does the I/O (TLS, the TokenRequest, the files).
//!
//! docs/join.md has the protocol and the threat model.

pub mod aws;
pub mod azure;
pub mod cms;
pub mod gcp;
pub mod guard;
pub mod keys;
pub mod policy;
pub mod protocol;
pub mod tokens;

pub use policy::{GroupPolicy, Policy};
pub use protocol::{Grant, JoinRequest, JoinResponse, Proof, Refusal, RefusalCode};

use crate::spec::JoinMethod;

/// What the broker trusts besides the policy: the cloud providers' public keys and its own
/// audience, and how old a request may be.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// AWS's RSA certificates for `/signature`, by region.
    pub aws: keys::KeySet,
    /// AWS's RSA-2048 certificates for `/rsa2048` (PKCS#7), by region.
    pub aws_rsa2048: keys::KeySet,
    /// The roots and issuing CAs of Azure's attested-document signer.
    pub azure: azure::AzureTrust,
    /// Google's signing keys, by key ID.
    pub gcp: keys::KeySet,
    /// The audience the GCE identity tokens must carry (the broker's URL).
    pub gcp_audience: String,
    /// How far a request's timestamp may be from now, in seconds.
    pub max_age: i64,
    /// The oldest an AWS instance's `pendingTime` (its last start) may be, in seconds; `None`
    /// for any. Bounds how long a copied identity document can be replayed.
    pub aws_max_instance_age: Option<i64>,
}

/// Maximum request age (and clock skew) unless configured: five minutes.
pub const DEFAULT_MAX_AGE: i64 = 300;

/// Checks a request against the policy: its freshness, its proof, and that the proven
/// identity may join the group it asks for. A join token is consumed from `tokens` only once
/// everything else passed. `Ok` names the group and VM to issue a token for.
pub fn authorize(
    policy: &Policy,
    trust: &Trust,
    tokens: &mut tokens::TokenBook,
    req: &JoinRequest,
    now: i64,
) -> Result<Grant, Refusal> {
    protocol::check_request(req, now, trust.max_age)?;
    let group = policy.group(&req.namespace, &req.group).ok_or_else(|| {
        Refusal::new(
            RefusalCode::UnknownGroup,
            format!(
                "no workload group {}/{} in the fleet's join policy",
                req.namespace, req.group
            ),
        )
    })?;
    if req.proof.method() != group.method {
        return Err(Refusal::new(
            RefusalCode::WrongMethod,
            format!(
                "group {}/{} joins by `{}`, the request offers `{}`",
                group.namespace,
                group.name,
                group.method.as_str(),
                req.proof.method().as_str()
            ),
        ));
    }
    let grant = match &req.proof {
        Proof::JoinToken { token } => {
            let entry = tokens.check(token, now)?;
            if entry.namespace != group.namespace || entry.group != group.name {
                return Err(Refusal::new(
                    RefusalCode::Forbidden,
                    format!(
                        "join token {} is for group {}/{}, not {}/{}",
                        entry.id, entry.namespace, entry.group, group.namespace, group.name
                    ),
                ));
            }
            let grant = group.grant(format!("join-token:{}", entry.id), entry.vm.clone());
            tokens.consume(token, now)?;
            grant
        }
        Proof::Aws {
            document,
            signature,
        } => {
            let doc = aws::verify(document, signature, &trust.aws)?;
            aws::check_pending_time(&doc, now, trust.aws_max_instance_age)?;
            group.admit_aws(&doc)?
        }
        Proof::AwsRsa2048 { pkcs7 } => {
            let doc = aws::verify_rsa2048(pkcs7, &trust.aws_rsa2048)?;
            aws::check_pending_time(&doc, now, trust.aws_max_instance_age)?;
            group.admit_aws(&doc)?
        }
        Proof::Azure { signature } => {
            let doc = azure::verify(signature, &trust.azure, now)?;
            if doc.nonce != req.nonce {
                return Err(Refusal::new(
                    RefusalCode::BadProof,
                    "the attested document was not fetched for this request: its nonce is not \
                     the request's (fetch it with ?nonce=<the request's nonce>)",
                ));
            }
            group.admit_azure(&doc)?
        }
        Proof::Gcp { jwt } => {
            let claims = gcp::verify(jwt, &trust.gcp, &trust.gcp_audience, now)?;
            group.admit_gcp(&claims)?
        }
    };
    debug_assert!(group.method != JoinMethod::Token);
    Ok(grant)
}

#[cfg(test)]
mod tests;
