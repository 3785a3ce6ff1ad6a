//! The harness as the tests see it: kubectl and istioctl pointed at it, meshvm's rendered
//! trees, and YAML read into data.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

use serde_json::Value;

/// The directories of a rendered tree that an engine applies (each a kustomization; nested
/// ones are inside their builds). install/ is istioctl's input and bootstrap/ the VMs' files.
pub const APPLIED_DIRS: [&str; 4] = ["mesh", "workloads", "argocd", "flux"];

/// A harness variable; fails the test, saying how to get a harness, when it is not set.
pub fn harness_var(name: &str) -> PathBuf {
    match std::env::var_os(name) {
        Some(value) => PathBuf::from(value),
        None => panic!(
            "{name} is not set: these tests need the real-cluster harness; run `cargo xtask mesh \
             up` and `eval $(cargo xtask mesh env)` (or `cargo xtask mesh test`)"
        ),
    }
}

/// kubectl against the harness.
pub fn kubectl() -> Command {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig").arg(harness_var("MESH_KUBECONFIG"));
    cmd
}

/// The built istioctl against the harness.
pub fn istioctl() -> Command {
    let mut cmd = Command::new(harness_var("MESH_ISTIOCTL"));
    cmd.arg("--kubeconfig").arg(harness_var("MESH_KUBECONFIG"));
    cmd
}

pub fn meshvm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meshvm"))
}

/// Runs a command, failing the test with what it said when it fails.
pub fn checked(cmd: &mut Command) -> String {
    testkit::checked_text(cmd)
}

/// Runs a command that may fail; its output.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// The fixture fleet file of `fleet`.
pub fn fleet_file(fleet: &str) -> PathBuf {
    testkit::fixture(&format!("fleets/{fleet}/meshvm.yaml"))
}

/// The fleets' namespaces are shared: one fleet at a time is applied to the harness.
pub fn fleet_turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    // A failed test poisons the lock; the next fleet replaces what it applied anyway.
    TURN.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `meshvm render` of a fixture fleet into `dir/<fleet>`; the tree's path.
pub fn render(fleet: &str, dir: &Path) -> PathBuf {
    let tree = dir.join(fleet);
    checked(
        meshvm()
            .arg("render")
            .arg("-f")
            .arg(fleet_file(fleet))
            .arg("-o")
            .arg(&tree),
    );
    tree
}

/// The objects an engine applies from a rendered tree: the `kubectl kustomize` build of each
/// of [`APPLIED_DIRS`] the tree has.
pub fn applied_objects(tree: &Path) -> Vec<Value> {
    APPLIED_DIRS
        .iter()
        .map(|dir| tree.join(dir))
        .filter(|dir| dir.is_dir())
        .flat_map(|dir| documents(&checked(Command::new("kubectl").arg("kustomize").arg(&dir))))
        .collect()
}

/// The documents of a YAML stream, empty ones left out.
pub fn documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .unwrap_or_else(|e| panic!("not YAML: {e}\n{yaml}"))
        .into_iter()
        .filter(|doc| !doc.is_null())
        .collect()
}

/// Writes objects as a YAML stream (JSON documents) for kubectl's `-f`.
pub fn write_stream(path: &Path, objects: &[Value]) {
    let text: String = objects.iter().map(|o| format!("---\n{o}\n")).collect();
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Creates the namespaces if they are missing (server-side apply: nothing changes when they
/// exist).
pub fn ensure_namespaces<'a>(names: impl IntoIterator<Item = &'a str>) {
    let dir = tempfile::tempdir().unwrap();
    let objects: Vec<Value> = names
        .into_iter()
        .map(|name| serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
        .collect();
    if objects.is_empty() {
        return;
    }
    let file = dir.path().join("namespaces.yaml");
    write_stream(&file, &objects);
    apply(&file, false);
}

/// `kubectl apply --server-side` with strict field validation, as meshvm's test field manager
/// (forcing: the fleets share objects), for real or as the server's dry run.
pub fn apply(file: &Path, dry_run: bool) -> Output {
    let mut cmd = kubectl();
    cmd.args([
        "apply",
        "--server-side",
        "--force-conflicts",
        "--validate=strict",
    ])
    .arg("--field-manager=meshvm-test")
    .arg("-f")
    .arg(file);
    if dry_run {
        cmd.arg("--dry-run=server");
    }
    output(&mut cmd)
}

/// The objects `istioctl manifest generate -f FILE` renders (written to a file: istioctl also
/// prints its warnings on stdout).
pub fn manifest_generate(file: &Path) -> Result<Vec<Value>, String> {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("manifest.yaml");
    let out = output(
        istioctl()
            .args(["manifest", "generate", "-f"])
            .arg(file)
            .arg("-o")
            .arg(&manifest),
    );
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(documents(&std::fs::read_to_string(&manifest).unwrap()))
}

/// `kind namespace/name` of an object, for messages and look-ups.
pub fn identity(object: &Value) -> String {
    let meta = &object["metadata"];
    format!(
        "{} {}/{}",
        object["kind"].as_str().unwrap_or("?"),
        meta["namespace"].as_str().unwrap_or(""),
        meta["name"].as_str().unwrap_or("?")
    )
}
