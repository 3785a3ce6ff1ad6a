//! `cargo xtask ci`: the tools the tests need (`.ci/setup`), format check, clippy with warnings
//! denied, the hermetic tests (`cargo test --workspace`), the system tests (real tools, root;
//! the `system-tests` features), then the product
//! checked by real validators: every fixture fleet rendered with the built `meshvm` and
//! validated strictly, and the user-data of every fixture VM validated; the real-cluster
//! tests against the harness of `cargo xtask mesh`; last, every fuzz target for a minute.
//!
//! Every step runs even when an earlier one failed, so one run shows every failure; the run
//! fails when any step failed, naming it.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use xtask::schemas::{SchemaLocations, workspace_root};
use xtask::validate::Validator;

enum Outcome {
    Ok,
    Failed(String),
}

struct Steps(Vec<(String, Outcome)>);

impl Steps {
    fn record(&mut self, name: String, outcome: Outcome) {
        match &outcome {
            Outcome::Ok => eprintln!("xtask ci: ok: {name}"),
            Outcome::Failed(why) => eprintln!("xtask ci: FAILED: {name}\n{why}"),
        }
        self.0.push((name, outcome));
    }
}

/// The features that build the system tier: each package's `system` test binary (and xtask's
/// own checks of this command), which need real tools and root. Never skipped here.
const SYSTEM_TESTS: &str = "meshvm/system-tests,meshvm-core/system-tests,xtask/system-tests";

/// Fuzzing time per target in CI.
const FUZZ_SECONDS: u32 = 60;

pub fn run() -> ExitCode {
    let root = workspace_root();
    let mut steps = Steps(Vec::new());

    // The system tools the end-to-end tests drive; without them nothing below is meaningful.
    eprintln!("xtask ci: .ci/setup");
    let setup = Command::new("bash")
        .arg(".ci/setup")
        .current_dir(&root)
        .status();
    if !setup.is_ok_and(|s| s.success()) {
        eprintln!("xtask ci: FAILED: .ci/setup could not provide the tools the tests need");
        return ExitCode::FAILURE;
    }

    let cargo_steps: &[&[&str]] = &[
        &["fmt", "--all", "--", "--check"],
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
        // Every test binary runs even when one fails, so one run shows every failure.
        // The hermetic tier, as a contributor runs it.
        &["test", "--workspace", "--no-fail-fast"],
        // The system tier: only the binaries the features add, not the hermetic ones again.
        &[
            "test",
            "--workspace",
            "--no-fail-fast",
            "--features",
            SYSTEM_TESTS,
            "--test",
            "system",
            "--bin",
            "xtask",
        ],
        &["build", "--package", "meshvm"],
    ];
    for args in cargo_steps {
        let name = format!("cargo {}", args.join(" "));
        eprintln!("xtask ci: {name}");
        let status = Command::new(env!("CARGO"))
            .args(*args)
            .current_dir(&root)
            .status();
        let outcome = match status {
            Ok(s) if s.success() => Outcome::Ok,
            Ok(s) => Outcome::Failed(format!("exited with {s}")),
            Err(e) => Outcome::Failed(format!("could not run cargo: {e}")),
        };
        steps.record(name, outcome);
    }

    match target_dir(&root) {
        Ok(target) => product_checks(&root, &target.join("debug/meshvm"), &mut steps),
        Err(why) => steps.record("locate the built meshvm".into(), Outcome::Failed(why)),
    }

    // The real-cluster tests (tests/mesh) against etcd, kube-apiserver and istioctl.
    let name = "cargo xtask mesh test".to_string();
    eprintln!("xtask ci: {name}");
    let outcome = match crate::mesh::ci(&root) {
        Ok(summary) => {
            if let Some(note) = summary.not_run() {
                eprintln!("{note}");
            }
            eprintln!("xtask ci: {summary}");
            Outcome::Ok
        }
        Err(why) => Outcome::Failed(why),
    };
    steps.record(name, outcome);

    // The parsers that read users' files, fuzzed for a bounded time: no input may panic.
    let name = format!("cargo xtask fuzz --seconds {FUZZ_SECONDS}");
    eprintln!("xtask ci: {name}");
    let outcome = match crate::fuzz::run_all(&root, FUZZ_SECONDS) {
        Ok(()) => Outcome::Ok,
        Err(why) => Outcome::Failed(why),
    };
    steps.record(name, outcome);

    let failed: Vec<&str> = steps
        .0
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Failed(_)))
        .map(|(n, _)| n.as_str())
        .collect();
    if failed.is_empty() {
        eprintln!("xtask ci: all {} steps passed", steps.0.len());
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "xtask ci: {} step(s) failed: {}",
            failed.len(),
            failed.join("; ")
        );
        ExitCode::FAILURE
    }
}

