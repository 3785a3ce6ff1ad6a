//! The EC2 instance identity document (IID) and its RSA-SHA256 `signature`
//! (`/latest/dynamic/instance-identity/signature`), verified offline against AWS's regional
//! RSA certificate for the region the document names. The signature covers the document's
//! exact bytes, so the document is verified as received and only then read.

use base64::Engine;
use serde::Deserialize;

use super::keys::KeySet;
use super::protocol::{Refusal, RefusalCode};

/// The largest document accepted (a real one is about 500 bytes).
pub const MAX_DOCUMENT: usize = 4096;

/// The fields of an instance identity document the policy uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    pub account_id: String,
    pub region: String,
    pub instance_id: String,
    #[serde(default)]
    pub private_ip: Option<String>,
    #[serde(default)]
    pub pending_time: Option<String>,
}

fn bad(reason: impl Into<String>) -> Refusal {
    Refusal::new(RefusalCode::BadProof, reason)
}

/// Reads a document without verifying it (the verification needs its region first).
pub fn parse_document(document: &str) -> Result<Document, Refusal> {
    if document.len() > MAX_DOCUMENT {
        return Err(bad(format!(
            "the instance identity document has {} bytes, at most {MAX_DOCUMENT}",
            document.len()
        )));
    }
    serde_json::from_str(document).map_err(|e| {
        bad(format!(
            "the instance identity document is not one: {}",
            super::protocol::json_error(&e)
        ))
    })
}

/// Base64 without line breaks or with them, as IMDS and `base64` write it.
fn base64_decode(text: &str, max: usize, what: &str) -> Result<Vec<u8>, Refusal> {
    let compact: String = text.split_ascii_whitespace().collect();
    if compact.len() > max / 3 * 4 + 4 {
        return Err(bad(format!("the {what} has more than {max} bytes")));
    }
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| bad(format!("the {what} is not base64")))
}

/// Verifies `signature` (base64, RSA-SHA256) over `document` (base64 of the document's
/// bytes) with the certificate of the document's region; the verified document.
pub fn verify(document: &str, signature: &str, certs: &KeySet) -> Result<Document, Refusal> {
    let bytes = base64_decode(document, MAX_DOCUMENT, "instance identity document")?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| bad("the instance identity document is not UTF-8"))?;
    let doc = parse_document(text)?;
    let key = certs.get(&doc.region).ok_or_else(|| {
        bad(format!(
            "no AWS certificate is configured for region {:?}: add the region's RSA \
             certificate to the broker's --aws-certs",
            doc.region
        ))
    })?;
    let sig = base64_decode(signature, 1024, "signature")?;
    if !key.verify_sha256(&bytes, &sig) {
        return Err(bad(format!(
            "the instance identity document's signature does not verify with the certificate \
             of region {}",
            doc.region
        )));
    }
    Ok(doc)
}

/// Verifies `pkcs7` (`/latest/dynamic/instance-identity/rsa2048`: base64 of a CMS SignedData
/// holding the document, signed with the region's RSA-2048 certificate) with the certificate
/// of the region the signed document names; the verified document.
pub fn verify_rsa2048(pkcs7: &str, certs: &KeySet) -> Result<Document, Refusal> {
    const WHAT: &str = "rsa2048 signature";
    let signed = super::cms::parse(&super::cms::decode_base64(pkcs7, WHAT)?, WHAT)?;
    if signed.content.len() > MAX_DOCUMENT {
        return Err(bad(format!(
            "the instance identity document has {} bytes, at most {MAX_DOCUMENT}",
            signed.content.len()
        )));
    }
    let text = std::str::from_utf8(&signed.content)
        .map_err(|_| bad("the instance identity document is not UTF-8"))?;
    let doc = parse_document(text)?;
    let key = certs.get(&doc.region).ok_or_else(|| {
        bad(format!(
            "no AWS rsa2048 certificate is configured for region {:?}: add the region's \
             RSA-2048 certificate to the broker's --aws-rsa2048-certs",
            doc.region
        ))
    })?;
    if !signed.verify_with(key) {
        return Err(bad(format!(
            "the instance identity document's rsa2048 signature does not verify with the \
             RSA-2048 certificate of region {}",
            doc.region
        )));
    }
    Ok(doc)
}

/// `pendingTime` (`2016-11-19T16:32:11Z`, as AWS writes it) as Unix seconds.
pub fn pending_time_seconds(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let shape_ok = b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        });
    if !shape_ok {
        return None;
    }
    let n = |r: std::ops::Range<usize>| text[r].parse::<u32>().ok();
    let month = time::Month::try_from(n(5..7)? as u8).ok()?;
    let date = time::Date::from_calendar_date(n(0..4)? as i32, month, n(8..10)? as u8).ok()?;
    let at = date
        .with_hms(n(11..13)? as u8, n(14..16)? as u8, n(17..19)? as u8)
        .ok()?;
    Some(at.assume_utc().unix_timestamp())
}

/// Refuses a verified document whose instance started more than `max_age` seconds before
/// `now` (or, by more than that, after it); nothing is checked without a maximum.
pub fn check_pending_time(doc: &Document, now: i64, max_age: Option<i64>) -> Result<(), Refusal> {
    let Some(max_age) = max_age else {
        return Ok(());
    };
    let text = doc.pending_time.as_deref().unwrap_or_default();
    let started = pending_time_seconds(text).ok_or_else(|| {
        bad(format!(
            "the instance identity document has no valid pendingTime ({text:?}), which the \
             broker's --aws-max-instance-age needs"
        ))
    })?;
    let age = now - started;
    if age > max_age || -age > max_age {
        return Err(Refusal::new(
            RefusalCode::Expired,
            format!(
                "instance {} started at {text}, {age} s ago, more than the broker's \
                 --aws-max-instance-age of {max_age} s: stop and start the instance for a new \
                 identity document, or raise the limit",
                doc.instance_id
            ),
        ));
    }
    Ok(())
}
