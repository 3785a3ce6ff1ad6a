//! `meshvm render`: the tree written by the binary, rerendered, refused and printed. (Built by
//! the real `kubectl kustomize` and read back by PyYAML in the system tier.)

use crate::support::{files_relative as files, fixture, meshvm, render_to, run};

#[test]
fn stdout_prints_every_object_once_as_one_stream() {
    let fleet = fixture("fleets/multi-network/meshvm.yaml");
    let r = run(meshvm().args(["render", "--stdout", "-f"]).arg(&fleet));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&r.stdout).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    render_to(&fleet, &tmp.path().join("tree"));
    let object_files = files(&tmp.path().join("tree"))
        .into_iter()
        .filter(|f| {
            f.ends_with(".yaml") && !f.ends_with("kustomization.yaml") && !f.contains("/bootstrap/")
        })
        .count();
    assert_eq!(docs.len(), object_files);
    for d in &docs {
        assert_eq!(
            d["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "meshvm"
        );
    }
}

#[test]
fn a_bad_fleet_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tree");
    let r = run(meshvm()
        .args(["render", "-f"])
        .arg(fixture("invalid/many-problems.yaml"))
        .arg("-o")
        .arg(&out));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("many-problems.yaml:"), "{}", r.stderr);
    assert!(!out.exists(), "nothing is written");

    // Over an earlier tree: left as it was.
    render_to(&fixture("fleets/seed/meshvm.yaml"), &out);
    let before = files(&out);
    let r = run(meshvm()
        .args(["render", "-f"])
        .arg(fixture("invalid/many-problems.yaml"))
        .arg("-o")
        .arg(&out));
    assert_eq!(r.code, 1);
    assert_eq!(files(&out), before);
}

#[test]
fn rerendering_replaces_the_tree_and_removing_a_vm_removes_its_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tree");
    let fleet = tmp.path().join("meshvm.yaml");
    let full = std::fs::read_to_string(fixture("fleets/multi-network/meshvm.yaml")).unwrap();
    std::fs::write(&fleet, &full).unwrap();
    render_to(&fleet, &out);
    let before = files(&out);
    let smaller = full.replace(
        "      - {name: ledger-2, address: 203.0.113.44, external: true}\n",
        "",
    );
    assert_ne!(smaller, full);
    std::fs::write(&fleet, smaller).unwrap();
    render_to(&fleet, &out);
    let after = files(&out);
    let gone: Vec<&String> = before.iter().filter(|f| !after.contains(f)).collect();
    assert!(!gone.is_empty());
    assert!(
        gone.iter()
            .all(|f| f.starts_with("workloads/finance/ledger/vms/ledger-2/")),
        "{gone:?}"
    );
    assert!(after.iter().all(|f| before.contains(f)));
}

#[test]
fn refuses_to_replace_a_directory_meshvm_did_not_render() {
    let tmp = tempfile::tempdir().unwrap();
    let mine = tmp.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "keep me").unwrap();
    let r = run(meshvm()
        .args(["render", "-f"])
        .arg(fixture("fleets/seed/meshvm.yaml"))
        .arg("-o")
        .arg(&mine));
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("meshvm did not write") && r.stderr.contains("notes.txt"),
        "{}",
        r.stderr
    );
    assert_eq!(
        std::fs::read_to_string(mine.join("notes.txt")).unwrap(),
        "keep me"
    );

    // Nor the directory of the fleet file.
    let fleet_dir = tmp.path().join("fleet");
    std::fs::create_dir(&fleet_dir).unwrap();
    std::fs::copy(
        fixture("fleets/seed/meshvm.yaml"),
        fleet_dir.join("meshvm.yaml"),
    )
    .unwrap();
    let r = run(meshvm()
        .args(["render", "-f"])
        .arg(fleet_dir.join("meshvm.yaml"))
        .arg("-o")
        .arg(&fleet_dir));
    assert_eq!(r.code, 1);
    assert!(fleet_dir.join("meshvm.yaml").exists());
}

#[test]
fn a_rerender_never_deletes_what_meshvm_did_not_write_unless_forced() {
    // The trial: a tree rendered earlier, then `git init` in it and a file of one's own; the
    // next `render -o` deleted both.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tree");
    let fleet = fixture("fleets/seed/meshvm.yaml");
    render_to(&fleet, &out);
    assert!(out.join(".meshvm-files").is_file());
    std::fs::create_dir_all(out.join(".git/refs")).unwrap();
    std::fs::write(out.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    std::fs::write(out.join("mesh/notes.txt"), "mine").unwrap();
    std::fs::write(out.join("README.md"), "edited by hand").unwrap();
    let before = files(&out);
    let r = run(meshvm()
        .args(["render", "-f"])
        .arg(&fleet)
        .arg("-o")
        .arg(&out));
    assert_eq!(r.code, 1, "{}", r.stderr);
    for listed in [
        "3 entries meshvm did not write",
        "\n  .git/\n",
        "\n  README.md (changed since meshvm wrote it)\n",
        "\n  mesh/notes.txt",
        "--force",
    ] {
        assert!(r.stderr.contains(listed), "{listed:?} in {}", r.stderr);
    }
    assert_eq!(files(&out), before, "nothing deleted");

    let r = run(meshvm()
        .args(["render", "--force", "-f"])
        .arg(&fleet)
        .arg("-o")
        .arg(&out));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!out.join(".git").exists() && !out.join("mesh/notes.txt").exists());
    // And the forced tree is meshvm's again: the next render replaces it without a word.
    render_to(&fleet, &out);
}

#[test]
fn render_needs_a_destination() {
    let r = run(meshvm()
        .args(["render", "-f"])
        .arg(fixture("fleets/seed/meshvm.yaml")));
    assert_eq!(r.code, 2, "{}", r.stderr);
    let r = run(meshvm()
        .args(["render", "--stdout", "-o", "x", "-f"])
        .arg(fixture("fleets/seed/meshvm.yaml")));
    assert_eq!(r.code, 2, "{}", r.stderr);
}
