//! An interrupted command (SIGINT, SIGTERM) removes what it was making and says whether
//! anything changed; the next run removes what a killed one left.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{files_relative as files, fixture, meshvm, render_to, run};

fn staging_dirs(parent: &Path) -> Vec<String> {
    std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".meshvm-"))
        .collect()
}

#[test]
fn an_interrupted_render_leaves_nothing_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big.yaml");
    std::fs::write(
        &big,
        meshvm::k8s::yaml::to_string(&meshvm::synthetic::fleet(3000)),
    )
    .unwrap();
    let parent = tmp.path().join("out");
    let out = parent.join("tree");
    render_to(&fixture("fleets/seed/meshvm.yaml"), &out);
    let before = files(&out);
    let mut interrupted = 0;
    for signal in ["INT", "TERM", "INT", "TERM", "INT", "TERM", "INT", "TERM"] {
        let child = meshvm()
            .args(["render", "-f"])
            .arg(&big)
            .arg("-o")
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Signal once it writes its staging directory.
        let start = Instant::now();
        while staging_dirs(&parent).is_empty() && start.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let kill = run(std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("kill -{signal} {}", child.id())));
        assert_eq!(kill.code, 0, "{}", kill.stderr);
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(staging_dirs(&parent), Vec::<String>::new(), "{stderr}");
        match output.status.code() {
            Some(code @ (130 | 143)) => {
                assert_eq!(code, if signal == "INT" { 130 } else { 143 });
                assert!(stderr.contains("interrupted; nothing changed"), "{stderr}");
                assert_eq!(files(&out), before, "the tree is the one before");
                interrupted += 1;
            }
            // Done before the signal came: put the small tree back and try again.
            Some(0) => {
                run(meshvm()
                    .args(["render", "--force", "-f"])
                    .arg(fixture("fleets/seed/meshvm.yaml"))
                    .arg("-o")
                    .arg(&out));
            }
            other => panic!("exit {other:?}: {stderr}"),
        }
        if interrupted >= 2 {
            break;
        }
    }
    assert!(interrupted >= 2, "interrupted {interrupted} of the runs");
}

#[test]
fn a_sync_removes_the_pack_temporaries_an_interrupted_one_left() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("gitops.git");
    let fleet = fixture("fleets/seed/meshvm.yaml");
    let sync = |extra: &[&str]| {
        let r = run(meshvm()
            .args(["gitops", "sync", "-q", "-f"])
            .arg(&fleet)
            .arg("--repo")
            .arg(&repo)
            .args(extra));
        assert_eq!(r.code, 0, "{}", r.stderr);
    };
    sync(&[]);
    let pack_dir = repo.join("objects/pack");
    std::fs::create_dir_all(&pack_dir).unwrap();
    std::fs::write(pack_dir.join("pack_git2_5b1a"), "half a pack").unwrap();
    std::fs::write(pack_dir.join("pack_git2_5b1a.idx"), "").unwrap();
    sync(&[]);
    let left: Vec<String> = std::fs::read_dir(&pack_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pack_git2_"))
        .collect();
    assert_eq!(left, Vec::<String>::new());
}
