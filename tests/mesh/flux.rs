//! A real Flux reconciles what meshvm pushes: `meshvm gitops sync --push` to a git smart-HTTP
//! server on 127.0.0.1 (git http-backend behind the system tier's bridge: Flux's GitRepository
//! takes only http(s) and ssh URLs), and the harness's source-controller and
//! kustomize-controller (built from their Go modules, `cargo xtask mesh build --flux`) apply
//! it to the harness's API server. The fleet is fixtures/flux/meshvm.yaml.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{checked, documents, fleet_turn, harness_var, identity, kubectl, output};
use crate::servers::HttpGit;
use crate::support::gitops::{Scratch, ok};
use crate::support::{bare_repo, git, run};

/// Where the fixture fleet puts its tree, and the names of its Flux objects.
const OWNED: &str = "clusters/flux";
const GIT_REPOSITORY: &str = "meshvm-fluxtest";
/// How long Flux may take to fetch a revision and apply every Kustomization.
const RECONCILE_TIMEOUT: Duration = Duration::from_secs(120);

/// The fleet's VMs, in the fixture's order: (group, name, address).
const VMS: [(&str, &str, &str); 3] = [
    ("web", "web-1", "10.0.0.31"),
    ("web", "web-2", "10.0.0.32"),
    ("db", "db-1", "10.0.0.41"),
];

/// A bare repository served over smart HTTP, the fleet pointed at it, and the Flux objects
/// meshvm rendered applied once by hand (as docs/tree.md says); suspended again on drop, so
/// that nothing reconciles after the test.
struct Fluxed {
    scratch: Scratch,
    server: PathBuf,
    _http: HttpGit,
    url: String,
    /// The Flux objects of the fleet: kind/name.
    objects: Vec<String>,
    /// The fleet's `gitops.bucketThreshold`.
    threshold: Option<u32>,
}

impl Fluxed {
    fn start() -> Fluxed {
        Fluxed::start_with(None)
    }

