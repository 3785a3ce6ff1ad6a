//! Byte-exact copies of the Go behaviours istioctl's VM files depend on: istio's shell
//! quoting, `encoding/json` string escaping, gopkg.in/yaml.v2's map key order and
//! `time.ParseDuration` with protobuf's JSON duration format. Pure functions of strings.

use std::borrow::Cow;
use std::cmp::Ordering;

/// Quotes a cluster.env value as istio's `pkg/util/shellescape.Quote` does, so that `sh`
/// reads it back as exactly this one value.
///
/// istio compiles the "unsafe" class from the raw Go string `[^\\w@%+=:,./-]`: the doubled
/// backslash makes it "anything but `\`, `w`, `@`, `%`, `+`, `=`, `:`, `,`, `.`, `/`, `-`",
/// which is why istioctl quotes `'foo'` and `'10.0.0.1'` and leaves `w` bare. meshvm matches
/// that byte for byte, with one deliberate difference: a value holding a backslash is always
/// quoted, because a bare `\` would escape the next character (or join the next line) when the
/// file is sourced.
pub fn shell_quote(value: &str) -> Cow<'_, str> {
    if is_shell_bare(value) {
        Cow::Borrowed(value)
    } else {
        let mut out = String::with_capacity(value.len() + 2);
        push_shell_quoted(&mut out, value);
        Cow::Owned(out)
    }
}

/// [`shell_quote`], appended to `out`.
pub fn push_shell_quoted(out: &mut String, value: &str) {
    if is_shell_bare(value) {
        out.push_str(value);
        return;
    }
    out.push('\'');
    for (i, part) in value.split('\'').enumerate() {
        if i > 0 {
            out.push_str(r#"'"'"'"#);
        }
        out.push_str(part);
    }
    out.push('\'');
}

fn is_shell_bare(value: &str) -> bool {
    !value.is_empty()
        && value
            .chars()
            .all(|c| matches!(c, 'w' | '@' | '%' | '+' | '=' | ':' | ',' | '.' | '/' | '-'))
}

/// Appends a JSON string literal as Go's `encoding/json` writes it (Go ≥ 1.22): HTML-safe
/// escapes for `<`, `>` and `&`, `\u2028`/`\u2029` escaped, short escapes for `\b \f \n \r \t`.
pub fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `json.Marshal(map[string]string)`: keys in byte order, no spaces.
pub fn json_string_map<'a, I>(entries: I) -> String
where
    I: IntoIterator<Item = (&'a String, &'a String)>,
{
    let mut entries: Vec<_> = entries.into_iter().collect();
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = String::from("{");
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(&mut out, k);
        out.push(':');
        push_json_string(&mut out, v);
    }
    out.push('}');
    out
}

/// The order gopkg.in/yaml.v2 (under sigs.k8s.io/yaml) writes map keys in: rune by rune, a
/// non-letter before a letter, and runs of digits compared as numbers.
pub fn yaml_key_cmp(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        runes_cmp(a.as_bytes(), b.as_bytes())
    } else {
        let ar: Vec<char> = a.chars().collect();
        let br: Vec<char> = b.chars().collect();
        runes_cmp(&ar, &br)
    }
}

fn runes_cmp<T: Copy + Into<char>>(ar: &[T], br: &[T]) -> Ordering {
    let digit = |c: T| c.into().is_ascii_digit();
    let value = |c: T| i64::from(c.into() as u8 - b'0');
    let mut i = 0;
    while i < ar.len() && i < br.len() {
        let (a, b): (char, char) = (ar[i].into(), br[i].into());
        if a == b {
            i += 1;
            continue;
        }
        let (al, bl) = (a.is_alphabetic(), b.is_alphabetic());
        if al && bl {
            return a.cmp(&b);
        }
        if al || bl {
            return if bl {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        let (mut an, mut bn): (i64, i64) = (0, 0);
        if a == '0' || b == '0' {
            let mut j = i;
            while j > 0 && digit(ar[j - 1]) {
                j -= 1;
                if ar[j].into() != '0' {
                    an = 1;
                    bn = 1;
                    break;
                }
            }
        }
        let mut ai = i;
        while ai < ar.len() && digit(ar[ai]) {
            an = an.wrapping_mul(10).wrapping_add(value(ar[ai]));
            ai += 1;
        }
        let mut bi = i;
        while bi < br.len() && digit(br[bi]) {
            bn = bn.wrapping_mul(10).wrapping_add(value(br[bi]));
            bi += 1;
        }
        if an != bn {
            return an.cmp(&bn);
        }
        if ai != bi {
            return ai.cmp(&bi);
        }
        return a.cmp(&b);
    }
    ar.len().cmp(&br.len())
}

/// Parses a duration the way Go's `time.ParseDuration` does, into nanoseconds.
pub fn parse_duration(s: &str) -> Option<i128> {
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(rest.len(), |(i, _)| i);
        let unit: i128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        let int: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().ok()?
        };
        let mut value = int.checked_mul(unit)?;
        // The fraction is scaled digit by digit, as Go does, truncating below a nanosecond.
        let mut scale = unit;
        for d in frac_part.bytes() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            value += i128::from(d - b'0') * scale;
        }
        total = total.checked_add(value)?;
        if total > i128::from(i64::MAX) {
            return None;
        }
    }
    Some(if negative { -total } else { total })
}

