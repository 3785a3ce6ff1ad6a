//! `go build` of the upstream programs, from the Go module in `tests/upstream/` (its go.mod
//! pins every version; go.sum is complete, so the build never edits them).

use std::process::Command;
use std::time::{Instant, SystemTime};

use super::Paths;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tool {
    Etcd,
    KubeApiserver,
    Istioctl,
    PilotDiscovery,
    PilotAgent,
    /// The test-only Envoy stand-in of tests/upstream/envoystandin (Envoy cannot be built here).
    EnvoyStandin,
    /// AWS's instance metadata emulator (amazon-ec2-metadata-mock): the IMDS of the join
    /// broker's AWS proof inside the VM's network namespace (tests/mesh/imds.rs).
    Ec2MetadataMock,
    /// Flux's source-controller, from its own module in tests/upstream-flux.
    SourceController,
    /// Flux's kustomize-controller, from tests/upstream-flux.
    KustomizeController,
}

pub const TOOLS: [Tool; 7] = [
    Tool::Etcd,
    Tool::KubeApiserver,
    Tool::Istioctl,
    Tool::PilotDiscovery,
    Tool::PilotAgent,
    Tool::EnvoyStandin,
    Tool::Ec2MetadataMock,
];

/// Flux's controllers: a Go module of their own (tests/upstream-flux), so that their
/// dependency graph never moves Istio's and Kubernetes' pins; built by `mesh build --flux`.
pub const FLUX_TOOLS: [Tool; 2] = [Tool::SourceController, Tool::KustomizeController];

impl Tool {
    pub const fn name(self) -> &'static str {
        match self {
            Tool::Etcd => "etcd",
            Tool::KubeApiserver => "kube-apiserver",
            Tool::Istioctl => "istioctl",
            Tool::PilotDiscovery => "pilot-discovery",
            Tool::PilotAgent => "pilot-agent",
            Tool::EnvoyStandin => "envoy-standin",
            Tool::Ec2MetadataMock => "ec2-metadata-mock",
            Tool::SourceController => "source-controller",
            Tool::KustomizeController => "kustomize-controller",
        }
    }

    /// The Go package, one of go.mod's `tool` lines.
    fn package(self) -> &'static str {
        match self {
            Tool::Etcd => "go.etcd.io/etcd/server/v3",
            Tool::KubeApiserver => "k8s.io/kubernetes/cmd/kube-apiserver",
            Tool::Istioctl => "istio.io/istio/istioctl/cmd/istioctl",
            Tool::PilotDiscovery => "istio.io/istio/pilot/cmd/pilot-discovery",
            Tool::PilotAgent => "istio.io/istio/pilot/cmd/pilot-agent",
            Tool::EnvoyStandin => "meshvm.dev/tests/upstream/envoystandin",
            Tool::Ec2MetadataMock => {
                "github.com/aws/amazon-ec2-metadata-mock/cmd/ec2-metadata-mock"
            }
            Tool::SourceController => "github.com/fluxcd/source-controller",
            Tool::KustomizeController => "github.com/fluxcd/kustomize-controller",
        }
    }

    /// The variable the tests find the binary in: MESH_KUBE_APISERVER, MESH_ISTIOCTL, …
    pub fn env_var(self) -> String {
        format!("MESH_{}", self.name().replace('-', "_").to_uppercase())
    }
}

/// The versions go.mod pins, stamped into the binaries so that they report them (`/version`,
/// `istioctl version`) and `istioctl manifest generate` names real images, not
/// `registry.istio.io/testing:latest`. Kept beside go.mod's pins: change both together.
const LDFLAGS: &str = concat!(
    "-X k8s.io/component-base/version.gitVersion=v1.36.1",
    " -X k8s.io/component-base/version.gitMajor=1",
    " -X k8s.io/component-base/version.gitMinor=36",
    " -X k8s.io/component-base/version.gitTreeState=clean",
    // Istio master of 2026-08-27 (commit eed52ebb66ad), the 1.31 development line; its dev
    // builds are published to gcr.io/istio-testing.
    " -X istio.io/istio/pkg/version.buildVersion=1.31-alpha.eed52ebb66ad",
    " -X istio.io/istio/pkg/version.buildGitRevision=eed52ebb66ad",
    " -X istio.io/istio/pkg/version.buildStatus=Clean",
    " -X istio.io/istio/pkg/version.buildTag=1.31-alpha.eed52ebb66ad",
    " -X istio.io/istio/pkg/version.buildHub=gcr.io/istio-testing",
);