/// The fixture fleets: `fixtures/fleets/*/meshvm.yaml`, sorted.
fn fixture_fleets(root: &Path) -> Result<Vec<PathBuf>, String> {
    let dir = root.join("fixtures/fleets");
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut fleets: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path().join("meshvm.yaml"))
        .filter(|p| p.is_file())
        .collect();
    fleets.sort();
    if fleets.is_empty() {
        return Err(format!("no fixture fleets in {}", dir.display()));
    }
    Ok(fleets)
}

fn product_checks(root: &Path, meshvm: &Path, steps: &mut Steps) {
    let fleets = match fixture_fleets(root) {
        Ok(f) => f,
        Err(why) => return steps.record("find the fixture fleets".into(), Outcome::Failed(why)),
    };
    let scratch = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            return steps.record("scratch directory".into(), Outcome::Failed(e.to_string()));
        }
    };
    let locations = SchemaLocations::from_env_or_default();
    let validator = Validator::new(locations.clone());
    for fleet in &fleets {
        let rel = fleet
            .strip_prefix(root)
            .unwrap_or(fleet)
            .display()
            .to_string();
        let label = fleet
            .parent()
            .and_then(Path::file_name)
            .map_or_else(|| "fleet".into(), |n| n.to_string_lossy().into_owned());

        let name = format!("render {rel} and validate the tree");
        let outcome = render_and_validate(meshvm, fleet, &scratch.path().join(&label), &validator);
        steps.record(name, outcome);

        let source = match meshvm::spec::load_fleet(fleet) {
            Ok(source) => source,
            Err(e) => {
                steps.record(format!("load {rel}"), Outcome::Failed(e.to_string()));
                continue;
            }
        };
        for (group, vm) in source.fleet.vms() {
            let name = format!("user-data of {} in {rel}", vm.name);
            let out = scratch
                .path()
                .join(format!("{label}-{}.user-data", vm.name));
            let subject = meshvm::cloudinit::token::service_account_subject(
                &group.namespace,
                &group.service_account,
            );
            let root_cert = match source.fleet.root_cert() {
                Some(_) => None,
                None => Some(root.join(TEST_ROOT_CERT)),
            };
            let outcome = user_data(
                meshvm,
                fleet,
                &vm.name,
                &subject,
                root_cert.as_deref(),
                &out,
                &locations,
            );
            steps.record(name, outcome);
        }
    }
}

/// The root CA the user-data of fleets without `mesh.rootCert` is made with (a test fixture).
const TEST_ROOT_CERT: &str = "fixtures/certs/test-root-cert.pem";

/// `meshvm render -f FLEET -o OUT`, then every object in OUT validated strictly.
fn render_and_validate(meshvm: &Path, fleet: &Path, out: &Path, validator: &Validator) -> Outcome {
    let mut cmd = Command::new(meshvm);
    cmd.arg("render").arg("-f").arg(fleet).arg("-o").arg(out);
    if let Err(why) = run_quietly(&mut cmd) {
        return Outcome::Failed(why);
    }
    // What the engines and people apply: the kustomize build of each top directory (nested
    // kustomizations are inside those builds). install/ holds IstioOperators (istioctl input,
    // no schema in the catalog) and bootstrap/ the VMs' own files: neither is applied.
    let sources: Vec<xtask::kube::Source> = [
        meshvm::render::layout::MESH_DIR,
        meshvm::render::layout::WORKLOADS_DIR,
        meshvm::render::layout::ARGOCD_DIR,
        meshvm::render::layout::FLUX_DIR,
    ]
    .iter()
    .map(|dir| out.join(dir))
    .filter(|dir| dir.exists())
    .map(|dir| xtask::kube::Source {
        name: format!("{} (kustomize build)", dir.display()),
        text: xtask::kube::kustomize_build(&dir),
    })
    .collect();
    let report = validator.validate_sources(&sources);
    let agreed = crate::second_opinion(validator, &sources, &report);
    if report.verdicts.is_empty() {
        Outcome::Failed(format!("no objects found in {}", out.display()))
    } else if report.is_success() && agreed {
        eprintln!("xtask ci: {}", report.summary_line());
        Outcome::Ok
    } else {
        Outcome::Failed(report.to_text())
    }
}

