//! The GitOps tree (`meshvm::render`): snapshots of whole trees, and its invariants.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use meshvm::k8s::kustomize::{self, Kustomization};
use meshvm::render::{Rendered, render};
use meshvm::render::{buckets, layout};
use meshvm::spec::{Engine, Fleet, Instance};
use testkit::fixture_fleets;

fn fixture_path(name: &str) -> PathBuf {
    testkit::fixture(&format!("fleets/{name}/meshvm.yaml"))
}

fn load(name: &str) -> meshvm::spec::SourceFile {
    meshvm::spec::load_fleet(&fixture_path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The fixture's fleet as data, to change before rendering it with [`render_ok`].
fn fleet_of(name: &str) -> Fleet {
    load(name).fleet.fleet().clone()
}

/// Renders a fleet as a file of it renders: checked by the loader first.
fn render_ok(fleet: &Fleet) -> Rendered {
    let yaml = meshvm::k8s::yaml::to_string(fleet);
    render(&meshvm::spec::load_fleet_str(&yaml, "fleet.yaml".as_ref()).expect("a valid fleet"))
}

fn text(r: &Rendered, path: &str) -> String {
    String::from_utf8(r.files.get(path).expect(path).bytes.clone()).unwrap()
}

/// Every file of the tree, as `### path (mode)` and its content.
fn listing(r: &Rendered) -> String {
    let mut out = String::new();
    for (path, file) in r.files.iter() {
        let object = if r.objects.contains(path) {
            " object"
        } else {
            ""
        };
        out.push_str(&format!("### {path} ({:o}{object})\n", file.mode));
        out.push_str(&String::from_utf8_lossy(&file.bytes));
        if !file.bytes.ends_with(b"\n") {
            out.push('\n');
        }
    }
    out
}

#[test]
fn snapshots_of_the_fixture_trees() {
    for name in &fixture_fleets() {
        let source = load(name);
        let r = render(&source.fleet);
        insta::assert_snapshot!(format!("tree-{name}"), listing(&r));
    }
}

#[test]
fn same_fleet_same_bytes_whatever_the_order_of_the_file() {
    for name in &fixture_fleets() {
        let fleet = fleet_of(name);
        let first = render_ok(&fleet);
        assert_eq!(
            first,
            render_ok(&fleet),
            "{name}: rendering is deterministic"
        );
        let mut shuffled = fleet.clone();
        shuffled.workloads.reverse();
        for w in &mut shuffled.workloads {
            w.instances.reverse();
        }
        assert_eq!(
            first,
            render_ok(&shuffled),
            "{name}: the order of groups and VMs in the file does not matter"
        );
    }
}

/// Paths added, removed and changed from `a` to `b`.
fn diff(a: &Rendered, b: &Rendered) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let pa: BTreeSet<String> = a.files.paths().map(str::to_owned).collect();
    let pb: BTreeSet<String> = b.files.paths().map(str::to_owned).collect();
    let added = pb.difference(&pa).cloned().collect();
    let removed = pa.difference(&pb).cloned().collect();
    let changed = pa
        .intersection(&pb)
        .filter(|p| a.files.get(p) != b.files.get(p))
        .cloned()
        .collect();
    (added, removed, changed)
}

#[test]
fn adding_a_vm_adds_its_files_and_touches_only_its_group_listing() {
    for name in &fixture_fleets() {
        let fleet = fleet_of(name);
        for (gi, w) in fleet.workloads.iter().enumerate() {
            let mut bigger = fleet.clone();
            bigger.workloads[gi].instances.push(Instance {
                name: "added-vm".into(),
                address: "10.99.0.1".into(),
                external: false,
                labels: BTreeMap::new(),
                locality: None,
                weight: None,
            });
            let (before, after) = (render_ok(&fleet), render_ok(&bigger));
            let (added, removed, changed) = diff(&before, &after);
            let vm_dir = format!("{}/", layout::vm_dir(&w.namespace, &w.name, "added-vm"));
            assert!(removed.is_empty(), "{name}: {removed:?}");
            assert!(
                added.iter().all(|p| p.starts_with(&vm_dir)),
                "{name}: only the new VM's files are added: {added:?}"
            );
            // The listing of the VM's group, or of its bucket when the group is split.
            let threshold = fleet.gitops.bucket_threshold;
            let group_listing = match buckets::split(&bigger.workloads[gi], threshold) {
                Some(after) => {
                    let count = after.len() as u32;
                    assert_eq!(
                        buckets::split(w, threshold).map(|b| b.len()),
                        Some(after.len()),
                        "{name}: the fixture keeps its bucket count with one more VM"
                    );
                    format!(
                        "{}/{}",
                        layout::bucket_dir(
                            &w.namespace,
                            &w.name,
                            buckets::bucket_of("added-vm", count)
                        ),
                        kustomize::FILE_NAME
                    )
                }
                None => format!(
                    "{}/{}",
                    layout::group_dir(&w.namespace, &w.name),
                    kustomize::FILE_NAME
                ),
            };
            let expected: BTreeSet<String> = if w.auto_register {
                BTreeSet::new()
            } else {
                assert!(added.contains(&format!("{vm_dir}{}", layout::WORKLOAD_ENTRY_FILE)));
                [group_listing].into()
            };
            assert_eq!(
                changed, expected,
                "{name}: only the files listing VMs change"
            );

            // And back: removing it deletes exactly its files.
            let (added_back, removed_back, changed_back) = diff(&after, &before);
            assert!(added_back.is_empty());
            assert_eq!(
                removed_back, added,
                "{name}: removing deletes exactly its files"
            );
            assert_eq!(changed_back, changed);
        }
    }
}

/// The object files an engine applies from `dir`, following kustomizations' resources.
fn applied_from(r: &Rendered, dir: &str, out: &mut Vec<String>) {
    let k: Kustomization =
        serde_saphyr::from_str(&text(r, &format!("{dir}/{}", kustomize::FILE_NAME))).unwrap();
    for res in &k.resources {
        // A bucket lists `../../vms/<vm>`: resolve `..` as kustomize does.
        let mut parts: Vec<&str> = Vec::new();
        for part in dir.split('/').chain(res.split('/')) {
            match part {
                ".." => assert!(parts.pop().is_some(), "{dir}/{res} leaves the tree"),
                _ => parts.push(part),
            }
        }
        let path = parts.join("/");
        if r.files
            .contains(&format!("{path}/{}", kustomize::FILE_NAME))
        {
            applied_from(r, &path, out);
        } else {
            assert!(
                r.objects.contains(&path),
                "{path} is listed but is no object"
            );
            out.push(path);
        }
    }
}

/// The directories each engine applies, one per Argo CD Application or Flux Kustomization:
/// `mesh/` and one per group (Argo CD's ApplicationSet makes one Application per directory
/// `workloads/*/*`; Flux has one Kustomization per group).
fn engine_roots(r: &Rendered, engine: Engine) -> Vec<String> {
    // Group directories, and the bucket directories of split groups.
    let groups: BTreeSet<String> = r
        .files
        .paths()
        .filter(|p| p.starts_with(&format!("{}/", layout::WORKLOADS_DIR)))
        .filter_map(|p| {
            let parts: Vec<&str> = p.split('/').collect();
            if parts.len() == 6 && parts[3] == layout::BUCKETS_DIR {
                return Some(parts[..5].join("/"));
            }
            (parts.len() > 3).then(|| parts[..3].join("/"))
        })
        .collect();
    if engine == Engine::Flux {
        // Flux's group Kustomizations are rendered files: check they are exactly these.
        let rendered: BTreeSet<String> = r
            .files
            .paths()
            .filter(|p| p.starts_with("flux/workloads/"))
            .map(|p| {
                let v: serde_json::Value = serde_saphyr::from_str(&text(r, p)).unwrap();
                let path = v["spec"]["path"].as_str().unwrap();
                path[path.find("workloads/").unwrap()..].to_owned()
            })
            .collect();
        if r.files.paths().any(|p| p.starts_with("flux/")) {
            assert_eq!(
                rendered, groups,
                "one Flux Kustomization per group and per bucket"
            );
        }
    }
    std::iter::once(layout::MESH_DIR.to_owned())
        .chain(groups)
        .collect()
}

#[test]
fn every_applied_object_belongs_to_exactly_one_application_or_kustomization() {
    for name in &fixture_fleets() {
        let r = render_ok(&load(name).fleet);
        // What the engines apply: everything but the install files and the engines' own.
        let applied: BTreeSet<&str> = r
            .objects
            .iter()
            .map(String::as_str)
            .filter(|p| p.starts_with("mesh/") || p.starts_with("workloads/"))
            .collect();
        // The one list of application paths names exactly these directories.
        let fleet = load(name).fleet.fleet().clone();
        let listed: Vec<String> = layout::application_dirs(&fleet)
            .into_iter()
            .filter(|d| d != layout::ARGOCD_DIR && d != layout::FLUX_DIR)
            .collect();
        assert_eq!(listed, engine_roots(&r, Engine::Argocd), "{name}");
        for engine in [Engine::Argocd, Engine::Flux] {
            let mut owner: BTreeMap<String, String> = BTreeMap::new();
            for root in engine_roots(&r, engine) {
                let mut objects = Vec::new();
                applied_from(&r, &root, &mut objects);
                for object in objects {
                    if let Some(first) = owner.insert(object.clone(), root.clone()) {
                        panic!("{name}: {object} is applied by both {first} and {root}");
                    }
                }
            }
            let owned: BTreeSet<&str> = owner.keys().map(String::as_str).collect();
            assert_eq!(
                owned, applied,
                "{name}: {engine:?} applies every object of mesh/ and workloads/"
            );
        }
    }
}

#[test]
fn objects_are_unique_and_managed_by_meshvm() {
    for name in &fixture_fleets() {
        let r = render_ok(&load(name).fleet);
        let mut ids = BTreeSet::new();
        for path in &r.objects {
            let v: serde_json::Value = serde_saphyr::from_str(&text(&r, path)).unwrap();
            assert_eq!(
                v["metadata"]["labels"]["app.kubernetes.io/managed-by"], "meshvm",
                "{name}: {path}"
            );
            let id = format!(
                "{}/{}/{}/{}",
                v["apiVersion"], v["kind"], v["metadata"]["namespace"], v["metadata"]["name"]
            );
            assert!(ids.insert(id.clone()), "{name}: {id} rendered twice");
        }
        assert!(r.files.contains(layout::README));
        assert!(text(&r, layout::README).contains(meshvm::render::README_MARKER));
    }
}

#[test]
fn kustomizations_use_kustomize_v5_fields_only() {
    for name in &fixture_fleets() {
        let r = render_ok(&load(name).fleet);
        for (path, file) in r.files.iter() {
            if path.ends_with(kustomize::FILE_NAME) {
                let v: serde_json::Value =
                    serde_saphyr::from_str(std::str::from_utf8(&file.bytes).unwrap()).unwrap();
                for key in v.as_object().unwrap().keys() {
                    assert!(
                        ["apiVersion", "kind", "resources", "labels", "patches"]
                            .contains(&key.as_str()),
                        "{name}: {path} uses {key}"
                    );
                }
            }
        }
    }
}

#[test]
fn each_vm_has_its_overlay_unless_auto_registered_and_its_bootstrap_files() {
    for name in &fixture_fleets() {
        let source = load(name);
        let fleet = &source.fleet;
        let r = render(fleet);
        for (w, vm) in fleet.vms() {
            let dir = layout::vm_dir(&w.namespace, &w.name, &vm.name);
            let entry = format!("{dir}/{}", layout::WORKLOAD_ENTRY_FILE);
            let (listing, entry_line) = match buckets::split(w, fleet.gitops.bucket_threshold) {
                Some(b) => (
                    layout::bucket_dir(
                        &w.namespace,
                        &w.name,
                        buckets::bucket_of(&vm.name, b.len() as u32),
                    ),
                    format!("- ../../vms/{}\n", vm.name),
                ),
                None => (
                    layout::group_dir(&w.namespace, &w.name),
                    format!("- vms/{}\n", vm.name),
                ),
            };
            let group = text(&r, &format!("{listing}/{}", kustomize::FILE_NAME));
            let listed = group.contains(&entry_line);
            if w.auto_register {
                // istiod creates and deletes the WorkloadEntry itself.
                assert!(!r.files.contains(&entry) && !listed, "{name}: {entry}");
            } else {
                assert!(listed, "{name}: {group}");
                let we = text(&r, &entry);
                assert_eq!(
                    we.contains("proxy.istio.io/health-checks-enabled: \"true\""),
                    w.probe.is_some(),
                    "{name}: health checks exactly when the group has a probe:\n{we}"
                );
            }
            // The bootstrap files are the VM's files as `meshvm vm files` writes them, minus
            // nothing (the token is never part of them).
            let own = meshvm::vmfiles::vm_files(fleet, &vm.name).unwrap();
            let bootstrap = format!("{dir}/{}/", layout::BOOTSTRAP_DIR);
            let in_tree: Vec<&str> = r
                .files
                .paths()
                .filter_map(|p| p.strip_prefix(&bootstrap))
                .collect();
            assert_eq!(
                in_tree,
                own.paths().collect::<Vec<_>>(),
                "{name}: {}",
                vm.name
            );
            for (path, file) in own.iter() {
                assert_eq!(r.files.get(&format!("{bootstrap}{path}")), Some(file));
            }
            assert_eq!(
                r.files
                    .contains(&format!("{bootstrap}{}", meshvm::vmfiles::ROOT_CERT)),
                fleet.root_cert().is_some()
            );
        }
        for (path, file) in r.files.iter() {
            assert!(
                !path.ends_with(meshvm::vmfiles::ISTIO_TOKEN),
                "{name}: {path}"
            );
            assert_eq!(file.mode, meshvm::tree::MODE_PUBLIC, "{name}: {path}");
            assert!(!r.objects.contains(path) || !path.contains("/bootstrap/"));
        }
    }
}

#[test]
fn engines_are_rendered_as_listed() {
    let mut fleet = fleet_of("seed");
    for engines in [vec![], vec![Engine::Argocd], vec![Engine::Flux]] {
        fleet.gitops.engines = engines.clone();
        let r = render_ok(&fleet);
        let has = |dir: &str| r.files.paths().any(|p| p.starts_with(&format!("{dir}/")));
        assert_eq!(has(layout::ARGOCD_DIR), engines.contains(&Engine::Argocd));
        assert_eq!(has(layout::FLUX_DIR), engines.contains(&Engine::Flux));
    }
}

#[test]
fn a_fleet_without_workloads_renders_buildable_listings() {
    let mut fleet = fleet_of("seed");
    fleet.workloads.clear();
    let r = render_ok(&fleet);
    // kustomize refuses a kustomization without fields, but builds `resources: []`.
    assert!(text(&r, "workloads/kustomization.yaml").contains("resources: []"));
}

#[test]
fn the_object_stream_holds_every_object_once() {
    let r = render(&load("multi-network").fleet);
    let stream = r.object_stream();
    assert_eq!(stream.matches("\n---\n").count() + 1, r.objects.len());
    for path in &r.objects {
        assert!(stream.contains(&format!("# Source: {path}\n")), "{path}");
    }
    assert!(!stream.contains("kind: Kustomization\nresources"));
}

#[test]
fn a_missing_repo_url_is_a_problem_only_when_engines_are_rendered() {
    let text = std::fs::read_to_string(fixture_path("seed")).unwrap();
    let without = text.replace("  repoURL: https://git.example.com/mesh.git\n", "");
    let err = meshvm::spec::load_fleet_str(&without, "f.yaml".as_ref()).unwrap_err();
    assert!(err.to_string().contains("repoURL is missing"), "{err}");
    let no_engines = without.replace("engines: [argocd, flux]", "engines: []");
    meshvm::spec::load_fleet_str(&no_engines, "f.yaml".as_ref()).unwrap();
}

/// The per-VM renders run on rayon's pool; the merged tree must not depend on how many
/// threads there are or how the work was split.
#[test]
fn a_parallel_render_equals_a_single_threaded_one_byte_for_byte() {
    let one_thread = |fleet: &Fleet| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| render_ok(fleet))
    };
    let many_threads = |fleet: &Fleet| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap()
            .install(|| render_ok(fleet))
    };
    let mut fleets: Vec<Fleet> = fixture_fleets().iter().map(|name| fleet_of(name)).collect();
    fleets.push(meshvm::synthetic::fleet(1500));
    for fleet in &fleets {
        let sequential = one_thread(fleet);
        let parallel = many_threads(fleet);
        assert_eq!(sequential.objects, parallel.objects);
        assert_eq!(sequential.files.len(), parallel.files.len());
        for ((p1, f1), (p2, f2)) in sequential.files.iter().zip(parallel.files.iter()) {
            assert_eq!((p1, f1.mode), (p2, f2.mode));
            assert!(f1.bytes == f2.bytes, "{p1} differs between 1 and 4 threads");
        }
        assert_eq!(sequential, parallel);
    }
}