/// Builds every tool into `paths.bin`, unless each binary is newer than go.mod, go.sum and the
/// stand-in's source.
pub fn build(paths: &Paths) -> Result<(), String> {
    let module = paths.root.join("tests/upstream");
    let pins = newest_mtime(&[
        module.join("go.mod"),
        module.join("go.sum"),
        module.join("envoystandin/main.go"),
    ])?;
    if fresh(paths, &TOOLS, pins) {
        return Ok(());
    }
    require_go()?;
    go_build(paths, &module, &TOOLS, LDFLAGS, "the upstream programs")
}

/// Builds Flux's controllers (`mesh build --flux`) into `paths.bin`, unless both are newer
/// than tests/upstream-flux's go.mod and go.sum.
pub fn build_flux(paths: &Paths) -> Result<(), String> {
    let module = paths.root.join(FLUX_MODULE);
    let pins = newest_mtime(&[module.join("go.mod"), module.join("go.sum")])?;
    if fresh(paths, &FLUX_TOOLS, pins) {
        return Ok(());
    }
    require_go()?;
    go_build(paths, &module, &FLUX_TOOLS, "-s -w", "Flux's controllers")
}

/// Flux's Go module, relative to the workspace root.
pub const FLUX_MODULE: &str = "tests/upstream-flux";

/// Whether every one of `tools` is built and newer than `pins`.
pub fn fresh(paths: &Paths, tools: &[Tool], pins: SystemTime) -> bool {
    tools.iter().all(|tool| {
        std::fs::metadata(paths.tool(*tool))
            .and_then(|m| m.modified())
            .is_ok_and(|built| built > pins)
    })
}

/// Whether Flux's controllers are built and newer than their module's pins.
pub fn flux_built(paths: &Paths) -> bool {
    let module = paths.root.join(FLUX_MODULE);
    newest_mtime(&[module.join("go.mod"), module.join("go.sum")])
        .is_ok_and(|pins| fresh(paths, &FLUX_TOOLS, pins))
}

fn require_go() -> Result<(), String> {
    if xtask::on_path("go").is_none() {
        return Err("`go` is not on PATH: the real-cluster tests build etcd, kube-apiserver and \
             istioctl from tests/upstream with Go 1.26 (https://go.dev/dl), install it and run again"
            .into());
    }
    Ok(())
}

/// `go build` of `tools` of the module in `module` into `paths.bin`, one at a time.
fn go_build(
    paths: &Paths,
    module: &std::path::Path,
    tools: &[Tool],
    ldflags: &str,
    what: &str,
) -> Result<(), String> {
    std::fs::create_dir_all(&paths.bin).map_err(|e| format!("{}: {e}", paths.bin.display()))?;
    let started = Instant::now();
    eprintln!(
        "xtask mesh: go build of {what} into {}",
        paths.bin.display()
    );
    // One `go build` per tool: `-o DIR/` would name etcd after its package (`v3`).
    for tool in tools {
        let mut cmd = Command::new("go");
        cmd.args(["build", "-ldflags", ldflags, "-o"])
            .arg(paths.tool(*tool))
            .arg(tool.package())
            .current_dir(module)
            // Static binaries as upstream ships them; the pinned toolchain only, never a
            // download; go.mod and go.sum are read, never rewritten.
            .env("CGO_ENABLED", "0")
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=readonly");
        let status = cmd.status().map_err(|e| format!("{cmd:?}: {e}"))?;
        if !status.success() {
            return Err(format!("{cmd:?} exited with {status}"));
        }
    }
    eprintln!("xtask mesh: built {what} in {:.0?}", started.elapsed());
    Ok(())
}

fn newest_mtime(files: &[std::path::PathBuf]) -> Result<SystemTime, String> {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .and_then(|m| m.modified())
                .map_err(|e| format!("{}: {e}", f.display()))
        })
        .try_fold(SystemTime::UNIX_EPOCH, |newest, t| Ok(newest.max(t?)))
}
