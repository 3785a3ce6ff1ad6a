//! YAML out: the one way meshvm writes YAML.
//!
//! serde-saphyr's serializer with its YAML 1.1-compatible quoting: any string that a YAML 1.1
//! reader (kubectl, cloud-init, PyYAML) would take for a boolean, number, null or timestamp
//! (`on`, `yes`, `0644`, `1e3`, `~`, `2001-01-01`) is quoted, so every reader sees the same data.

use serde::Serialize;

/// One YAML document for `value`, ending in a newline.
///
/// Architecture invariant: meshvm only serializes its own types and JSON values, whose keys
/// are strings, so serialization cannot fail.
pub fn to_string<T: Serialize>(value: &T) -> String {
    let mut out = serde_saphyr::to_string(value).expect("meshvm's own types serialize to YAML");
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// serde-saphyr folds a plain string longer than this (`FOLDED_WRAP_CHARS`); such strings go
/// the slow way in the direct writers.
const PLAIN_MAX: usize = 80;

/// A string value: plain when serde-saphyr surely writes it plain, double-quoted when it
/// surely quotes it; `None` when unsure.
pub(crate) fn push_scalar(out: &mut String, s: &str) -> Option<()> {
    if !s.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return None;
    }
    if surely_plain(s) {
        out.push_str(s);
    } else if surely_quoted(s) {
        out.push('"');
        for c in s.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                c => out.push(c),
            }
        }
        out.push('"');
    } else {
        return None;
    }
    Some(())
}

/// Words some YAML reader takes for a boolean, null or special float, in any case: never
/// plain here (serde-saphyr quotes them in values; for keys this writer gives up).
pub(crate) fn reserved_word(s: &str) -> bool {
    [
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf",
    ]
    .iter()
    .any(|w| s.eq_ignore_ascii_case(w))
}

/// Printable ASCII without spaces, starting with a letter or `/` (so no number, timestamp,
/// indicator or document marker), `:` only inside, not a reserved word, short enough not to
/// be folded: serde-saphyr writes it plain.
fn surely_plain(s: &str) -> bool {
    let b = s.as_bytes();
    let first_ok = b
        .first()
        .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'/');
    first_ok
        && s.len() <= PLAIN_MAX
        && !s.ends_with(':')
        && b.iter().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'/' | b'-' | b':' | b'+' | b'=')
        })
        && !reserved_word(s)
        && s != "="
}

/// Printable ASCII on one line that serde-saphyr cannot write plain: empty, a reserved word,
/// an indicator first, edge spaces, `": "`, `" #"`, or a final `:`. Such a string is never
/// folded either (serde-saphyr folds only long strings plain-safe once trailing spaces are
/// dropped, so a long one with trailing spaces is left to it), so it is double-quoted; but
/// serde-saphyr single-quotes `.`, `#` and `-` alone.
fn surely_quoted(s: &str) -> bool {
    if matches!(s, "." | "#" | "-") || (s.len() > PLAIN_MAX && s.ends_with(' ')) {
        return false;
    }
    s.is_empty()
        || decimal_like(s)
        || s.eq_ignore_ascii_case("true")
        || s.eq_ignore_ascii_case("false")
        || s.eq_ignore_ascii_case("null")
        || s.starts_with([
            ',', ':', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"', '%', '@', '`',
        ])
        || s.starts_with(' ')
        || s.ends_with(' ')
        || s.contains(": ")
        || s.contains(" #")
        || s.ends_with(':')
}

/// Digits and dots, a digit first (`0644`, `1.5`, an IPv4 address): a number to a YAML 1.1
/// reader (its float allows `[0-9.]*` after the first dot), so serde-saphyr quotes it.
fn decimal_like(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// A mapping key serde-saphyr surely writes plain: a letter first, then letters, digits and
/// `._/-` (label keys such as `app.kubernetes.io/name`), not a word a reader misreads.
pub(crate) fn plain_key(k: &str) -> bool {
    let b = k.as_bytes();
    b.first().is_some_and(|c| c.is_ascii_alphabetic())
        && k.len() <= PLAIN_MAX
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'/' | b'-'))
        && !reserved_word(k)
}

