//! Syntax rules of the names and values that Kubernetes, Istio and the VMs accept.
//! Each returns `Err(reason)` with a sentence a user can act on.

use std::net::IpAddr;

use super::istio_rules;

pub type Check = Result<(), String>;

const LABEL_RULE: &str =
    "lowercase letters, digits and '-', starting and ending with a letter or digit";

/// RFC 1123 label: Namespaces, group and VM names.
pub fn dns1123_label(s: &str) -> Check {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 63 {
        return Err(format!(
            "is {} characters long; at most 63 are allowed",
            s.len()
        ));
    }
    let ok = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("must be a DNS-1123 label: {LABEL_RULE}"))
    }
}

/// RFC 1123 subdomain: labels joined by dots, at most 253 characters.
pub fn dns1123_subdomain(s: &str) -> Check {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 253 {
        return Err(format!(
            "is {} characters long; at most 253 are allowed",
            s.len()
        ));
    }
    if s.split('.').all(|l| dns1123_label(l).is_ok()) {
        Ok(())
    } else {
        Err(format!(
            "must be a DNS-1123 subdomain: dot-separated parts of {LABEL_RULE}"
        ))
    }
}

/// A Kubernetes label value: empty, or up to 63 of `[A-Za-z0-9_.-]`, alphanumeric at both ends.
pub fn label_value(s: &str) -> Check {
    if s.is_empty() {
        return Ok(());
    }
    if s.len() > 63 {
        return Err(format!(
            "is {} characters long; a label value has at most 63",
            s.len()
        ));
    }
    if qualified_part(s) {
        Ok(())
    } else {
        Err("must hold only letters, digits, '-', '_' and '.', and start and end with a letter or digit".into())
    }
}

/// A Kubernetes label or annotation key: `[prefix/]name`, the prefix a DNS subdomain.
pub fn qualified_name(s: &str) -> Check {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(prefix) = prefix {
        dns1123_subdomain(prefix).map_err(|e| format!("its prefix {e}"))?;
    }
    if name.is_empty() || name.len() > 63 || !qualified_part(name) {
        return Err("a key is `[prefix/]name`, the name up to 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit".into());
    }
    Ok(())
}

fn qualified_part(s: &str) -> bool {
    let bytes = s.as_bytes();
    bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// A shell variable name, as cluster.env keys must be.
pub fn env_name(s: &str) -> Check {
    let mut chars = s.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err("must be a variable name: letters, digits and '_', not starting with a digit".into())
    }
}

pub fn ip(s: &str) -> Check {
    s.parse::<IpAddr>()
        .map(|_| ())
        .map_err(|_| "is not an IPv4 or IPv6 address".into())
}

/// An IP address, or a host name as istiod takes a WorkloadEntry's (`ValidateFQDN`: upper case
/// and a trailing dot allowed, the top-level label not all digits).
pub fn ip_or_hostname(s: &str) -> Check {
    if s.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if s.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err("is not a valid IPv4 address".into());
    }
    if s.contains(':') {
        return Err("is not a valid IPv6 address".into());
    }
    istio_rules::fqdn(s)
        .map_err(|why| format!("is neither an IP address nor a host name: it {why}"))
}

/// A port number, 1 to 65535 (istiod's `ValidatePort`).
pub fn port(n: u32) -> Check {
    istio_rules::port(i64::from(n))
}

/// A ServiceEntry host as istiod takes it (`ValidateWildcardDomain`), never `*` alone.
/// Partial wildcards (`*foo.example.com`), which istiod only warns about, are refused by the
/// caller, with the reason.
pub fn service_host(s: &str) -> Check {
    if s == "*" {
        return Err("would capture all traffic: `*` alone is not a host".into());
    }
    istio_rules::wildcard_domain(s)
}

/// A Git branch name, by Git's own rules (libgit2's), and not starting with `-`, which `git`
/// commands would read as an option.
pub fn branch(s: &str) -> Check {
    // libgit2's branch rule (no leading `-`, not `HEAD`, a valid `refs/heads/` name); `@` is
    // what git itself also refuses, since it reads `@` as HEAD.
    if s != "@" && git2::Branch::name_is_valid(s).unwrap_or(false) {
        Ok(())
    } else {
        Err("is not a valid Git branch name".into())
    }
}

/// The first part of a relative path that Git would read as its own `.git` directory: `.git`
/// in any letter case, also with trailing dots (NTFS drops them). Git refuses to write such a
/// path into a tree (`verify_path`), so a sync into it would fail.
pub fn git_dir_component(path: &str) -> Option<&str> {
    path.split('/')
        .find(|part| part.trim_end_matches('.').eq_ignore_ascii_case(".git"))
}