/// A duration in protobuf's JSON form as the legacy jsonpb writes it: seconds with 0, 3, 6
/// or 9 fractional digits, then `s`.
pub fn format_duration(nanos: i128) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let nanos = nanos.abs();
    let mut text = format!(
        "{sign}{}.{:09}",
        nanos / 1_000_000_000,
        nanos % 1_000_000_000
    );
    for suffix in ["000", "000", ".000"] {
        if let Some(t) = text.strip_suffix(suffix) {
            text.truncate(t.len());
        }
    }
    format!("{text}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_matches_istio() {
        for (input, want) in [
            ("", "''"),
            ("foo", "'foo'"),
            ("10.10.10.10", "'10.10.10.10'"),
            ("*", "'*'"),
            ("w", "w"),
            ("-", "-"),
            ("@%+=:,./-", "@%+=:,./-"),
            ("it's", r#"'it'"'"'s'"#),
            ("\\", "'\\'"),
            ("w\\w", "'w\\w'"),
        ] {
            assert_eq!(shell_quote(input), want, "{input:?}");
        }
    }

    #[test]
    fn json_like_go() {
        let mut out = String::new();
        push_json_string(&mut out, "a\"b\\c\n\t\u{8}\u{c}\u{1}<>&\u{2028}é\u{7f}");
        assert_eq!(
            out,
            "\"a\\\"b\\\\c\\n\\t\\b\\f\\u0001\\u003c\\u003e\\u0026\\u2028é\u{7f}\""
        );
        let map: std::collections::BTreeMap<String, String> =
            [("b".into(), "2".into()), ("a".into(), "1".into())].into();
        assert_eq!(json_string_map(&map), r#"{"a":"1","b":"2"}"#);
    }

    #[test]
    fn yaml_v2_key_order() {
        let mut keys = vec![
            "ISTIO_METAJSON_LABELS",
            "ISTIO_META_WORKLOAD_NAME",
            "ISTIO_META_CLUSTER_ID",
            "a10",
            "a9",
            "A",
            "b",
            "a",
            "_x",
        ];
        keys.sort_by(|a, b| yaml_key_cmp(a, b));
        assert_eq!(
            keys,
            [
                "_x",
                "A",
                "ISTIO_META_CLUSTER_ID",
                "ISTIO_META_WORKLOAD_NAME",
                "ISTIO_METAJSON_LABELS",
                "a",
                "a9",
                "a10",
                "b"
            ]
        );
    }

    #[test]
    fn durations_like_go_and_jsonpb() {
        for (input, want) in [
            ("45s", Some("45s")),
            ("1m", Some("60s")),
            ("1.5s", Some("1.500s")),
            ("1h2m3.000000004s", Some("3723.000000004s")),
            ("300ms", Some("0.300s")),
            ("2us", Some("0.000002s")),
            ("0", Some("0s")),
            ("-1s", Some("-1s")),
            ("", None),
            ("5", None),
            ("1d", None),
            (".s", None),
        ] {
            assert_eq!(
                parse_duration(input).map(format_duration).as_deref(),
                want,
                "{input:?}"
            );
        }
    }
}

/// The edges the istioctl goldens do not reach (found by `cargo xtask mutants`).
#[cfg(test)]
mod edges {
    use super::*;

    #[test]
    fn json_escapes_control_characters_but_not_the_space() {
        let mut out = String::new();
        push_json_string(&mut out, "\u{1f} ~");
        assert_eq!(out, r#""\u001f ~""#);
    }

    #[test]
    fn yaml_key_order_compares_characters_not_bytes() {
        // '€' is no letter, so it sorts first; its first UTF-8 byte read as Latin-1 is 'â', a
        // letter, which would sort it after 'a'.
        assert_eq!(yaml_key_cmp("a", "€"), Ordering::Greater);
        assert_eq!(yaml_key_cmp("€", "a"), Ordering::Less);
    }

    #[test]
    fn a_key_sorts_after_its_prefix() {
        assert_eq!(yaml_key_cmp("ab", "a"), Ordering::Greater);
        assert_eq!(yaml_key_cmp("a", "ab"), Ordering::Less);
        assert_eq!(yaml_key_cmp("a1", "a"), Ordering::Greater);
    }

    #[test]
    fn yaml_key_order_of_digit_runs_is_yaml_v2s_pair_by_pair() {
        // Runs of digits compare by value, then length; a run's leading zeros weigh once a
        // non-zero digit came before them. yaml.v2's order is not transitive for such keys
        // (a map of them sorts differently from run to run), so the facts are pairs.
        let pairs = include_str!("../../../fixtures/yaml-v2/key-pairs.txt");
        let mut checked = 0;
        for line in pairs.lines().filter(|l| !l.starts_with('#')) {
            let (first, second) = line.split_once(' ').unwrap();
            assert_eq!(
                yaml_key_cmp(first, second),
                Ordering::Less,
                "{first} {second}"
            );
            assert_eq!(
                yaml_key_cmp(second, first),
                Ordering::Greater,
                "{second} {first}"
            );
            checked += 1;
        }
        assert!(checked > 1000, "{checked} pairs");
    }

    #[test]
    fn durations_parse_as_gos_time_parse_duration() {
        // Go: a leading `+`, the `ns` unit, and a total of exactly 1<<63-1 ns are accepted;
        // one nanosecond more overflows (found by cargo-mutants).
        assert_eq!(parse_duration("+1s"), Some(1_000_000_000));
        assert_eq!(parse_duration("5ns"), Some(5));
        assert_eq!(
            parse_duration("9223372036854775807ns"),
            Some(i128::from(i64::MAX))
        );
        assert_eq!(parse_duration("9223372036854775808ns"), None);
    }
}
