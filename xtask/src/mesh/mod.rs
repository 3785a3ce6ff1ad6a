//! `cargo xtask mesh build|up|env|down|test`: a real control plane for the real-cluster tests
//! (`tests/mesh/`): etcd and kube-apiserver on 127.0.0.1 with the CRDs meshvm's output uses,
//! istiod (pilot-discovery) out of cluster, istioctl, pilot-agent and the Envoy stand-in, all
//! built with `go build` from the pinned Go module in `tests/upstream/`.
//!
//! A test fixture, not a product: one harness per target directory, its state (PIDs, logs,
//! certificates, kubeconfig, etcd data) in `<target>/mesh/`, its binaries in
//! `<target>/upstream/bin/`.

mod build;
mod cluster;
mod flux;
mod istiod;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

pub use build::build;
pub use cluster::{down, up};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// `go build` etcd, kube-apiserver, istioctl, pilot-discovery and pilot-agent from
    /// tests/upstream into <target>/upstream/bin (skipped when they are newer than go.mod and
    /// go.sum; Go's caches make a rebuild cheap anyway).
    Build {
        /// Also build Flux's source-controller and kustomize-controller from
        /// tests/upstream-flux (`up` starts them whenever they are built).
        #[arg(long)]
        flux: bool,
    },
    /// Build, then start etcd and kube-apiserver on 127.0.0.1, load the CRDs of
    /// ../shared/crds, and start istiod out of cluster with a plugged-in root, its CA and xDS
    /// on a veth pair to the test VM's network namespace, and a second istiod of revision 1-28
    /// beside it; and Flux's source-controller and kustomize-controller when they are built.
    /// Refuses to start a second harness.
    Up {
        /// Build Flux's controllers first (so that they start).
        #[arg(long)]
        flux: bool,
    },
    /// Print the harness's environment for a shell to `eval`: KUBECONFIG, MESH_* binaries,
    /// istiod's address (MESH_ISTIOD), its root (MESH_ROOT_CERT) and the VM network.
    Env,
    /// Stop exactly the processes `up` started and remove the harness's state.
    Down,
    /// Run the real-cluster tests (the `mesh` test binary) against the running harness, or
    /// against one started for the run and stopped after it. Ends with `N passed, M failed`.
    /// The Flux tests (tests/mesh/flux.rs) run when the harness runs Flux; otherwise the
    /// summary says they were not run.
    Test {
        /// Build Flux's controllers first (so that a harness started for the run has them).
        #[arg(long)]
        flux: bool,
        /// Passed to the test binary (a name filter, --nocapture, …).
        args: Vec<String>,
    },
}

/// Where the harness keeps its binaries and state.
pub struct Paths {
    pub root: PathBuf,
    pub bin: PathBuf,
    pub state: PathBuf,
}

impl Paths {
    pub fn new(root: &Path, target: &Path) -> Self {
        Paths {
            root: root.to_path_buf(),
            bin: target.join("upstream/bin"),
            state: target.join("mesh"),
        }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.state.join("kubeconfig")
    }

    pub fn tool(&self, tool: build::Tool) -> PathBuf {
        self.bin.join(tool.name())
    }
}

pub fn run(args: Args) -> ExitCode {
    let root = xtask::schemas::workspace_root();
    let paths = match crate::ci::target_dir(&root) {
        Ok(target) => Paths::new(&root, &target),
        Err(why) => return fail(&why),
    };
    let result = match args.command {
        Action::Build { flux } => build_all(&paths, flux),
        Action::Up { flux } => build_all(&paths, flux).and_then(|()| up(&paths)),
        Action::Env => print_env(&paths),
        Action::Down => down(&paths),
        Action::Test { flux, args } => test_with(&paths, flux, &args).and_then(|summary| {
            if let Some(note) = summary.not_run() {
                println!("{note}");
            }
            println!("{summary}");
            summary.check()
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => fail(&why),
    }
}

/// The upstream programs, and Flux's controllers when asked.
fn build_all(paths: &Paths, flux: bool) -> Result<(), String> {
    build(paths)?;
    if flux {
        build::build_flux(paths)?;
    }
    Ok(())
}

/// [`test`], building Flux's controllers first when asked.
fn test_with(paths: &Paths, flux: bool, args: &[String]) -> Result<Summary, String> {
    if flux {
        build::build_flux(paths)?;
    }
    test(paths, args)
}

fn fail(why: &str) -> ExitCode {
    eprintln!("xtask mesh: {why}");
    ExitCode::FAILURE
}

/// The environment the real-cluster tests read, as `NAME=value` pairs.
pub fn env(paths: &Paths) -> Result<Vec<(String, PathBuf)>, String> {
    if !cluster::running(paths)? {
        return Err("no harness is running: start one with `cargo xtask mesh up`".into());
    }
    // MESH_KUBECONFIG is what the tests read: a KUBECONFIG left in a shell for another
    // cluster never receives their objects.
    let mut vars = vec![
        ("KUBECONFIG".to_string(), paths.kubeconfig()),
        ("MESH_KUBECONFIG".to_string(), paths.kubeconfig()),
        // The API server's ServiceAccount token signing key: the join tests make tokens the
        // API server cannot (one already expired) and istiod's log, beside it, says why it
        // refused one.
        ("MESH_SA_KEY".to_string(), paths.state.join("pki/sa.key")),
        (
            "MESH_ISTIOD_LOG".to_string(),
            paths.state.join("pilot-discovery.log"),
        ),
    ];
    vars.extend(
        build::TOOLS
            .iter()
            .map(|tool| (tool.env_var(), paths.tool(*tool))),
    );
    // istiod's addresses, its root and the test VM's network; Flux's namespace and logs.
    vars.extend(
        istiod::env(paths)?
            .into_iter()
            .chain(flux::env(paths)?)
            .map(|(name, value)| (name, PathBuf::from(value))),
    );
    Ok(vars)
}

fn print_env(paths: &Paths) -> Result<(), String> {
    for (name, value) in env(paths)? {
        println!("export {name}={}", value.display());
    }
    Ok(())
}

/// The test run's summary line, `N passed, M failed`, and what was not run.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    /// The Flux tests were left out: the harness runs no Flux.
    pub without_flux: bool,
}

/// The test-name filter of tests/mesh/flux.rs.
const FLUX_TESTS: &str = "flux::";

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} passed, {} failed", self.passed, self.failed)
    }
}

