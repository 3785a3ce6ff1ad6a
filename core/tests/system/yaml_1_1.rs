//! What meshvm writes as YAML reads back the same in a YAML 1.1 reader: PyYAML, the parser
//! cloud-init itself uses (Debian's python3-yaml). Arbitrary strings, plus the spellings YAML
//! 1.1 gives other types to, go through `meshvm::k8s::yaml` and must come back unchanged.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, TestRunner};

/// Debian's interpreter, which has python3-yaml (a dependency of cloud-init).
const PYTHON: &str = "/usr/bin/python3";

fn tricky_spellings() -> Vec<String> {
    [
        "on",
        "off",
        "On",
        "OFF",
        "yes",
        "no",
        "Yes",
        "NO",
        "y",
        "n",
        "Y",
        "N",
        "true",
        "False",
        "null",
        "Null",
        "~",
        "",
        "0644",
        "0o644",
        "0x1F",
        "1e3",
        "1E3",
        ".5",
        "+1",
        "-1",
        "1_000",
        "1:30",
        "190:20:30",
        "2001-12-14",
        "2001-12-14t21:59:43.10-05:00",
        ".inf",
        "-.Inf",
        ".NaN",
        "=",
        "<<",
        "- a",
        "? a",
        ": a",
        "a: b",
        "a #b",
        "#a",
        "'",
        "\"",
        "`",
        "$(reboot)",
        "&a",
        "*a",
        "!tag",
        "%x",
        "@x",
        "|",
        ">",
        "{a}",
        "[a]",
        "a\nb",
        "a\n",
        "\n",
        " a",
        "a ",
        "\t",
        "\u{85}",
        "\u{2028}",
        "\u{feff}x",
        "é",
        "\u{7f}",
        "\u{1}",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

#[test]
fn strings_round_trip_through_a_yaml_1_1_reader() {
    assert!(
        std::path::Path::new(PYTHON).exists(),
        "{PYTHON} is needed (Debian's python3 with python3-yaml: apt-get install python3-yaml)"
    );
    let mut values = tricky_spellings();
    let mut runner = TestRunner::new(Config {
        rng_seed: proptest::test_runner::RngSeed::Fixed(7),
        ..Config::default()
    });
    let strategy = proptest::string::string_regex("(?s).{0,40}").unwrap();
    for _ in 0..2000 {
        values.push(strategy.new_tree(&mut runner).unwrap().current());
    }
    let doc: BTreeMap<String, String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("k{i:05}"), v.clone()))
        .collect();
    let yaml = meshvm::k8s::yaml::to_string(&doc);

    let mut child = Command::new(PYTHON)
        .args([
            "-c",
            "import sys, yaml, json; json.dump(yaml.safe_load(sys.stdin.read()), sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "PyYAML could not read meshvm's YAML");
    let read: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    for (key, value) in &doc {
        let got = &read[key];
        assert_eq!(
            got.as_str(),
            Some(value.as_str()),
            "{value:?} was emitted as {:?}",
            yaml.lines().find(|l| l.starts_with(key.as_str()))
        );
    }
}