    fn start_with(threshold: Option<u32>) -> Fluxed {
        let namespace = harness_var("MESH_FLUX_NAMESPACE");
        assert_eq!(namespace, Path::new("flux-system"), "meshvm's default");
        let scratch = Scratch::new();
        let server = bare_repo(&scratch.srv(), "mesh.git");
        let http = HttpGit::start(&scratch.srv(), None);
        let url = http.url("mesh.git");
        let mut fluxed = Fluxed {
            scratch,
            server,
            _http: http,
            url,
            objects: Vec::new(),
            threshold,
        };
        fluxed.fleet(&VMS);
        fluxed.sync();
        // The hand apply of flux/: from now on Flux keeps it (and everything else) in step.
        // Forced: an earlier test's bootstrap Kustomization owns these objects' fields.
        let tree = fluxed.rendered_objects();
        let out = output(
            kubectl()
                .args([
                    "apply",
                    "--server-side",
                    "--force-conflicts",
                    "--field-manager=meshvm-test",
                    "-k",
                ])
                .arg(tree.join("flux")),
        );
        assert!(
            out.status.success(),
            "kubectl apply -k flux/: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // An earlier test of this binary left them suspended: the GitRepository resumes
        // first and fetches this test's server, so that no Kustomization, the bootstrap one
        // above all, applies the earlier test's artifact (its URL) once resumed.
        fluxed.suspend(false, |o| o.starts_with("GitRepository/"));
        wait("the GitRepository to fetch this test's server", || {
            let status = flux_status("gitrepository", GIT_REPOSITORY)?;
            (status["artifact"]["revision"] == fluxed.main_revision().as_str()).then_some(())
        });
        fluxed.suspend(false, |o| !o.starts_with("GitRepository/"));
        fluxed
    }

    /// Renders the fleet and notes its Flux objects; the rendered tree.
    fn rendered_objects(&mut self) -> PathBuf {
        let tree = self.render();
        self.objects = built(&tree.join("flux"))
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect();
        tree
    }

    /// Suspends (or resumes) the fleet's Flux objects (`Kind/name`) that `which` selects.
    fn suspend(&self, suspend: bool, which: impl Fn(&str) -> bool) {
        let patch = format!(r#"{{"spec":{{"suspend":{suspend}}}}}"#);
        for object in self.objects.iter().filter(|o| which(o)) {
            let out = output(kubectl().args([
                "patch",
                "-n",
                "flux-system",
                "--type=merge",
                "-p",
                &patch,
                &object.to_lowercase(),
            ]));
            assert!(
                out.status.success() || std::thread::panicking(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Writes the fixture fleet with the server's URL and these VMs.
    fn fleet(&self, vms: &[(&str, &str, &str)]) {
        let fixture = std::fs::read_to_string(testkit::fixture("flux/meshvm.yaml")).unwrap();
        let mut text = String::new();
        let mut group = "";
        for line in fixture.lines() {
            let trimmed = line.trim_start();
            if let Some(name) = trimmed.strip_prefix("- name: ") {
                group = if line.starts_with("  - ") {
                    name
                } else {
                    group
                };
            }
            if trimmed.starts_with("- {name: ") {
                continue; // the fixture's instances: replaced below
            }
            text.push_str(&line.replace("http://127.0.0.1:1/mesh.git", &self.url));
            text.push('\n');
            if let (Some(threshold), "engines: [flux]") = (self.threshold, trimmed) {
                text.push_str(&format!("  bucketThreshold: {threshold}\n"));
            }
            if trimmed == "instances:" {
                for (_, name, address) in vms.iter().filter(|(g, ..)| *g == group) {
                    text.push_str(&format!("      - {{name: {name}, address: {address}}}\n"));
                }
            }
        }
        std::fs::write(self.scratch.path().join("meshvm.yaml"), text).unwrap();
    }

    /// `meshvm gitops sync --push` to the server; its stdout.
    fn sync(&self) -> String {
        let r = run(&mut self
            .scratch
            .meshvm(&["sync", "--push", "--repo", &self.url]));
        ok(&r);
        r.stdout
    }

    fn render(&self) -> PathBuf {
        let tree = self.scratch.path().join("rendered");
        let _ = std::fs::remove_dir_all(&tree);
        let r = run(crate::cluster::meshvm()
            .args(["render", "-f"])
            .arg(self.scratch.path().join("meshvm.yaml"))
            .arg("-o")
            .arg(&tree));
        ok(&r);
        tree
    }

    /// The revision Flux names the server's main by: `main@sha1:<commit>`.
    fn main_revision(&self) -> String {
        format!(
            "main@sha1:{}",
            git(&self.server, &["rev-parse", "main"]).trim()
        )
    }

    /// The Kustomizations meshvm rendered for the fleet.
    fn kustomizations(&self) -> Vec<&str> {
        let names: Vec<&str> = self
            .objects
            .iter()
            .filter_map(|o| o.strip_prefix("Kustomization/"))
            .collect();
        assert!(
            names.len() >= 4,
            "bootstrap, mesh and two groups: {names:?}"
        );
        names
    }

    /// Asks Flux to reconcile the GitRepository now (as `flux reconcile source git` does) and
    /// waits until it has handled the request; its status then.
    fn refetch(&self) -> Value {
        let token = format!("{:?}", Instant::now());
        let annotation = format!("reconcile.fluxcd.io/requestedAt={token}");
        let out = output(
            kubectl()
                .args(["annotate", "--overwrite", "-n", "flux-system"])
                .args(["gitrepository", GIT_REPOSITORY, &annotation]),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait("the GitRepository to handle a reconcile request", || {
            let status = flux_status("gitrepository", GIT_REPOSITORY)?;
            (status["lastHandledReconcileAt"] == token.as_str()).then_some(status)
        })
    }

    /// Waits until the GitRepository and every Kustomization are Ready at the server's main;
    /// returns that revision.
    fn wait_applied(&self) -> String {
        let revision = self.main_revision();
        wait(&format!("the GitRepository ready at {revision}"), || {
            let status = flux_status("gitrepository", GIT_REPOSITORY)?;
            (ready(&status) && status["artifact"]["revision"] == revision.as_str()).then_some(())
        });
        for name in self.kustomizations() {
            wait(&format!("Kustomization {name} ready at {revision}"), || {
                let status = flux_status("kustomization", name)?;
                (ready(&status) && status["lastAppliedRevision"] == revision.as_str()).then_some(())
            });
        }
        revision
    }
}

impl Drop for Fluxed {
    fn drop(&mut self) {
        // Nothing reconciles after the test: the objects stay, Flux leaves them alone.
        self.suspend(true, |_| true);
    }
}

/// The objects of one kustomization directory, as `kubectl kustomize` builds them.
fn built(dir: &Path) -> Vec<Value> {
    documents(&checked(
        std::process::Command::new("kubectl")
            .arg("kustomize")
            .arg(dir),
    ))
}

/// The status of a Flux object, when it exists.
fn flux_status(kind: &str, name: &str) -> Option<Value> {
    let out = output(kubectl().args(["get", "-n", "flux-system", "-o", "json", kind, name]));
    if !out.status.success() {
        return None;
    }
    let object: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(object["status"].clone())
}

/// Whether a Flux status says Ready=True.
fn ready(status: &Value) -> bool {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Polls `done` until it gives a value; fails with the controllers' log tails after
/// [`RECONCILE_TIMEOUT`].
fn wait<T>(what: &str, mut done: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + RECONCILE_TIMEOUT;
    loop {
        if let Some(value) = done() {
            return value;
        }
        if Instant::now() > deadline {
            let tail = |var: &str| {
                let text = std::fs::read_to_string(harness_var(var)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().rev().take(15).collect();
                lines.into_iter().rev().collect::<Vec<_>>().join("\n")
            };
            let state = output(kubectl().args([
                "get",
                "-n",
                "flux-system",
                "gitrepositories,kustomizations",
            ]));
            panic!(
                "timed out waiting for {what}:\n{}\nsource-controller:\n{}\nkustomize-controller:\n{}",
                String::from_utf8_lossy(&state.stdout),
                tail("MESH_FLUX_SOURCE_LOG"),
                tail("MESH_FLUX_KUSTOMIZE_LOG")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// An object in the API server, when it exists.
fn get(kind: &str, namespace: &str, name: &str) -> Option<Value> {
    let out = output(kubectl().args([
        "get",
        "--show-managed-fields",
        "-o",
        "json",
        "-n",
        namespace,
        kind,
        name,
    ]));
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains("NotFound"),
            "kubectl get {kind} {name}: {said}"
        );
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

fn workload_entry(namespace: &str, name: &str) -> Option<Value> {
    get("workloadentries.networking.istio.io", namespace, name)
}

#[test]
fn flux_applies_every_kustomization_meshvm_renders_and_an_unchanged_sync_is_no_new_revision() {
    let _turn = fleet_turn();
    let fluxed = Fluxed::start();
    let revision = fluxed.wait_applied();

    // Every object of mesh/ and workloads/ is in the API server, applied by Flux's
    // kustomize-controller (its field manager), not by the test.
    let tree = fluxed.render();
    let objects: Vec<Value> = ["mesh", "workloads"]
        .iter()
        .flat_map(|dir| built(&tree.join(dir)))
        .collect();
    let kinds: std::collections::BTreeSet<&str> =
        objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "WorkloadGroup",
        "WorkloadEntry",
        "ServiceEntry",
    ] {
        assert!(
            kinds.contains(kind),
            "the fleet renders a {kind}: {kinds:?}"
        );
    }
    for object in &objects {
        let name = object["metadata"]["name"].as_str().unwrap();
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or("");
        let kind = object["kind"].as_str().unwrap();
        let group = object["apiVersion"].as_str().unwrap().split_once('/');
        let resource = match group {
            Some((group, _)) => format!("{}.{group}", kind.to_lowercase()),
            None => kind.to_lowercase(),
        };
        let stored = get(&resource, namespace, name)
            .unwrap_or_else(|| panic!("{} is not in the API server", identity(object)));
        let managers: Vec<&str> = stored["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["manager"].as_str())
            .collect();
        assert!(
            managers.contains(&"kustomize-controller"),
            "{} was not applied by Flux: managers {managers:?}",
            identity(object)
        );
    }

    // An unchanged fleet: no commit, and Flux, asked to fetch again, has the same revision;
    // no Kustomization applies anything new.
    let said = fluxed.sync();
    assert!(said.contains("no commit"), "{said}");
    assert_eq!(
        fluxed.kustomizations().len(),
        4,
        "bootstrap, mesh and two groups"
    );
    let status = fluxed.refetch();
    assert_eq!(status["artifact"]["revision"], revision.as_str());
    for name in fluxed.kustomizations() {
        let status = flux_status("kustomization", name).unwrap();
        assert_eq!(status["lastAppliedRevision"], revision.as_str(), "{name}");
    }
}

#[test]
fn a_vm_removed_from_the_fleet_is_pruned_by_flux_and_its_namespace_kept() {
    let _turn = fleet_turn();
    let fluxed = Fluxed::start();
    fluxed.wait_applied();
    assert!(workload_entry("flux-web", "web-2").is_some());

    // web-2 leaves the fleet: a new commit, Flux fetches it and prunes its WorkloadEntry.
    fluxed.fleet(&[VMS[0], VMS[2]]);
    let said = fluxed.sync();
    assert!(said.contains("committed "), "{said}");
    let before = fluxed.refetch();
    let revision = fluxed.wait_applied();
    assert_ne!(before["artifact"]["revision"], Value::Null);
    assert_eq!(before["artifact"]["revision"], revision.as_str());
    assert!(
        workload_entry("flux-web", "web-2").is_none(),
        "web-2's WorkloadEntry was not pruned"
    );
    let kept = workload_entry("flux-web", "web-1").expect("web-1 stays");
    assert_eq!(kept["spec"]["address"], "10.0.0.31");
    assert!(workload_entry("flux-db", "db-1").is_some());
    // The namespaces stay, marked so that no engine prunes them.
    for namespace in ["flux-web", "flux-db"] {
        let ns = get("namespace", "", namespace).unwrap_or_else(|| panic!("{namespace} gone"));
        assert!(ns["metadata"]["deletionTimestamp"].is_null(), "{namespace}");
        assert_eq!(
            ns["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/prune"],
            "disabled"
        );
    }
}

#[test]
fn a_hand_edit_meshvm_refuses_never_reaches_the_cluster() {
    let _turn = fleet_turn();
    let fluxed = Fluxed::start();
    let revision = fluxed.wait_applied();

    // The pipeline's repository: a clone of the server that meshvm syncs into and pushes
    // from. Someone hand-edits a WorkloadEntry there.
    let local = fluxed.scratch.path().join("pipeline.git");
    crate::support::checked(
        std::process::Command::new("git")
            .args(["clone", "-q", "--bare", &fluxed.url])
            .arg(&local),
    );
    let work = fluxed.scratch.path().join("human");
    crate::support::checked(
        std::process::Command::new("git")
            .args(["clone", "-q"])
            .arg(&local)
            .arg(&work),
    );
    let edited = format!("{OWNED}/workloads/flux-web/web/vms/web-1/workloadentry.yaml");
    let text = std::fs::read_to_string(work.join(&edited)).unwrap();
    assert!(text.contains("10.0.0.31"), "{text}");
    std::fs::write(work.join(&edited), text.replace("10.0.0.31", "10.9.9.9")).unwrap();
    git(&work, &["commit", "-q", "-am", "hotfix web-1"]);
    git(&work, &["push", "-q", "origin", "HEAD:main"]);

    // The next fleet change is refused (the hand edit is listed), so nothing is pushed.
    fluxed.fleet(&[VMS[0], VMS[1], VMS[2], ("web", "web-3", "10.0.0.33")]);
    let local_arg = local.to_str().unwrap().to_owned();
    let r = run(&mut fluxed
        .scratch
        .meshvm(&["sync", "--push", "--repo", &local_arg]));
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains(&edited), "{}", r.stderr);
    assert_eq!(fluxed.main_revision(), revision, "nothing was pushed");

    // Flux, asked to fetch again, has the same revision; the cluster has meshvm's address
    // and no web-3.
    let status = fluxed.refetch();
    assert_eq!(status["artifact"]["revision"], revision.as_str());
    let entry = workload_entry("flux-web", "web-1").unwrap();
    assert_eq!(entry["spec"]["address"], "10.0.0.31");
    assert!(workload_entry("flux-web", "web-3").is_none());
}

/// A group that crosses `gitops.bucketThreshold` is split: Flux applies it through one
/// Kustomization per bucket, all Ready at the new commit, and the WorkloadEntries of the VMs
/// it already had are taken over by their buckets, never deleted and created again (same
/// uid): the group's Kustomization prunes only after its buckets applied (docs/tree.md).
#[test]
fn a_group_crossing_the_bucket_threshold_is_applied_by_its_buckets_without_recreating_entries() {
    let _turn = fleet_turn();
    // Threshold 2: `web` (2 VMs) is not split yet.
    let mut fluxed = Fluxed::start_with(Some(2));
    fluxed.wait_applied();
    let uid = |name: &str| {
        let entry = workload_entry("flux-web", name).unwrap_or_else(|| panic!("{name}"));
        entry["metadata"]["uid"].as_str().unwrap().to_owned()
    };
    let before = [uid("web-1"), uid("web-2")];
    assert_eq!(fluxed.kustomizations().len(), 4, "not split yet");

    // Two more VMs: 4 > 2, so `web` is split into ceil(2 * 4 / 2) = 4 buckets.
    let grown = [
        VMS[0],
        VMS[1],
        VMS[2],
        ("web", "web-11", "10.0.0.51"),
        ("web", "web-12", "10.0.0.52"),
    ];
    fluxed.fleet(&grown);
    let said = fluxed.sync();
    assert!(said.contains("committed "), "{said}");
    fluxed.rendered_objects();
    let buckets: Vec<String> = fluxed
        .kustomizations()
        .into_iter()
        .filter(|name| name.starts_with("meshvm-fluxtest-flux-web.web."))
        .map(str::to_owned)
        .collect();
    assert_eq!(buckets.len(), 4, "{buckets:?}");
    fluxed.wait_applied();

    for (group, name, address) in grown {
        let entry = workload_entry(&format!("flux-{group}"), name)
            .unwrap_or_else(|| panic!("{name} is not in the API server"));
        assert_eq!(entry["spec"]["address"], address);
        let owner = entry["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if group == "web" {
            assert!(buckets.contains(&owner), "{name} is applied by {owner}");
        } else {
            assert_eq!(owner, "meshvm-fluxtest-flux-db.db", "{name}");
        }
    }
    assert_eq!(
        [uid("web-1"), uid("web-2")],
        before,
        "the entries were taken over by the buckets, not deleted and created again"
    );

    // Leave the cluster as the other tests expect it: no bucket Kustomizations (Orphan: the
    // entries stay) and none of this test's extra VMs.
    for bucket in &buckets {
        checked(kubectl().args(["delete", "-n", "flux-system", "kustomization", bucket]));
    }
    fluxed
        .objects
        .retain(|o| !buckets.iter().any(|b| o.ends_with(b.as_str())));
    for name in ["web-11", "web-12"] {
        checked(kubectl().args([
            "delete",
            "-n",
            "flux-web",
            "workloadentries.networking.istio.io",
            name,
        ]));
    }
}