/// The engine objects (`argocd/`, `flux/`) of a render as `kind/namespace/name`.
fn engine_object_ids(r: &Rendered) -> BTreeSet<String> {
    r.objects
        .iter()
        .filter(|p| p.starts_with("argocd/") || p.starts_with("flux/"))
        .map(|p| {
            let v: serde_json::Value = serde_saphyr::from_str(&text(r, p)).unwrap();
            format!(
                "{}/{}/{}",
                v["kind"].as_str().unwrap(),
                v["metadata"]["namespace"].as_str().unwrap(),
                v["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

/// Issue 16, item 7: two fleets sharing one Argo CD (or Flux) collided on every engine object
/// name. With `gitops.name` set they share none; without it the names stay as they were.
#[test]
fn two_named_fleets_share_no_engine_object() {
    let mut a = fleet_of("seed");
    let mut b = fleet_of("seed");
    a.gitops.name = Some("payments".into());
    b.gitops.name = Some("billing".into());
    let (ra, rb) = (render_ok(&a), render_ok(&b));
    let (ia, ib) = (engine_object_ids(&ra), engine_object_ids(&rb));
    assert!(!ia.is_empty());
    assert!(
        ia.is_disjoint(&ib),
        "{:?}",
        ia.intersection(&ib).collect::<Vec<_>>()
    );
    assert!(
        ia.iter().all(|id| id.contains("/meshvm-payments")),
        "{ia:?}"
    );
    // The ApplicationSet names its Applications after the fleet too.
    assert!(text(&ra, "argocd/applicationset.yaml").contains("meshvm-payments-%s.%s"));
    let unnamed = engine_object_ids(&render_ok(&fleet_of("seed")));
    assert!(
        unnamed.contains("Application/argocd/meshvm-mesh"),
        "{unnamed:?}"
    );
    assert!(
        unnamed.contains("GitRepository/flux-system/meshvm"),
        "{unnamed:?}"
    );
}

/// Issue 16, item 7: Argo CD's namespace, AppProject and destination, and Flux's namespace
/// and shard, are fleet settings that reach every engine object.
#[test]
fn engine_settings_reach_every_engine_object() {
    let mut fleet = fleet_of("seed");
    fleet.gitops.argocd.namespace = "gitops".into();
    fleet.gitops.argocd.project = "mesh-vms".into();
    fleet.gitops.argocd.server = "https://cluster2.example.com:6443".into();
    fleet.gitops.flux.namespace = "flux".into();
    fleet.gitops.flux.shard = Some("shard2".into());
    let r = render_ok(&fleet);
    let mut argo = 0;
    let mut flux = 0;
    for path in r
        .objects
        .iter()
        .filter(|p| p.starts_with("argocd/") || p.starts_with("flux/"))
    {
        let v: serde_json::Value = serde_saphyr::from_str(&text(&r, path)).unwrap();
        if path.starts_with("argocd/") {
            argo += 1;
            assert_eq!(v["metadata"]["namespace"], "gitops", "{path}");
            let app = if v["kind"] == "ApplicationSet" {
                &v["spec"]["template"]["spec"]
            } else {
                &v["spec"]
            };
            assert_eq!(app["project"], "mesh-vms", "{path}");
            assert_eq!(
                app["destination"]["server"], "https://cluster2.example.com:6443",
                "{path}"
            );
        } else {
            flux += 1;
            assert_eq!(v["metadata"]["namespace"], "flux", "{path}");
            assert_eq!(
                v["metadata"]["labels"]["sharding.fluxcd.io/key"], "shard2",
                "{path}"
            );
        }
    }
    assert_eq!(argo, 3);
    assert!(flux >= 4, "{flux}");
}

/// Issue 17: the conventions that keep Argo CD and Flux fast on large monorepos.
#[test]
fn engine_objects_follow_the_scaling_conventions() {
    let mut fleet = meshvm::synthetic::fleet(300);
    fleet.gitops.engines = vec![Engine::Argocd, Engine::Flux];
    let r = render_ok(&fleet);
    let mut groups = 0;
    for path in r
        .objects
        .iter()
        .filter(|p| p.starts_with("argocd/") || p.starts_with("flux/"))
    {
        let v: serde_json::Value = serde_saphyr::from_str(&text(&r, path)).unwrap();
        let name = v["metadata"]["name"].as_str().unwrap();
        match v["kind"].as_str().unwrap() {
            "Application" | "ApplicationSet" => {
                let meta = if v["kind"] == "ApplicationSet" {
                    assert_eq!(
                        v["spec"]["generators"][0]["git"]["revision"],
                        "refs/heads/main"
                    );
                    &v["spec"]["template"]["metadata"]
                } else {
                    &v["metadata"]
                };
                let spec = if v["kind"] == "ApplicationSet" {
                    &v["spec"]["template"]["spec"]
                } else {
                    &v["spec"]
                };
                assert_eq!(
                    meta["annotations"]["argocd.argoproj.io/manifest-generate-paths"], ".",
                    "{path}"
                );
                assert_eq!(
                    spec["source"]["targetRevision"], "refs/heads/main",
                    "{path}"
                );
                // Only the bootstrap Application applies argocd/, and it never prunes.
                let bootstrap = spec["source"]["path"]
                    .as_str()
                    .unwrap()
                    .ends_with("/argocd");
                assert_eq!(bootstrap, path == "argocd/bootstrap-application.yaml");
                assert_eq!(
                    spec["syncPolicy"]["automated"]["prune"], !bootstrap,
                    "{path}"
                );
            }
            "Kustomization" => {
                assert!(name.len() <= 63, "{name}");
                let dir = v["spec"]["path"].as_str().unwrap();
                if path.starts_with("flux/workloads/") {
                    groups += 1;
                    assert_eq!(v["spec"]["dependsOn"][0]["name"], "meshvm-mesh", "{path}");
                    assert_eq!(v["spec"]["prune"], true);
                } else if dir.ends_with("/flux") {
                    assert_eq!(v["spec"]["prune"], false, "the bootstrap never prunes");
                }
                assert_eq!(v["spec"]["deletionPolicy"], "Orphan");
            }
            "GitRepository" => {
                let ignore = v["spec"]["ignore"].as_str().unwrap();
                assert!(ignore.contains("/workloads/**/bootstrap/"), "{ignore}");
            }
            kind => panic!("{path}: unexpected {kind}"),
        }
    }
    let expected: BTreeSet<_> = fleet
        .workloads
        .iter()
        .map(|w| (&w.namespace, &w.name))
        .collect();
    assert_eq!(groups, expected.len());
}

/// The GitRepository's `ignore` (gitignore syntax) keeps meshvm's subtree without the VMs'
/// bootstrap files, and nothing else: checked with git's own matcher.
#[test]
fn flux_fetches_only_the_subtree_without_bootstrap_files() {
    let r = render(&load("seed").fleet);
    let v: serde_json::Value =
        serde_saphyr::from_str(&text(&r, "flux/gitrepository.yaml")).unwrap();
    let ignore = v["spec"]["ignore"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    assert!(git(&["init", "-q"]).status.success());
    std::fs::write(dir.path().join(".gitignore"), ignore).unwrap();
    let base = "clusters/cluster1";
    for (path, ignored) in [
        ("README.md", true),
        ("clusters/other/x.yaml", true),
        (&format!("{base}/mesh/kustomization.yaml") as &str, false),
        (&format!("{base}/flux/mesh.yaml"), false),
        (
            &format!("{base}/workloads/ns/g/vms/vm-1/workloadentry.yaml"),
            false,
        ),
        (
            &format!("{base}/workloads/ns/g/vms/vm-1/bootstrap/cluster.env"),
            true,
        ),
    ] {
        // `check-ignore` exits 0 when the path is ignored, 1 when not.
        let out = git(&["check-ignore", "-q", "--no-index", path]);
        assert_eq!(out.status.code() == Some(0), ignored, "{path}\n{ignore}");
    }
}

/// A fleet with broker-joined groups (fixtures/join) gets the join broker: `mesh/join-broker/`,
/// its namespace and ServiceAccount, and its port on the east-west gateway. Fleets without
/// one are unchanged (their snapshots above have none of it).
#[test]
fn snapshot_of_a_broker_joined_fleets_tree() {
    let source = meshvm::spec::load_fleet(&testkit::fixture("join/meshvm.yaml")).unwrap();
    let r = render(&source.fleet);
    insta::assert_snapshot!("tree-join", listing(&r));
    // mesh/'s kustomization applies each of the broker's objects exactly once.
    let mut applied = Vec::new();
    applied_from(&r, layout::MESH_DIR, &mut applied);
    let unique: BTreeSet<&String> = applied.iter().collect();
    assert_eq!(unique.len(), applied.len(), "applied twice: {applied:?}");
    let under_mesh: BTreeSet<&String> = r
        .objects
        .iter()
        .filter(|p| p.starts_with("mesh/"))
        .collect();
    assert_eq!(unique, under_mesh);
    assert!(
        under_mesh
            .iter()
            .any(|p| p.starts_with("mesh/join-broker/"))
    );
    for name in &fixture_fleets() {
        let r = render(&load(name).fleet);
        assert!(
            !r.files.paths().any(|p| p.contains("join-broker")),
            "{name} has no broker-joined group"
        );
    }
}