/// `meshvm cloud-init VM -f FLEET --token-file T [--root-cert C] -o OUT` with an unsigned test
/// token for the VM's ServiceAccount, then the document validated.
fn user_data(
    meshvm: &Path,
    fleet: &Path,
    vm: &str,
    subject: &str,
    root_cert: Option<&Path>,
    out: &Path,
    locations: &SchemaLocations,
) -> Outcome {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let token = meshvm::cloudinit::token::unsigned_test_token(&serde_json::json!({
        "aud": [meshvm::cloudinit::token::ISTIO_CA_AUDIENCE],
        "sub": subject,
        "iat": now,
        "exp": now + 3600,
    }));
    let token_file = out.with_extension("token");
    if let Err(e) = std::fs::write(&token_file, token) {
        return Outcome::Failed(format!("{}: {e}", token_file.display()));
    }
    let mut cmd = Command::new(meshvm);
    cmd.args(["cloud-init", vm, "-f"])
        .arg(fleet)
        .arg("--token-file")
        .arg(&token_file);
    if let Some(cert) = root_cert {
        cmd.arg("--root-cert").arg(cert);
    }
    cmd.arg("-o").arg(out);
    if let Err(why) = run_quietly(&mut cmd) {
        return Outcome::Failed(why);
    }
    let checked = std::fs::read(out)
        .map_err(|e| vec![format!("{}: {e}", out.display())])
        .and_then(|bytes| xtask::cloudinit::validate_user_data_with(locations, bytes));
    match checked {
        Ok(()) => Outcome::Ok,
        Err(errors) => Outcome::Failed(errors.join("\n")),
    }
}

pub(crate) fn run_quietly(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let output = cmd.output().map_err(|e| format!("{shown}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{shown} exited with {}:\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Cargo's target directory (CARGO_TARGET_DIR and config honoured).
pub(crate) fn target_dir(root: &Path) -> Result<PathBuf, String> {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    let meta: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|e| format!("cargo metadata: {e}"))?;
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| "cargo metadata has no target_directory".to_string())
}

// They run kubectl kustomize through the product checks: system tier.
#[cfg(all(test, feature = "system-tests"))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    /// A stand-in `meshvm` whose `render` copies a corpus directory and whose `cloud-init`
    /// writes a fixed document, so the product steps are exercised before the real commands
    /// land.
    fn stub(dir: &Path, corpus: &str, user_data: &str) -> PathBuf {
        let corpus = workspace_root().join("fixtures/manifests").join(corpus);
        let script = format!(
            r#"#!/bin/sh
[ "$2" = --help ] && exit 0
case "$1" in
  render) [ "$2 $4" = "-f -o" ] || exit 2; mkdir -p "$5/mesh" && cp '{corpus}' "$5/mesh/objects.yaml" && printf 'resources: [objects.yaml]\n' > "$5/mesh/kustomization.yaml" ;;
  cloud-init) [ "$3 $5" = "-f --token-file" ] || exit 2; while [ "$1" != -o ]; do shift; done; printf '{user_data}' > "$2" ;;
  *) exit 2 ;;
esac
"#,
            corpus = corpus.display()
        );
        let path = dir.join("meshvm");
        // Written by a child process: a descriptor of ours open for writing would be inherited
        // by the other test's concurrent forks, and executing the stub would then fail with
        // "Text file busy".
        let mut writer = Command::new("sh")
            .args(["-c", "cat > \"$1\"", "sh"])
            .arg(&path)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut writer.stdin.take().unwrap(), script.as_bytes()).unwrap();
        assert!(writer.wait().unwrap().success());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn outcomes(meshvm: &Path) -> Vec<(String, Result<(), String>)> {
        let mut steps = Steps(Vec::new());
        product_checks(&workspace_root(), meshvm, &mut steps);
        steps
            .0
            .into_iter()
            .map(|(name, o)| {
                let o = match o {
                    Outcome::Ok => Ok(()),
                    Outcome::Failed(why) => Err(why),
                };
                (name, o)
            })
            .collect()
    }

    #[test]
    fn renders_and_checks_every_fixture() {
        let dir = tempfile::tempdir().unwrap();
        let good = stub(
            dir.path(),
            "valid/istio.yaml",
            "#cloud-config\\nruncmd: [ls]\\n",
        );
        let got = outcomes(&good);
        let fleets = std::fs::read_dir(workspace_root().join("fixtures/fleets"))
            .unwrap()
            .count();
        let renders = got
            .iter()
            .filter(|(name, _)| name.starts_with("render "))
            .count();
        assert_eq!(
            renders, fleets,
            "one render step per fixture fleet: {got:?}"
        );
        assert!(
            got.iter().any(
                |(name, _)| name == "user-data of tester-1 in fixtures/fleets/seed/meshvm.yaml"
            )
        );
        for (name, outcome) in &got {
            assert_eq!(outcome, &Ok(()), "{name}");
        }
    }

    #[test]
    fn names_the_failing_step_and_why() {
        let dir = tempfile::tempdir().unwrap();
        let bad = stub(dir.path(), "invalid/two-documents.yaml", "runcmd: [ls]\\n");
        let got = outcomes(&bad);
        let render = got[0].1.as_ref().unwrap_err();
        assert!(
            render.contains("ServiceAccount tester is invalid: /automountServiceAccountToken"),
            "{render}"
        );
        let user_data = got[1].1.as_ref().unwrap_err();
        assert!(user_data.contains("`#cloud-config`"), "{user_data}");
    }
}