/// Writes YAML block mappings directly, for objects written once per VM (serde-saphyr's
/// general serializer costs ~100,000 instructions for each small document). Each method
/// answers `None` for a key or string it is not sure serde-saphyr writes the same way; the
/// caller then uses [`to_string`].
pub(crate) struct Block {
    pub out: String,
}

impl Block {
    pub fn new() -> Block {
        Block {
            out: String::with_capacity(512),
        }
    }

    fn key(&mut self, depth: usize, key: &str) -> Option<()> {
        if !plain_key(key) {
            return None;
        }
        for _ in 0..depth {
            self.out.push_str("  ");
        }
        self.out.push_str(key);
        self.out.push(':');
        Some(())
    }

    /// `key:` opening a nested mapping.
    pub fn open(&mut self, depth: usize, key: &str) -> Option<()> {
        self.key(depth, key)?;
        self.out.push('\n');
        Some(())
    }

    pub fn str(&mut self, depth: usize, key: &str, value: &str) -> Option<()> {
        self.key(depth, key)?;
        self.out.push(' ');
        push_scalar(&mut self.out, value)?;
        self.out.push('\n');
        Some(())
    }

    pub fn opt_str(&mut self, depth: usize, key: &str, value: Option<&String>) -> Option<()> {
        value.map_or(Some(()), |v| self.str(depth, key, v))
    }

    pub fn uint(&mut self, depth: usize, key: &str, value: u64) -> Option<()> {
        self.key(depth, key)?;
        use std::fmt::Write;
        let _ = writeln!(self.out, " {value}");
        Some(())
    }

    /// A map field left out when empty, as `skip_serializing_if = "BTreeMap::is_empty"` does.
    pub fn str_map(
        &mut self,
        depth: usize,
        key: &str,
        map: &std::collections::BTreeMap<String, String>,
    ) -> Option<()> {
        self.map(depth, key, map, |w, k, v| w.str(depth + 1, k, v))
    }

    /// [`Self::str_map`] of numbers.
    pub fn uint_map(
        &mut self,
        depth: usize,
        key: &str,
        map: &std::collections::BTreeMap<String, u32>,
    ) -> Option<()> {
        self.map(depth, key, map, |w, k, v| {
            w.uint(depth + 1, k, u64::from(*v))
        })
    }

    fn map<V>(
        &mut self,
        depth: usize,
        key: &str,
        map: &std::collections::BTreeMap<String, V>,
        mut entry: impl FnMut(&mut Self, &str, &V) -> Option<()>,
    ) -> Option<()> {
        if map.is_empty() {
            return Some(());
        }
        self.open(depth, key)?;
        map.iter().try_for_each(|(k, v)| entry(self, k, v))
    }
}

/// A multi-document stream of the given documents, separated by `---`.
pub fn join_documents<I, S>(docs: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out = String::new();
    for doc in docs {
        if !out.is_empty() {
            out.push_str("---\n");
        }
        out.push_str(doc.as_ref());
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    #[test]
    fn quotes_what_yaml_1_1_would_misread() {
        let values: BTreeMap<&str, &str> = [
            "on",
            "off",
            "yes",
            "no",
            "y",
            "n",
            "true",
            "null",
            "~",
            "0644",
            "1e3",
            "0x1F",
            "1:30",
            "2001-01-01",
            "",
            "plain",
        ]
        .into_iter()
        .map(|v| (v, v))
        .collect();
        let yaml = super::to_string(&values);
        for line in yaml.lines() {
            let (key, value) = line.split_once(": ").unwrap_or((line, ""));
            if key == "plain" {
                assert_eq!(value, "plain");
            } else {
                assert!(
                    value.starts_with('\'') || value.starts_with('"'),
                    "{line:?} must be quoted"
                );
            }
        }
    }
}
