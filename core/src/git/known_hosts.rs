//! SSH host key checks: a pinned fingerprint, or OpenSSH known_hosts files.
//!
//! meshvm checks host keys itself rather than through libgit2's pass-through, because libgit2
//! reads only `~/.ssh/known_hosts` and reports every failure as "invalid or unknown remote ssh
//! hostkey"; users need to know which key was offered, which files were read, and how to trust it.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The OpenSSH fingerprint of a key blob: `SHA256:` and unpadded base64 of its SHA-256.
pub fn fingerprint(key_blob: &[u8]) -> String {
    format!(
        "SHA256:{}",
        STANDARD_NO_PAD.encode(Sha256::digest(key_blob))
    )
}

/// Normalizes a user's pinned fingerprint (`SHA256:…`, padding optional) for comparison;
/// `None` when it is not one.
pub fn parse_fingerprint(text: &str) -> Option<String> {
    let b64 = text.trim().strip_prefix("SHA256:")?.trim_end_matches('=');
    let bytes = STANDARD_NO_PAD.decode(b64).ok()?;
    (bytes.len() == 32).then(|| format!("SHA256:{b64}"))
}

/// What the known_hosts files say about a host's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A line names the host with this very key.
    Match,
    /// The key is marked `@revoked`.
    Revoked { file: PathBuf, line: usize },
    /// The host is known with another key of the same type: possibly an attack.
    Changed { file: PathBuf, line: usize },
    /// Nothing names the host (or the files are missing).
    Unknown,
}

/// Checks `key_blob` (SSH wire format, as in a known_hosts line) of type `key_type` (e.g.
/// `ssh-ed25519`) for `host` on `port` against `files`; missing files count as empty.
pub fn check(files: &[PathBuf], host: &str, port: u16, key_type: &str, key_blob: &[u8]) -> Verdict {
    let name = if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    };
    let mut verdict = Verdict::Unknown;
    for file in files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            let Some(entry) = Entry::parse(line) else {
                continue;
            };
            if !entry.names(&name) {
                continue;
            }
            let same_key = entry.key == key_blob;
            match entry.marker {
                Some("@revoked") if same_key => {
                    return Verdict::Revoked {
                        file: file.clone(),
                        line: i + 1,
                    };
                }
                Some(_) => {} // @cert-authority: certificates are not supported; ignore
                None if same_key => verdict = Verdict::Match,
                None if entry.key_type == key_type && verdict == Verdict::Unknown => {
                    verdict = Verdict::Changed {
                        file: file.clone(),
                        line: i + 1,
                    };
                }
                None => {}
            }
        }
    }
    verdict
}

/// The known_hosts files read when the user names none: the user's, then the system's.
pub fn default_files(home: Option<&Path>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(home) = home {
        files.push(home.join(".ssh/known_hosts"));
    }
    files.push(PathBuf::from("/etc/ssh/ssh_known_hosts"));
    files
}

struct Entry<'a> {
    marker: Option<&'a str>,
    patterns: &'a str,
    key_type: &'a str,
    key: Vec<u8>,
}

impl<'a> Entry<'a> {
    fn parse(line: &'a str) -> Option<Entry<'a>> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next()?;
        let marker = if first.starts_with('@') {
            let m = first;
            first = fields.next()?;
            Some(m)
        } else {
            None
        };
        let key_type = fields.next()?;
        let key = STANDARD.decode(fields.next()?).ok()?;
        Some(Entry {
            marker,
            patterns: first,
            key_type,
            key,
        })
    }

    /// OpenSSH's rule: some pattern matches and no negated pattern does.
    fn names(&self, name: &str) -> bool {
        if let Some(hashed) = self.patterns.strip_prefix("|1|") {
            return hashed_matches(hashed, name);
        }
        let mut matched = false;
        for pattern in self.patterns.split(',') {
            match pattern.strip_prefix('!') {
                Some(neg) if wildcard(neg, name) => return false,
                Some(_) => {}
                None => matched |= wildcard(pattern, name),
            }
        }
        matched
    }
}

