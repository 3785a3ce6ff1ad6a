//! `cargo xtask fuzz`: every cargo-fuzz target in fuzz/, each for a bounded time, seeded with
//! the fixtures. Any crash fails the run; libFuzzer leaves the input under fuzz/artifacts/.

use std::path::Path;
use std::process::{Command, ExitCode};

/// Each target with the fixture directories that seed it.
const TARGETS: &[(&str, &[&str])] = &[
    ("fleet", &["fixtures/fleets/seed", "fixtures/invalid"]),
    (
        "workload_group",
        &["fixtures/istioctl/ipv4", "fixtures/istioctl/ipv6"],
    ),
    (
        "mesh_config",
        &[
            "fixtures/istioctl/ipv4",
            "fixtures/istioctl/nil-proxy-metadata",
        ],
    ),
    ("join_proof", &["fixtures/join/seeds"]),
];

pub fn run(root: &Path, seconds: u32) -> ExitCode {
    match run_all(root, seconds) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// Runs every target; on failure, says which failed.
pub fn run_all(root: &Path, seconds: u32) -> Result<(), String> {
    let fuzz_dir = root.join("fuzz");
    let mut failed = Vec::new();
    for (target, seeds) in TARGETS {
        // libFuzzer writes new inputs to the first corpus directory; the fixtures only seed.
        let corpus = fuzz_dir.join("corpus").join(target);
        if let Err(e) = std::fs::create_dir_all(&corpus) {
            return Err(format!("cannot create {}: {e}", corpus.display()));
        }
        eprintln!("xtask fuzz: {target} for {seconds} s");
        let status = Command::new(env!("CARGO"))
            .args(["fuzz", "run", "--sanitizer", "none", target])
            .arg(&corpus)
            .args(seeds.iter().map(|s| root.join(s)))
            .args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-rss_limit_mb=4096",
            ])
            .current_dir(&fuzz_dir)
            .status();
        match status {
            Ok(s) if s.success() => eprintln!("xtask fuzz: ok: {target}"),
            Ok(s) => {
                eprintln!("xtask fuzz: FAILED: {target} ({s}); see fuzz/artifacts/{target}/");
                failed.push(*target);
            }
            Err(e) => {
                eprintln!(
                    "xtask fuzz: cannot run cargo fuzz ({e}): `cargo install cargo-fuzz` first"
                );
                failed.push(*target);
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "failed: {} (the crashing inputs are under fuzz/artifacts/)",
            failed.join(", ")
        ))
    }
}
