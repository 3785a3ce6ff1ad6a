//! Where the GitOps tree goes: a local repository, or a remote one reached through a local
//! cache clone. Also the one place that knows how Git URLs look (for redaction, the cache
//! name, and the SSH host and port checked against known_hosts).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::GitError;

/// The repository sync writes to, as the user named it (`--repo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A repository on this machine, bare or not; created (bare) when missing.
    Path(PathBuf),
    /// A remote repository; meshvm keeps a bare cache clone of it and pushes from there.
    Url(String),
}

impl Target {
    /// Reads `--repo`: `ssh://`, `git://`, `http(s)://`, `file://` and scp-like `user@host:path`
    /// are URLs; anything else is a path. A URL with a password in it is refused: secrets go in
    /// environment variables, never on command lines (which other users and CI logs can see).
    pub fn parse(spec: &str) -> Result<Target, GitError> {
        if is_url(spec) {
            if url_has_password(spec) {
                return Err(GitError::Invalid(format!(
                    "the repository URL {} carries a password; remove it from the URL and put the \
                     token in the MESHVM_GIT_TOKEN environment variable",
                    redact_url(spec)
                )));
            }
            Ok(Target::Url(spec.to_owned()))
        } else {
            Ok(Target::Path(PathBuf::from(spec)))
        }
    }

    /// The name shown to people: the path, or the URL without credentials.
    pub fn display(&self) -> String {
        match self {
            Target::Path(p) => p.display().to_string(),
            Target::Url(u) => redact_url(u),
        }
    }
}

/// True for what Git reads as a URL rather than a local path.
pub fn is_url(spec: &str) -> bool {
    const SCHEMES: [&str; 6] = [
        "ssh://",
        "git://",
        "http://",
        "https://",
        "file://",
        "git+ssh://",
    ];
    if SCHEMES.iter().any(|s| spec.starts_with(s)) {
        return true;
    }
    scp_like(spec).is_some()
}

/// `user@host:path` (Git's scp-like syntax) → (user, host). Only with a user: a bare
/// `name:path` is too easily a file name with a colon.
fn scp_like(spec: &str) -> Option<(&str, &str)> {
    let colon = spec.find(':')?;
    let (left, _) = spec.split_at(colon);
    if left.contains('/') {
        return None;
    }
    let (user, host) = left.split_once('@')?;
    (!user.is_empty() && !host.is_empty()).then_some((user, host))
}

fn url_has_password(url: &str) -> bool {
    userinfo(url).is_some_and(|u| u.contains(':'))
}

/// The `user[:password]` part of a `scheme://user[:password]@host/…` URL.
fn userinfo(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    authority.rsplit_once('@').map(|(u, _)| u)
}

/// The URL without any password or token, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.split_once("://"), userinfo(url)) {
        (Some((scheme, rest)), Some(info)) => {
            let host_and_path = &rest[info.len() + 1..];
            match info.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host_and_path}"),
                // Over HTTP the user name itself may be a token (GitHub accepts that).
                None if scheme.starts_with("http") => format!("{scheme}://***@{host_and_path}"),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The host and port an SSH URL connects to, as known_hosts names them.
pub fn ssh_host_port(url: &str) -> Option<(String, u16)> {
    if let Some(rest) = url
        .strip_prefix("ssh://")
        .or_else(|| url.strip_prefix("git+ssh://"))
    {
        let authority = rest.split('/').next()?;
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        return Some(split_host_port(hostport, 22));
    }
    if is_url(url) && !url.contains("://") {
        let (_, host) = scp_like(url)?;
        return Some((host.trim_matches(['[', ']']).to_owned(), 22));
    }
    None
}

fn split_host_port(hostport: &str, default: u16) -> (String, u16) {
    if let Some(rest) = hostport.strip_prefix('[') {
        // [v6]:port or [host]:port
        if let Some((host, tail)) = rest.split_once(']') {
            let port = tail
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .unwrap_or(default);
            return (host.to_owned(), port);
        }
    }
    match hostport.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            (host.to_owned(), port.parse().unwrap_or(default))
        }
        _ => (hostport.to_owned(), default),
    }
}

/// The cache clone of `url` below `cache_dir`: one bare repository per URL, named by a hash of
/// the URL (without credentials, so changing a token does not make a new cache).
pub fn cache_path(cache_dir: &Path, url: &str) -> PathBuf {
    let digest = Sha256::digest(redact_url(url).as_bytes());
    let hex: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
    let readable: String = url
        .rsplit(['/', ':'])
        .find(|s| !s.is_empty())
        .unwrap_or("repo")
        .trim_end_matches(".git")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    cache_dir.join(format!("{readable}-{hex}.git"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths() {
        for url in [
            "ssh://git@host/r.git",
            "git@github.com:org/r.git",
            "https://host/r.git",
            "git://127.0.0.1:9418/r.git",
            "file:///srv/r.git",
        ] {
            assert!(is_url(url), "{url}");
        }
        for path in ["meshvm-gitops.git", "./a:b", "/srv/r.git", "dir/x@y:z"] {
            assert!(!is_url(path), "{path}");
        }
    }

    #[test]
    fn passwords_are_refused_and_redacted() {
        assert!(Target::parse("https://u:secret@host/r.git").is_err());
        assert!(Target::parse("https://u@host/r.git").is_ok());
        assert_eq!(
            redact_url("https://u:secret@host/r.git"),
            "https://u:***@host/r.git"
        );
        assert_eq!(redact_url("ssh://git@host/r"), "ssh://git@host/r");
        assert_eq!(redact_url("https://ghp_x@host/r"), "https://***@host/r");
    }

    #[test]
    fn ssh_hosts_and_ports() {
        assert_eq!(
            ssh_host_port("ssh://root@127.0.0.1:2222/srv/r.git"),
            Some(("127.0.0.1".into(), 2222))
        );
        assert_eq!(
            ssh_host_port("git@github.com:o/r.git"),
            Some(("github.com".into(), 22))
        );
        assert_eq!(
            ssh_host_port("ssh://[::1]:2200/r"),
            Some(("::1".into(), 2200))
        );
        assert_eq!(ssh_host_port("https://h/r"), None);
    }

    #[test]
    fn cache_names_are_stable_and_readable() {
        let a = cache_path(Path::new("/c"), "ssh://git@h/org/mesh.git");
        assert!(a.to_str().unwrap().starts_with("/c/mesh-"), "{a:?}");
        assert_eq!(a, cache_path(Path::new("/c"), "ssh://git@h/org/mesh.git"));
        assert_ne!(a, cache_path(Path::new("/c"), "ssh://git@h2/org/mesh.git"));
    }
}