impl Summary {
    /// What was not run, for a line of its own before the summary (which stays the plain
    /// `N passed, M failed` CI reads).
    pub fn not_run(&self) -> Option<String> {
        self.without_flux.then(|| {
            format!(
                "xtask mesh: the Flux tests ({FLUX_TESTS}*) were NOT RUN: the harness runs no Flux \
                 (build its controllers with `cargo xtask mesh build --flux`)"
            )
        })
    }

    /// Fails when a test failed or none ran.
    fn check(&self) -> Result<(), String> {
        if self.failed > 0 || self.passed == 0 {
            return Err(format!("the real-cluster tests: {self}"));
        }
        Ok(())
    }

    /// Adds libtest's `test result: ok. 3 passed; 1 failed; …` line; other lines are ignored.
    fn add_line(&mut self, line: &str) {
        let Some(counts) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in counts.split(['.', ';']) {
            let mut words = part.split_whitespace();
            match (words.next().map(str::parse::<usize>), words.next()) {
                (Some(Ok(n)), Some("passed")) => self.passed += n,
                (Some(Ok(n)), Some("failed")) => self.failed += n,
                _ => {}
            }
        }
    }
}

/// `cargo xtask ci`'s step: the harness built and started (unless one runs), the real-cluster
/// tests, the harness stopped. Never skipped: without Go it fails, saying so.
pub fn ci(root: &Path) -> Result<Summary, String> {
    let paths = Paths::new(root, &crate::ci::target_dir(root)?);
    // Flux's reconcile is part of the suite CI runs: build its controllers (seconds once Go's
    // cache holds them, ~5 min on an idle fresh machine) so `up` starts them.
    build::build_flux(&paths)?;
    let summary = test(&paths, &[])?;
    if summary.without_flux {
        return Err(format!(
            "the Flux tests ({FLUX_TESTS}*) did not run: the harness was already up without \
             Flux; `cargo xtask mesh down` and run again"
        ));
    }
    summary.check().map(|()| summary)
}

/// Runs the `mesh` test binary against the running harness, or one started for the run.
pub fn test(paths: &Paths, args: &[String]) -> Result<Summary, String> {
    let started = !cluster::running(paths)?;
    if started {
        build(paths)?;
        up(paths)?;
    }
    let result = run_tests(paths, args);
    if started {
        down(paths)?;
    }
    result
}

fn run_tests(paths: &Paths, args: &[String]) -> Result<Summary, String> {
    let vars = env(paths)?;
    let without_flux = !vars.iter().any(|(name, _)| name == "MESH_FLUX_NAMESPACE");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["test", "--package", "meshvm", "--features", "system-tests"])
        .args(["--test", "mesh", "--"])
        .args(args)
        .current_dir(&paths.root)
        .envs(vars)
        .stdout(Stdio::piped());
    if without_flux {
        eprintln!(
            "xtask mesh: the harness runs no Flux: the Flux tests ({FLUX_TESTS}*) are not run \
             (`cargo xtask mesh build --flux` builds its controllers)"
        );
        cmd.args(["--skip", FLUX_TESTS]);
    }
    let mut child = cmd.spawn().map_err(|e| format!("{cmd:?}: {e}"))?;
    let mut summary = Summary {
        without_flux,
        ..Summary::default()
    };
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("reading the test output: {e}"))?;
        println!("{line}");
        summary.add_line(&line);
    }
    let status = child.wait().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !status.success() && summary.passed + summary.failed == 0 {
        return Err(format!(
            "the mesh tests did not run: {cmd:?} exited with {status}"
        ));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_adds_libtests_result_lines() {
        let mut summary = Summary::default();
        for line in [
            "running 4 tests",
            "test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 9.1s",
            "test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out",
        ] {
            summary.add_line(line);
        }
        assert_eq!(summary.to_string(), "5 passed, 1 failed");
        assert_eq!(summary.not_run(), None);
        summary.without_flux = true;
        assert_eq!(
            summary.to_string(),
            "5 passed, 1 failed",
            "the plain line CI reads"
        );
        let note = summary.not_run().unwrap();
        assert!(note.contains("Flux tests (flux::*) were NOT RUN"), "{note}");
    }
}
