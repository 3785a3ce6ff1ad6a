//! Istio's own test tables (fixtures/parity/), run through meshvm's ports of the rules: meshvm
//! accepts what istiod accepts and refuses what it refuses, except where a case says meshvm
//! is deliberately stricter, and why.

use std::path::{Path, PathBuf};

use meshvm::spec::{istio_rules, load_fleet_str, names};
use serde::Deserialize;

#[derive(Deserialize)]
struct Table {
    rule: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    input: String,
    #[serde(default)]
    repeat: Option<usize>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    service: Option<serde_json::Value>,
    #[serde(default)]
    probe: Option<serde_json::Value>,
    /// What Istio says.
    valid: bool,
    /// `refuses` where meshvm is stricter than Istio.
    #[serde(default)]
    meshvm: Option<String>,
    #[serde(default)]
    why: Option<String>,
    /// What meshvm's refusal must say (where the reason matters, not only the verdict).
    #[serde(default)]
    refusal: Option<String>,
}

fn tables() -> Vec<PathBuf> {
    let dir = testkit::fixture("parity");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("base-fleet.yaml"))
        .collect();
    files.sort();
    files
}

/// What meshvm says of one case: `Ok` accepted, `Err(reason)` refused.
fn meshvm_says(rule: &str, case: &Case) -> Result<(), String> {
    let input = match case.repeat {
        Some(n) => case.input.repeat(n),
        None => case.input.clone(),
    };
    match rule {
        "protocol" => istio_rules::protocol(&input),
        "fqdn" => istio_rules::fqdn(&input),
        "wildcard_domain" => istio_rules::wildcard_domain(&input),
        "port" => istio_rules::port(input.parse().expect("a port case is an integer")),
        "ip_address" => istio_rules::ip_address(&input),
        "ip_subnet" => istio_rules::ip_subnet(&input),
        "port_name" => istio_rules::port_name(&input),
        "label" => names::qualified_name(case.key.as_deref().expect("a label case has a key"))
            .and(names::label_value(&input)),
        "service" => {
            let base = std::fs::read_to_string(testkit::fixture("parity/base-fleet.yaml")).unwrap();
            let service = case.service.as_ref().expect("a service case has a service");
            let text = base.replace("SERVICE", &service.to_string());
            load_fleet_str(&text, Path::new("base-fleet.yaml"))
                .map(|_| ())
                .map_err(|d| d.to_string())
        }
        "probe" => {
            let base = std::fs::read_to_string(testkit::fixture("parity/base-fleet.yaml")).unwrap();
            let probe = case.probe.as_ref().expect("a probe case has a probe");
            let text = base.replace("service: SERVICE", &format!("probe: {probe}"));
            load_fleet_str(&text, Path::new("base-fleet.yaml"))
                .map(|_| ())
                .map_err(|d| d.to_string())
        }
        other => panic!("no rule {other:?}"),
    }
}

#[test]
fn istio_test_tables_agree() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for path in tables() {
        let table: Table =
            serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(!table.cases.is_empty(), "{}", path.display());
        for case in &table.cases {
            let label = format!(
                "{} {:?} {}",
                path.file_name().unwrap().to_string_lossy(),
                case.name.as_deref().unwrap_or_default(),
                case.service
                    .as_ref()
                    .or(case.probe.as_ref())
                    .map_or_else(|| format!("{:?}", case.input), ToString::to_string)
            );
            let stricter = match case.meshvm.as_deref() {
                None => false,
                Some("refuses") => {
                    assert!(
                        case.valid,
                        "{label}: meshvm can only be stricter where Istio accepts"
                    );
                    assert!(
                        case.why.as_deref().is_some_and(|w| !w.is_empty()),
                        "{label}: say why"
                    );
                    true
                }
                Some(other) => panic!("{label}: meshvm: {other:?}"),
            };
            let expected = case.valid && !stricter;
            let got = meshvm_says(&table.rule, case);
            if got.is_ok() != expected {
                failures.push(format!(
                    "{label}: Istio valid={}, meshvm: {got:?}",
                    case.valid
                ));
            }
            if let (Some(said), Err(reason)) = (&case.refusal, &got) {
                if !reason.contains(said.as_str()) {
                    failures.push(format!(
                        "{label}: the refusal does not say {said:?}: {reason}"
                    ));
                }
            }
            checked += 1;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked > 100, "only {checked} cases");
}