/// `|1|salt|hash`: HMAC-SHA1 of the host name keyed with the salt (`HashKnownHosts yes`).
fn hashed_matches(salt_and_hash: &str, name: &str) -> bool {
    let Some((salt, hash)) = salt_and_hash.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (STANDARD.decode(salt), STANDARD.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// `*` and `?` globbing, case-insensitive as host names are.
fn wildcard(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIGl8m0Vt2q0Q7Ihm3jS8q2k7Zg2x0G3xq0xkq5m0Vt2q";
    const OTHER: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIPnvyZf8wX2yHq2dTQKq3kJ4dC8Wv8Yd3Kx9a0b1c2d3";

    fn blob(b64: &str) -> Vec<u8> {
        STANDARD.decode(b64).unwrap()
    }

    fn verdict(lines: &str, host: &str, port: u16, key: &str) -> Verdict {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        std::fs::write(&file, lines).unwrap();
        match check(&[file], host, port, "ssh-ed25519", &blob(key)) {
            Verdict::Changed { line, .. } => Verdict::Changed {
                file: PathBuf::new(),
                line,
            },
            Verdict::Revoked { line, .. } => Verdict::Revoked {
                file: PathBuf::new(),
                line,
            },
            v => v,
        }
    }

    #[test]
    fn plain_ported_wildcard_and_negated_names() {
        let kh = format!(
            "# comment\nexample.org,192.0.2.1 ssh-ed25519 {KEY}\n[127.0.0.1]:2222 ssh-ed25519 {KEY} c\n*.corp,!bad.corp ssh-ed25519 {KEY}\n"
        );
        assert_eq!(verdict(&kh, "example.org", 22, KEY), Verdict::Match);
        assert_eq!(verdict(&kh, "192.0.2.1", 22, KEY), Verdict::Match);
        assert_eq!(verdict(&kh, "127.0.0.1", 2222, KEY), Verdict::Match);
        assert_eq!(verdict(&kh, "127.0.0.1", 22, KEY), Verdict::Unknown);
        assert_eq!(verdict(&kh, "git.corp", 22, KEY), Verdict::Match);
        assert_eq!(verdict(&kh, "bad.corp", 22, KEY), Verdict::Unknown);
        assert_eq!(
            verdict(&kh, "example.org", 22, OTHER),
            Verdict::Changed {
                file: PathBuf::new(),
                line: 2
            }
        );
    }

    #[test]
    fn hashed_names_and_revocation() {
        // `ssh-keygen -H` format: |1|base64(salt)|base64(HMAC-SHA1(salt, name)).
        let salt = [7u8; 20];
        let mut mac = Hmac::<Sha1>::new_from_slice(&salt).unwrap();
        mac.update(b"[10.1.2.3]:2200");
        let hash = mac.finalize().into_bytes();
        let kh = format!(
            "|1|{}|{} ssh-ed25519 {KEY}\n@revoked * ssh-ed25519 {OTHER}\n",
            STANDARD.encode(salt),
            STANDARD.encode(hash)
        );
        assert_eq!(verdict(&kh, "10.1.2.3", 2200, KEY), Verdict::Match);
        assert_eq!(verdict(&kh, "10.1.2.3", 22, KEY), Verdict::Unknown);
        assert_eq!(
            verdict(&kh, "anything", 22, OTHER),
            Verdict::Revoked {
                file: PathBuf::new(),
                line: 2
            }
        );
    }

    #[test]
    fn fingerprints() {
        let fp = fingerprint(&blob(KEY));
        assert!(fp.starts_with("SHA256:") && !fp.ends_with('='), "{fp}");
        assert_eq!(parse_fingerprint(&fp), Some(fp.clone()));
        assert_eq!(parse_fingerprint(&format!("{fp}=")), Some(fp));
        assert_eq!(parse_fingerprint("MD5:aa"), None);
        assert_eq!(parse_fingerprint("SHA256:abc"), None);
    }
}
