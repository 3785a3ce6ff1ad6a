//! Istio's own rules for what a fleet turns into, ported (not copied) from istio/istio at the
//! version pinned in tests/upstream/go.mod:
//!
//! - `pkg/config/protocol`: protocol names, matched without regard to case; an empty one means
//!   "detect it" (sniffing), not TCP;
//! - `pkg/config/labels`: `IsDNS1123Label`, `IsWildcardDNS1123Label` (upper case allowed);
//! - `pkg/config/validation/agent`: `ValidateFQDN`, `ValidateWildcardDomain`,
//!   `ValidatePartialWildCard`, `ValidateIPAddress`, `ValidateIPSubnet`, `ValidatePort`;
//! - `pkg/config/validation`: `ValidatePortName`.
//!
//! Istio's test tables for these functions are data in `fixtures/parity/` and run by
//! `core/tests/parity.rs`. Each function returns `Err(reason)` with a sentence a user can act on.

use std::net::IpAddr;

use super::names::Check;

/// A protocol Istio knows on a service port (`protocol.Instance`, less the internal ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    Grpc,
    GrpcWeb,
    Http,
    HttpProxy,
    Http2,
    Https,
    Tls,
    Mongo,
    Redis,
    MySql,
}

/// The names Istio accepts, as it spells them in messages.
pub const PROTOCOL_NAMES: &[&str] = &[
    "HTTP",
    "HTTPS",
    "HTTP2",
    "GRPC",
    "GRPC-Web",
    "HTTP_PROXY",
    "TCP",
    "TLS",
    "UDP",
    "Mongo",
    "Redis",
    "MySQL",
];

impl Protocol {
    /// `protocol.Parse`: the name in any letter case; `None` for one Istio does not know
    /// (`UnsupportedProtocol`, which is also what an empty name gives: detect it).
    pub fn parse(name: &str) -> Option<Protocol> {
        Some(match name.to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "http" => Protocol::Http,
            "http_proxy" => Protocol::HttpProxy,
            "http2" => Protocol::Http2,
            "https" => Protocol::Https,
            "tls" => Protocol::Tls,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::MySql,
            _ => return None,
        })
    }

    /// `IsHTTP`.
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http
                | Protocol::Http2
                | Protocol::HttpProxy
                | Protocol::Grpc
                | Protocol::GrpcWeb
        )
    }

    /// `IsTLS`.
    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }
}

/// `ValidateProtocol`: empty (detect it) or a name [`Protocol::parse`] knows.
pub fn protocol(name: &str) -> Check {
    if name.is_empty() || Protocol::parse(name).is_some() {
        Ok(())
    } else {
        Err(format!(
            "is not a protocol Istio knows (one of {}, in any letter case)",
            PROTOCOL_NAMES.join(", ")
        ))
    }
}

const LABEL_MAX: usize = 63;

fn label_body(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// `labels.IsDNS1123Label`: letters (either case), digits and '-', alphanumeric at both ends,
/// at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= LABEL_MAX && label_body(s)
}

/// `labels.IsWildcardDNS1123Label`: a label, `*`, or a label after `*` or `*-`.
pub fn is_wildcard_dns1123_label(s: &str) -> bool {
    if s.len() > LABEL_MAX {
        return false;
    }
    if s == "*" {
        return true;
    }
    match s.strip_prefix("*-").or_else(|| s.strip_prefix('*')) {
        Some(rest) => label_body(rest),
        None => label_body(s),
    }
}

/// `CheckDNS1123Preconditions`.
fn preconditions(name: &str) -> Check {
    if name.len() > 255 {
        return Err(format!(
            "is {} characters long; a domain name has at most 255",
            name.len()
        ));
    }
    if name.is_empty() {
        return Err("is empty; a domain name is required".into());
    }
    Ok(())
}

