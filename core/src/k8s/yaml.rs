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
