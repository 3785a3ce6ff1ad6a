//! `cargo xtask bench-repo`: a repository that receives a sync a day for years must not
//! degrade. Syncs a synthetic fleet, then `--syncs` small changes (`--changed` VMs relabelled
//! each), through the library's `gitops sync` in process, and reports every `--every` syncs the
//! repository's size on disk, its loose objects and packs, and the sync time. With the
//! maintenance of `meshvm::git::maintenance` (loose objects packed past 256, packs consolidated
//! past 16), size and time stay flat; without it, loose objects grow with every sync.
//!
//! A benchmark, never a timed test; CI does not run it. Timings are of this build (the xtask
//! profile): compare them within one run.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use meshvm::git::{self, Input, Options, Target};

/// Measure repository size and sync time over many small syncs.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// VMs in the fleet.
    #[arg(long, default_value_t = 1000)]
    vms: usize,
    /// Syncs after the first.
    #[arg(long, default_value_t = 500)]
    syncs: usize,
    /// VMs changed by each sync.
    #[arg(long, default_value_t = 30)]
    changed: usize,
    /// Report every this many syncs.
    #[arg(long, default_value_t = 50)]
    every: usize,
    /// Keep the repository in this new directory (to compare with `git gc` afterwards);
    /// default: a temporary directory, removed at the end.
    #[arg(long)]
    keep: Option<std::path::PathBuf>,
}

pub fn run(args: Args) -> ExitCode {
    match bench(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask bench-repo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: &Args) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let repo = match &args.keep {
        Some(keep) => {
            std::fs::create_dir(keep).map_err(|e| format!("{}: {e}", keep.display()))?;
            keep.join("fleet.git")
        }
        None => dir.path().join("fleet.git"),
    };
    let mut fleet = meshvm::synthetic::fleet(args.vms);
    let vms: usize = fleet.workloads.iter().map(|w| w.instances.len()).sum();
    println!(
        "{vms} VMs, {} syncs of {} changed VMs, in {}",
        args.syncs,
        args.changed,
        repo.display()
    );
    println!(
        "{:>6} {:>10} {:>8} {:>6} {:>14} {:>14}",
        "sync", "size MB", "loose", "packs", "sync ms (avg)", "slowest ms"
    );
    let (mut window, mut slowest) = (Duration::ZERO, Duration::ZERO);
    for round in 0..=args.syncs {
        if round > 0 {
            meshvm::synthetic::relabel(&mut fleet, round, args.changed);
        }
        let yaml = meshvm::k8s::yaml::to_string(&fleet);
        let checked = meshvm::spec::load_fleet_str(&yaml, "bench.yaml".as_ref())
            .map_err(|e| e.to_string())?;
        let rendered = meshvm::render::render(&checked);
        let sha = format!("{round:064x}");
        let input = Input {
            tree: rendered.files,
            path: &fleet.gitops.path,
            fleet_sha256: &sha,
        };
        let opts = Options::new(
            Target::Path(repo.clone()),
            dir.path().join("cache"),
            fleet.gitops.branch.clone(),
        );
        let started = Instant::now();
        let report = git::sync(input, &opts, &mut |_| {}).map_err(|e| e.to_string())?;
        let took = started.elapsed();
        window += took;
        slowest = slowest.max(took);
        if round > 0 && report.commit.is_none() {
            return Err(format!("sync {round} changed nothing"));
        }
        if round % args.every == 0 {
            let n = if round == 0 { 1 } else { args.every };
            let (bytes, loose, packs) = measure(&repo);
            println!(
                "{round:>6} {:>10.1} {loose:>8} {packs:>6} {:>14.0} {:>14.0}",
                bytes as f64 / 1e6,
                window.as_secs_f64() * 1e3 / n as f64,
                slowest.as_secs_f64() * 1e3
            );
            (window, slowest) = (Duration::ZERO, Duration::ZERO);
        }
    }
    Ok(())
}

/// Bytes on disk of a bare repository (blocks allocated, as `du`), its loose objects and packs.
fn measure(repo: &Path) -> (u64, usize, usize) {
    fn walk(dir: &Path) -> u64 {
        let mut bytes = 0;
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => bytes += walk(&entry.path()),
                Ok(m) => bytes += std::os::unix::fs::MetadataExt::blocks(&m) * 512,
                Err(_) => {}
            }
        }
        bytes
    }
    let (loose, packs) = git::maintenance::census(repo);
    (walk(repo), loose, packs)
}
