//! Flux's source-controller and kustomize-controller out of cluster against the harness's API
//! server, so that the real-cluster tests can show what a real engine does with what meshvm
//! pushes (tests/mesh/flux.rs).
//!
//! - Built from their Go modules at pinned versions (tests/upstream-flux, `mesh build --flux`)
//!   and started by `up` when built; their CRDs are the ones in those modules
//!   (`config/crd/bases`, found with `go list -m -json`), applied over ../shared/crds' copies.
//! - Kept small: the two controllers only, no leader election, no metrics, no events
//!   receiver; health probes and source-controller's artifact server on 127.0.0.1 free ports
//!   (kustomize-controller downloads artifacts from the address source-controller advertises).
//! - Dependencies are re-checked every 2 s (`--requeue-dependency`, 30 s upstream), so a
//!   group's Kustomization follows the mesh one within seconds.

use std::path::PathBuf;
use std::process::Command;

use super::Paths;
use super::build::{FLUX_MODULE, Tool};
use super::cluster::{
    Process, curl, free_ports, kubectl, spawn_in, wait_crds_established, wait_for,
};

/// The namespace Flux's objects live in (meshvm's default `gitops.flux.namespace`).
pub const NAMESPACE: &str = "flux-system";

pub(super) const SOURCE_CONTROLLER: Process = Process::of(Tool::SourceController);
pub(super) const KUSTOMIZE_CONTROLLER: Process = Process::of(Tool::KustomizeController);

/// The Go modules whose `config/crd/bases` hold the CRDs the two controllers serve.
const MODULES: [&str; 2] = [
    "github.com/fluxcd/source-controller",
    "github.com/fluxcd/kustomize-controller",
];

fn env_file(paths: &Paths) -> PathBuf {
    paths.state.join("flux.env")
}

/// What `mesh env` adds when Flux runs (nothing otherwise): MESH_FLUX_NAMESPACE and the two
/// controllers' logs.
pub fn env(paths: &Paths) -> Result<Vec<(String, String)>, String> {
    let file = env_file(paths);
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", file.display())),
    };
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// The CRD files of the controllers' modules, from the module cache (never copied).
fn crd_files(paths: &Paths) -> Result<Vec<PathBuf>, String> {
    let module = paths.root.join(FLUX_MODULE);
    let mut cmd = Command::new("go");
    cmd.args(["list", "-m", "-json"])
        .args(MODULES)
        .current_dir(&module)
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=readonly");
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut files = Vec::new();
    for module in serde_json::Deserializer::from_slice(&out.stdout).into_iter::<serde_json::Value>()
    {
        let module = module.map_err(|e| format!("{cmd:?} printed no JSON: {e}"))?;
        let dir = module["Dir"].as_str().ok_or_else(|| {
            format!(
                "{} is not in the module cache: run `cargo xtask mesh build --flux`",
                module["Path"]
            )
        })?;
        let bases = PathBuf::from(dir).join("config/crd/bases");
        let entries = std::fs::read_dir(&bases).map_err(|e| format!("{}: {e}", bases.display()))?;
        files.extend(
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "yaml")),
        );
    }
    files.sort();
    if files.is_empty() {
        return Err(format!("no CRDs in the modules {MODULES:?}"));
    }
    Ok(files)
}

/// Applies the controllers' CRDs, creates their namespace and starts them; waits for their
/// readiness probes.
pub fn start(paths: &Paths) -> Result<(), String> {
    let crds = crd_files(paths)?;
    let mut args = vec!["apply", "--server-side", "--field-manager=meshvm-harness"];
    for file in &crds {
        args.extend(["-f", file.to_str().ok_or("a CRD path is not UTF-8")?]);
    }
    kubectl(paths, &args)?;
    wait_crds_established(paths)?;
    kubectl(paths, &["create", "namespace", NAMESPACE])?;

    let [storage, source_health, kustomize_health] = free_ports::<3>()?;
    let storage_dir = paths.state.join("flux-artifacts");
    std::fs::create_dir_all(&storage_dir).map_err(|e| format!("{}: {e}", storage_dir.display()))?;
    let common = |health: u16| {
        vec![
            "--metrics-addr=0".to_string(),
            format!("--health-addr=127.0.0.1:{health}"),
            "--log-encoding=console".into(),
        ]
    };
    let envs = [
        ("KUBECONFIG", paths.kubeconfig().display().to_string()),
        ("RUNTIME_NAMESPACE", NAMESPACE.to_string()),
        // Out of cluster: never the in-cluster configuration.
        ("KUBERNETES_SERVICE_HOST", String::new()),
    ];
    let mut source_args = common(source_health);
    source_args.extend([
        format!("--storage-path={}", storage_dir.display()),
        format!("--storage-addr=127.0.0.1:{storage}"),
        format!("--storage-adv-addr=127.0.0.1:{storage}"),
    ]);
    spawn_in(paths, SOURCE_CONTROLLER, &source_args, &paths.state, &envs)?;
    let mut kustomize_args = common(kustomize_health);
    kustomize_args.extend([
        "--requeue-dependency=2s".to_string(),
        "--no-remote-bases=true".into(),
    ]);
    spawn_in(
        paths,
        KUSTOMIZE_CONTROLLER,
        &kustomize_args,
        &paths.state,
        &envs,
    )?;
    for (process, port) in [
        (SOURCE_CONTROLLER, source_health),
        (KUSTOMIZE_CONTROLLER, kustomize_health),
    ] {
        wait_for(paths, process, &format!("{} /readyz", process.name), || {
            curl(&format!("http://127.0.0.1:{port}/readyz")).is_some()
        })?;
    }
    let log = |p: Process| super::cluster::log_file(paths, p).display().to_string();
    let vars = [
        ("MESH_FLUX_NAMESPACE", NAMESPACE.to_string()),
        ("MESH_FLUX_SOURCE_LOG", log(SOURCE_CONTROLLER)),
        ("MESH_FLUX_KUSTOMIZE_LOG", log(KUSTOMIZE_CONTROLLER)),
    ];
    let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    let file = env_file(paths);
    std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))
}
