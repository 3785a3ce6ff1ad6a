//! mesh.yaml written directly, for the shapes it usually has, byte for byte as
//! `crate::k8s::yaml::to_string` writes it through serde-saphyr (keys in Go's order).
//!
//! Why not only serde-saphyr: a whole-fleet render writes one mesh.yaml per VM, and
//! serde-saphyr's general serializer spent ~200,000 instructions on each small document (a
//! third of a one-VM-changed sync at 10,000 VMs). This writer handles block mappings of
//! integers, booleans and single-line ASCII strings whose YAML style it can tell for certain
//! (the rules below are serde-saphyr 2.2's `is_plain_value_safe`, narrowed); for anything else
//! (sequences, empty mappings, floats, nulls, long or non-ASCII strings, unusual keys) it
//! answers `None` and the caller uses serde-saphyr. `tests::agrees_with_serde_saphyr` compares
//! the two on every value it accepts.

use serde_json::Value;

use super::go;

/// The YAML document for a mapping, as serde-saphyr writes it, or `None` when its shape is
/// outside what this writer knows.
pub(super) fn to_string(value: &Value) -> Option<String> {
    let Value::Object(map) = value else {
        return None;
    };
    let mut out = String::with_capacity(1024);
    write_map(&mut out, map, 0)?;
    Some(out)
}

fn write_map(out: &mut String, map: &serde_json::Map<String, Value>, depth: usize) -> Option<()> {
    if map.is_empty() {
        return None;
    }
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| go::yaml_key_cmp(a.0, b.0));
    for (key, value) in entries {
        if !plain_key(key) {
            return None;
        }
        for _ in 0..depth {
            out.push_str("  ");
        }
        out.push_str(key);
        out.push(':');
        match value {
            Value::Object(inner) => {
                out.push('\n');
                write_map(out, inner, depth + 1)?;
                continue;
            }
            Value::Bool(b) => {
                out.push(' ');
                out.push_str(if *b { "true" } else { "false" });
            }
            Value::Number(n) if n.is_i64() || n.is_u64() => {
                out.push(' ');
                out.push_str(&n.to_string());
            }
            Value::String(s) => {
                out.push(' ');
                crate::k8s::yaml::push_scalar(out, s)?;
            }
            _ => return None,
        }
        out.push('\n');
    }
    Some(())
}

/// A key serde-saphyr surely writes plain: a shell-like name starting with a letter (it
/// quotes `_0`, a YAML 1.1 number) that no reader misreads.
fn plain_key(k: &str) -> bool {
    let b = k.as_bytes();
    b.first().is_some_and(|c| c.is_ascii_alphabetic())
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
        && !crate::k8s::yaml::reserved_word(k)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::to_string;

    fn slow(v: &Value) -> String {
        crate::k8s::yaml::to_string(&super::super::GoYamlOrder(v))
    }

    /// Whenever the fast writer answers, it answers serde-saphyr's bytes: strings of every
    /// kind the rules distinguish, as values and keys, at two depths.
    #[test]
    fn agrees_with_serde_saphyr() {
        let long = "a".repeat(80);
        let longer = "a".repeat(81);
        let quoted_long = format!("[{}]", "x".repeat(120));
        let spaced_long = format!("{} ", "x".repeat(100));
        let strings = [
            "",
            " ",
            "a",
            "A",
            "y",
            "Y",
            "n",
            "yes",
            "No",
            "on",
            "OFF",
            "true",
            "True",
            "FALSE",
            "null",
            "Null",
            "~",
            "nan",
            "inf",
            "-inf",
            "+inf",
            "0",
            "1",
            "0644",
            "1e3",
            "0x1F",
            "1:30",
            "2001-01-01",
            "=",
            "<<",
            "---",
            "...",
            "-",
            "-a",
            "- a",
            "?",
            "?a",
            ".a",
            "a.",
            "a:",
            "a:b",
            "a: b",
            "a #b",
            "a#b",
            "#a",
            "/",
            "/healthz",
            "a/b",
            "a b",
            " a",
            "a ",
            "[a",
            "{\"a\":1}",
            "[{\"name\":\"http\",\"containerPort\":8080}]",
            "a\"b",
            "a\\b",
            "a'b",
            "'a",
            "\"a",
            "%a",
            "@a",
            "`a",
            "!a",
            "&a",
            "*a",
            "|a",
            ">a",
            ",a",
            "a,b",
            "a[b]",
            "a{b}",
            "a\tb",
            "a\nb",
            "é",
            "istiod.istio-system.svc:15012",
            "a+b",
            "a=b",
            "127.0.0.1",
            "::1",
            "fe80::1",
            "1.5",
            "-1",
            &long,
            &longer,
            &quoted_long,
            &spaced_long,
        ];
        let mut accepted = 0;
        let mut check = |v: Value| {
            if let Some(fast) = to_string(&v) {
                assert_eq!(fast, slow(&v), "for {v}");
                accepted += 1;
            }
        };
        for s in strings {
            check(json!({ "k": s }));
            check(json!({ "outer": { "inner": { "k": s, "B_2": 8080 } }, "z": true }));
            check(json!({ s: "v" }));
            check(json!({ "m": { s: 1 } }));
        }
        for v in [
            json!({ "a": 1, "b": -3, "c": false, "d": u64::MAX }),
            json!({ "a10": 1, "a9": 2, "A": 3, "_x": 4, "b": { "x": "y" } }),
        ] {
            check(v);
        }
        // Shapes it leaves to serde-saphyr.
        for v in [
            json!([1]),
            json!({ "a": [] }),
            json!({ "a": {} }),
            json!({ "a": null }),
            json!({ "a": 1.5 }),
            json!({}),
        ] {
            assert_eq!(to_string(&v), None, "{v}");
        }
        assert!(accepted > 80, "only {accepted} values took the fast path");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(5000))]
        /// Random printable strings (YAML's indicators, spaces, quotes, colons and words in
        /// plenty), as values and keys: the fast writer answers serde-saphyr's bytes or nothing.
        #[test]
        fn agrees_with_serde_saphyr_on_random_strings(
            s in r#"[ -~]{0,6}|[a-zA-Z/][-a-zA-Z0-9_./:+= #"'\\]{0,90}|(true|no|on|null|y|-|:|#| )*"#
        ) {
            for v in [json!({ "k": &s }), json!({ "a": { "b": &s } }), json!({ &s: 1 })] {
                if let Some(fast) = to_string(&v) {
                    proptest::prop_assert_eq!(fast, slow(&v));
                }
            }
        }
    }

    /// The fleets meshvm is measured on take the fast path for every VM (else the speed-up
    /// would be lost without any test noticing), with serde-saphyr's bytes.
    #[test]
    fn synthetic_fleets_take_the_fast_path() {
        let fleet = crate::synthetic::fleet(300);
        let mut vms = 0;
        for (w, i) in fleet.vms() {
            let checked = super::super::fleet_raw_inputs(&fleet, w, i)
                .check()
                .expect("a synthetic VM's inputs are valid");
            let fast = to_string(&checked.mesh_yaml).expect("the fast path");
            assert_eq!(fast, slow(&checked.mesh_yaml));
            vms += 1;
        }
        assert_eq!(vms, 300);
    }
}