/// A repository address that carries no secret: no password, no user part over HTTP(S) (where
/// the user name itself may be a token, as GitHub accepts), and no query (where tokens go in
/// some Git hosting). The address is committed and pushed, so the secret would be published.
/// The reason never repeats the secret.
pub fn repo_url_without_credentials(url: &str) -> Check {
    let shown = crate::git::target::redact_url(url);
    let shown = shown.split(['?', '#']).next().unwrap_or_default();
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if userinfo.contains(':') {
                return Err(format!("{shown} carries a password"));
            }
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") {
                return Err(format!(
                    "{shown} carries a user part, which over HTTP(S) may be a token"
                ));
            }
        }
        if rest.contains('?') {
            return Err(format!(
                "{shown} has a query part (`?…`), where tokens are passed"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(dns1123_label("tester-1").is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64), "../x"] {
            assert!(dns1123_label(bad).is_err(), "{bad}");
        }
        assert!(qualified_name("app.kubernetes.io/name").is_ok());
        assert!(qualified_name("app").is_ok());
        for bad in ["", "/a", "a/", "Bad_Prefix/x", "a b", "a\nb"] {
            assert!(qualified_name(bad).is_err(), "{bad}");
        }
        assert!(label_value("").is_ok() && label_value("v1.2_3").is_ok());
        for bad in ["it's", "$(id)", "a\nb", "-a", &"a".repeat(64)] {
            assert!(label_value(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses() {
        for good in ["10.0.0.1", "fd00::1", "::1", "vm.example.com"] {
            assert!(ip_or_hostname(good).is_ok(), "{good}");
        }
        for bad in ["10.0.0.300", "1.2.3", "fd00:::1", "a_b.example.com", ""] {
            assert!(ip_or_hostname(bad).is_err(), "{bad}");
        }
        assert!(port(0).is_err() && port(65536).is_err() && port(1).is_ok() && port(65535).is_ok());
        assert!(service_host("*").is_err() && service_host("*.example.com").is_ok());
        assert!(branch("main").is_ok() && branch("a..b").is_err() && branch("x.lock").is_err());
        // Git's rules per component, which a hand-written check missed.
        for bad in ["a.lock/b", "x/.hidden", "-x", "a//b", "a b", "@{x"] {
            assert!(branch(bad).is_err(), "{bad}");
        }
        assert!(branch("release/1.28").is_ok());
    }
}

/// The edges of each rule: the longest name allowed and the shortest refused, and each way a
/// name can be wrong on its own (found by `cargo xtask mutants`).
#[cfg(test)]
mod edges {
    use super::*;

    #[test]
    fn lengths_at_the_limit_pass_and_one_more_fails() {
        let label = |n: usize| "a".repeat(n);
        assert!(dns1123_label(&label(63)).is_ok());
        assert!(label_value(&label(63)).is_ok());
        assert!(label_value(&label(64)).is_err());
        assert!(qualified_name(&label(63)).is_ok());
        assert!(qualified_name(&format!("example.com/{}", label(63))).is_ok());
        assert!(qualified_name(&label(64)).is_err());
        // 4 × 63 + 3 dots = 255; two characters less is the limit.
        let host = |n: usize| [label(63), label(63), label(63), label(n)].join(".");
        assert!(dns1123_subdomain(&host(61)).is_ok());
        assert!(dns1123_subdomain(&host(62)).is_err());
    }

    #[test]
    fn shell_variable_names() {
        for good in ["A", "_", "ISTIO_META_X1", "a_b"] {
            assert!(env_name(good).is_ok(), "{good}");
        }
        for bad in ["", "1A", "A-B", "A$B", "A B", "A=B", "$(id)", "Ä"] {
            assert!(env_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses_and_hosts() {
        assert!(ip("10.0.0.1").is_ok() && ip("fd00::1").is_ok());
        for bad in ["", "10.0.0.256", "vm.example.com", "10.0.0.1/32"] {
            assert!(ip(bad).is_err(), "{bad}");
        }
        assert!(service_host("a.example.com").is_ok() && service_host("*.*").is_err());
    }

    #[test]
    fn branch_names_git_refuses() {
        for good in ["main", "feature/x-1", "release-1.2"] {
            assert!(branch(good).is_ok(), "{good}");
        }
        for bad in [
            "", "-x", "/x", "x/", "x.", "a//b", "a@{b", "@", "HEAD", "a b", "a~b", "a^b", "a:b",
            "a?b", "a*b", "a[b", "a\\b", "a\u{1}b", "a\u{7f}b",
        ] {
            assert!(branch(bad).is_err(), "{bad:?}");
        }
    }
}

/// True for an address in the ranges reserved for documentation (RFC 5737: 192.0.2.0/24,
/// 198.51.100.0/24, 203.0.113.0/24; RFC 3849: 2001:db8::/32), which examples use.
pub fn is_documentation_address(s: &str) -> bool {
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => {
            let [a, b, c, _] = v4.octets();
            matches!((a, b, c), (192, 0, 2) | (198, 51, 100) | (203, 0, 113))
        }
        Ok(IpAddr::V6(v6)) => v6.segments()[..2] == [0x2001, 0x0db8],
        Err(_) => false,
    }
}

/// True for a URL whose host is `example.com`, `example.org`, `example.net` or below them
/// (RFC 2606), which examples use.
pub fn is_example_domain_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = host
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    ["example.com", "example.org", "example.net"]
        .iter()
        .any(|d| host == *d || host.ends_with(&format!(".{d}")))
}