/// `ValidateDNS1123Labels`: dot-separated labels, the last one not all digits (it would read
/// as an IP address); a trailing dot (`istio.io.`) is allowed.
pub fn dns1123_labels(domain: &str) -> Check {
    let parts: Vec<&str> = domain.split('.').collect();
    let top = parts[parts.len() - 1];
    // Go's strconv.Atoi: an optional sign, then decimal digits.
    let digits = top.strip_prefix(['+', '-']).unwrap_or(top);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "has an all-numeric top-level label {top:?}, which reads as an IP address"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !is_dns1123_label(label) {
            return Err(format!(
                "has an invalid label {label:?}: labels are up to 63 letters, digits and '-', \
                 starting and ending with a letter or digit"
            ));
        }
    }
    Ok(())
}

/// `ValidateFQDN`.
pub fn fqdn(name: &str) -> Check {
    preconditions(name)?;
    dns1123_labels(name)
}

/// `ValidateWildcardDomain`: an FQDN whose first label may be a wildcard (`*`, `*foo`, `*-foo`).
pub fn wildcard_domain(name: &str) -> Check {
    preconditions(name)?;
    let (first, rest) = match name.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (name, None),
    };
    if !is_wildcard_dns1123_label(first) {
        return Err(format!(
            "has an invalid first label {first:?}: a label, or `*` in place of it"
        ));
    }
    match rest {
        Some(rest) => dns1123_labels(rest),
        None => Ok(()),
    }
}

/// `ValidatePartialWildCard`: a `*` only as `*` alone or as a whole first label (`*.`).
pub fn partial_wildcard(host: &str) -> Check {
    if host.contains('*') && host.len() != 1 && !host.starts_with("*.") {
        Err(
            "is a partial wildcard: `*` stands only for a whole first label, as in `*.example.com`"
                .into(),
        )
    } else {
        Ok(())
    }
}

/// `ValidatePort`.
pub fn port(n: i64) -> Check {
    if (1..=65535).contains(&n) {
        Ok(())
    } else {
        Err(format!("{n} is not a port number (1–65535)"))
    }
}

/// `ValidatePortName`.
pub fn port_name(name: &str) -> Check {
    if is_dns1123_label(name) {
        Ok(())
    } else {
        Err("is not a port name: up to 63 letters, digits and '-', starting and ending with a letter or digit".into())
    }
}

/// `ValidateIPAddress` (Go's `netip.ParseAddr`), without IPv6 zones (`fe80::1%eth0`), which
/// Go accepts: a zone names an interface of one machine, which means nothing to istiod or to
/// other VMs (a meshvm rule).
pub fn ip_address(s: &str) -> Check {
    if s.contains('%') {
        return Err("has an IPv6 zone (`%…`), which names an interface of one machine only; meshvm refuses it".into());
    }
    s.parse::<IpAddr>()
        .map(|_| ())
        .map_err(|_| "is not an IPv4 or IPv6 address".into())
}

/// `ValidateIPSubnet`: an address, or with exactly one '/' a CIDR block (Go's
/// `netip.ParsePrefix`: decimal prefix length without sign or leading zero, no zone).
pub fn ip_subnet(s: &str) -> Check {
    if s.matches('/').count() != 1 {
        return ip_address(s).map_err(|_| "is not an IP address or CIDR block".into());
    }
    let (addr, bits) = s.split_once('/').expect("one slash");
    let bad = || "is not a valid CIDR block".to_string();
    if addr.contains('%') {
        return Err(bad());
    }
    let ip: IpAddr = addr.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let canonical = !bits.is_empty()
        && bits.bytes().all(|b| b.is_ascii_digit())
        && (bits == "0" || !bits.starts_with('0'));
    match bits.parse::<u32>() {
        Ok(n) if canonical && n <= max => Ok(()),
        _ => Err(format!(
            "is not a valid CIDR block: the prefix length is 0 to {max}"
        )),
    }
}

/// True when the address is a CIDR block rather than one address (`strings.Contains(a, "/")`).
pub fn is_cidr(s: &str) -> bool {
    s.contains('/')
}
