//! The README.md meshvm writes into the tree tells its readers what to run: every command it
//! prints is run here, for every fixture fleet, in the fleet file's directory. `meshvm`
//! commands run for real; `kubectl` and `istioctl` (not available in this tier) are checked
//! against the tree (the files and directories they name exist) or stood in for by what they
//! would produce (a ServiceAccount token, the root certificate).

use std::path::Path;

use crate::support::{fixture, meshvm, run};
use testkit::fixture_fleets;

/// The `meshvm`, `kubectl` and `istioctl` commands of a Markdown text: its code spans that
/// start with one of those programs.
fn commands(markdown: &str) -> Vec<String> {
    markdown
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| {
            ["meshvm ", "kubectl ", "istioctl "]
                .iter()
                .any(|p| span.starts_with(p))
        })
        .map(str::to_owned)
        .collect()
}

/// `cmd` without its `> file` redirection, and that file.
fn redirected(cmd: &str) -> (&str, Option<&str>) {
    match cmd.split_once(" > ") {
        Some((cmd, file)) => (cmd, Some(file.trim())),
        None => (cmd, None),
    }
}

/// The value after `flag` in `words`.
fn flag<'a>(words: &[&'a str], flag: &str) -> Option<&'a str> {
    words
        .iter()
        .position(|w| *w == flag)
        .and_then(|i| words.get(i + 1).copied())
}

#[test]
fn every_command_the_generated_readme_prints_works() {
    for name in fixture_fleets() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for entry in std::fs::read_dir(fixture(&format!("fleets/{name}"))).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        let source = meshvm::spec::load_fleet(&dir.join("meshvm.yaml")).unwrap();
        let (group, vm) = source.fleet.vms().next().expect("a fixture fleet has VMs");
        let tree = dir.join("tree");
        let r = run(meshvm()
            .current_dir(dir)
            .args(["render", "-f", "meshvm.yaml", "-o", "tree"]));
        assert_eq!(r.code, 0, "{name}: {}", r.stderr);
        let readme = std::fs::read_to_string(tree.join("README.md")).unwrap();
        let all: Vec<String> = commands(&readme)
            .into_iter()
            .map(|c| {
                c.replace("<vm>", &vm.name)
                    .replace("<serviceAccount>", &group.service_account)
                    .replace("<namespace>", &group.namespace)
            })
            .collect();
        assert!(
            all.iter().any(|c| c.starts_with("meshvm cloud-init ")),
            "{name}: the README says how to make a VM's user-data:\n{readme}"
        );
        // What kubectl would produce first (the README may name an input after its use).
        let (inputs, rest): (Vec<&String>, Vec<&String>) = all
            .iter()
            .partition(|c| c.starts_with("kubectl create ") || c.starts_with("kubectl get "));
        for cmd in inputs.into_iter().chain(rest) {
            stand_in_or_run(&name, cmd, dir, &tree);
        }
    }
}

fn stand_in_or_run(fleet: &str, cmd: &str, dir: &Path, tree: &Path) {
    let (line, output) = redirected(cmd);
    let words: Vec<&str> = line.split_whitespace().collect();
    let what = format!("{fleet}: `{cmd}`");
    match words[..] {
        ["kubectl", "create", "token", account, ..] => {
            assert_eq!(flag(&words, "--audience"), Some("istio-ca"), "{what}");
            let namespace = flag(&words, "-n").expect("a namespace");
            let token = meshvm::cloudinit::token::unsigned_test_token(&serde_json::json!({
                "aud": ["istio-ca"],
                "sub": format!("system:serviceaccount:{namespace}:{account}"),
                "exp": 4_102_444_800i64,
            }));
            std::fs::write(dir.join(output.expect("written to a file")), token).unwrap();
        }
        ["kubectl", "get", "configmap", "istio-ca-root-cert", ..] => {
            assert!(flag(&words, "-n").is_some(), "{what}");
            std::fs::copy(
                fixture("certs/test-root-cert.pem"),
                dir.join(output.expect("written to a file")),
            )
            .unwrap();
        }
        ["kubectl", "apply", "-k", path] => {
            assert!(
                tree.join(path).join("kustomization.yaml").is_file(),
                "{what}"
            );
        }
        ["istioctl", "install", "-f", path] => {
            assert!(tree.join(path).is_file(), "{what}");
        }
        ["meshvm", ref args @ ..] => {
            assert!(output.is_none(), "{what}");
            let r = run(meshvm().current_dir(dir).args(args));
            assert_eq!(r.code, 0, "{what}:\n{}{}", r.stdout, r.stderr);
        }
        _ => panic!("{what}: a command this test does not know; teach it"),
    }
}
