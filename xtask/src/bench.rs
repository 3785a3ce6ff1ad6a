//! `cargo xtask bench`: fleet-scale speed, on synthetic fleets (`meshvm::synthetic`).
//!
//! For each fleet size, each measurement runs `--runs` times and is reported as its median and
//! min–max spread:
//! - render to memory, in process, on all cores and on one thread (the ratio is the gain of
//!   the parallel render), and parsing + validating the fleet file;
//! - `meshvm render -o DIR` into a new directory;
//! - `meshvm gitops sync` into an empty repository (cold), again with nothing changed
//!   (no-op), and with one VM changed;
//! - the baseline, measured in the same run: what users script today, `meshvm render -o` into
//!   a work tree, then `git add -A` and `git commit` with the git CLI, in the same three states.
//!
//! The CLI measurements time the release binary as a child process, and take its peak RSS
//! from `wait4`. The two repositories are checked to hold the same tree, so both sides did
//! the same work. Results: a table on stdout and `target/bench.json`.
//!
//! These machines are shared and noisy: compare ratios within one run, not figures across
//! runs. This is a benchmark, never a timed test; CI does not run it.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use meshvm::spec::Fleet;
use serde_json::{Value, json};
use xtask::schemas::workspace_root;

/// Set in the release build this command re-runs itself as.
const REEXEC_ENV: &str = "MESHVM_BENCH_RELEASE";

/// Benchmark render and gitops sync on synthetic fleets against the git CLI baseline.
///
/// Builds the release binaries first, then measures; run it on an otherwise idle machine.
/// Prints a table (median, min-max, peak RSS, ratios against the baseline, and whether the
/// speed targets at 10,000 VMs are met) and writes target/bench.json.
///
/// The default sizes take about an hour on 2 cores, mostly the git CLI baseline at 50,000
/// VMs; `--sizes 10000 --runs 3` checks the 10,000-VM targets in about 8 minutes; --quick
/// takes seconds.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Fleet sizes, in VMs.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,50000")]
    sizes: Vec<usize>,
    /// Runs of each measurement.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// 1,000 VMs, 2 runs: a quick look (overrides --sizes and --runs).
    #[arg(long)]
    quick: bool,
    /// Only meshvm's own measurements: no git CLI baseline and no `render -o` into a
    /// directory (both write hundreds of thousands of files and take most of the time at
    /// 50,000 VMs and more). For scaling runs; ratios are then not reported.
    #[arg(long)]
    no_baseline: bool,
}

pub fn run(args: Args) -> ExitCode {
    match bench(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench(mut args: Args) -> Result<ExitCode, String> {
    if args.quick {
        args.sizes = vec![1000];
        args.runs = 2;
    }
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    if std::env::var_os(REEXEC_ENV).is_none() {
        eprintln!("xtask bench: cargo build --release -p meshvm -p xtask");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let built = Command::new(cargo)
            .args(["build", "--release", "-p", "meshvm", "-p", "xtask"])
            .current_dir(&root)
            .status()
            .map_err(|e| format!("running cargo: {e}"))?;
        if !built.success() {
            return Err("the release build failed".into());
        }
        // The in-process measurements need optimised code: run the release build of this
        // very command.
        let status = Command::new(target.join("release/xtask"))
            .args(std::env::args_os().skip(1))
            .env(REEXEC_ENV, "1")
            .status()
            .map_err(|e| format!("running the release xtask: {e}"))?;
        return Ok(ExitCode::from(status.code().unwrap_or(1) as u8));
    }
    if cfg!(debug_assertions) {
        return Err(format!(
            "{REEXEC_ENV} is set, but this is not a release build"
        ));
    }

    let meshvm = target.join("release/meshvm");
    let work = target.join("bench-work");
    if work.exists() {
        std::fs::remove_dir_all(&work).map_err(|e| format!("clearing {}: {e}", work.display()))?;
    }
    std::fs::create_dir_all(&work).map_err(|e| format!("creating {}: {e}", work.display()))?;
    let machine = machine(&root);
    eprintln!(
        "xtask bench: {} ({} CPUs), sizes {:?}, {} runs each",
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cpus"],
        args.sizes,
        args.runs
    );

    let mut results = Vec::new();
    for &vms in &args.sizes {
        results.push(size(&meshvm, &work, vms, args.runs, !args.no_baseline)?);
    }
    let _ = std::fs::remove_dir_all(&work);

    print!("{}", table(&machine, args.runs, &results));
    let report = json!({
        "machine": machine,
        "runs": args.runs,
        "sizes": results.iter().map(SizeResult::to_json).collect::<Vec<_>>(),
    });
    let out = target.join("bench.json");
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&report).expect("JSON") + "\n",
    )
    .map_err(|e| format!("writing {}: {e}", out.display()))?;
    eprintln!("xtask bench: wrote {}", out.display());
    Ok(ExitCode::SUCCESS)
}

/// What the figures came from.
fn machine(root: &Path) -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let output = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let dirty = !output("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    json!({
        "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "cpu": cpu,
        "memory_mib": mem_kib / 1024,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "git": output("git", &["--version"]),
        "commit": output("git", &["rev-parse", "--short", "HEAD"]) + if dirty { "+dirty" } else { "" },
    })
}

/// One measurement: its runs' wall times and, for child processes, peak RSS.
#[derive(Debug, Default)]
struct Series {
    times: Vec<Duration>,
    rss_kib: Vec<u64>,
}

impl Series {
    fn push(&mut self, s: Sample) {
        self.times.push(s.wall);
        if let Some(rss) = s.max_rss_kib {
            self.rss_kib.push(rss);
        }
    }

    fn sorted_ms(&self) -> Vec<f64> {
        let mut ms: Vec<f64> = self.times.iter().map(|t| t.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        ms
    }

    fn median_ms(&self) -> f64 {
        let ms = self.sorted_ms();
        match ms.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => ms[n / 2],
            n => (ms[n / 2 - 1] + ms[n / 2]) / 2.0,
        }
    }

    fn min_max_ms(&self) -> (f64, f64) {
        let ms = self.sorted_ms();
        (
            ms.first().copied().unwrap_or(f64::NAN),
            ms.last().copied().unwrap_or(f64::NAN),
        )
    }

    fn peak_rss_mib(&self) -> Option<f64> {
        self.rss_kib.iter().max().map(|k| *k as f64 / 1024.0)
    }

    fn to_json(&self) -> Value {
        let (min, max) = self.min_max_ms();
        json!({
            "samples_ms": self.times.iter().map(|t| round(t.as_secs_f64() * 1e3)).collect::<Vec<_>>(),
            "median_ms": round(self.median_ms()),
            "min_ms": round(min),
            "max_ms": round(max),
            "peak_rss_mib": self.peak_rss_mib().map(round),
        })
    }
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The measurements, in table order: key, label, and what it is compared with.
const MEASUREMENTS: &[(&str, &str, Option<&str>)] = &[
    ("load", "parse + validate fleet file", None),
    ("render_memory", "render to memory, all cores", None),
    ("render_memory_1_thread", "render to memory, 1 thread", None),
    ("render_dir", "meshvm render -o DIR", None),
    ("validate", "meshvm validate", None),
    ("sync_cold", "sync, empty repo (cold)", Some("git_cold")),
    ("sync_noop", "sync, nothing changed", Some("git_noop")),
    ("sync_one_vm", "sync, one VM changed", Some("git_one_vm")),
    ("diff_one_vm", "gitops diff, one VM changed", None),
    (
        "git_cold",
        "baseline: render + git add + commit, cold",
        None,
    ),
    ("git_noop", "baseline: nothing changed", None),
    ("git_one_vm", "baseline: one VM changed", None),
];

#[derive(Debug)]
struct SizeResult {
    vms: usize,
    files: usize,
    fleet_bytes: u64,
    series: Vec<(&'static str, Series)>,
    /// Objects and bytes the one-VM-changed sync added to the repository, and loose objects
    /// after a cold sync, for meshvm and the baseline.
    git_writes: Value,
}

impl SizeResult {
    fn get(&self, key: &str) -> &Series {
        &self
            .series
            .iter()
            .find(|(k, _)| *k == key)
            .expect("every measurement is taken")
            .1
    }

    /// `a` over `b`, medians.
    fn ratio(&self, a: &str, b: &str) -> f64 {
        self.get(a).median_ms() / self.get(b).median_ms()
    }

    fn to_json(&self) -> Value {
        let measurements: serde_json::Map<String, Value> = self
            .series
            .iter()
            .map(|(k, s)| ((*k).to_owned(), s.to_json()))
            .collect();
        let mut ratios = serde_json::Map::new();
        ratios.insert(
            "render_memory_vs_1_thread".into(),
            round(self.ratio("render_memory", "render_memory_1_thread")).into(),
        );
        for (key, _, baseline) in MEASUREMENTS {
            if let Some(b) = baseline {
                ratios.insert(format!("{key}_vs_{b}"), round(self.ratio(key, b)).into());
            }
        }
        json!({
            "vms": self.vms,
            "files": self.files,
            "fleet_file_bytes": self.fleet_bytes,
            "measurements": measurements,
            "ratios": ratios,
            "git_writes": self.git_writes,
            "targets": TARGETS_AT.contains(&self.vms).then(|| {
                targets(self)
                    .into_iter()
                    .map(|(what, met)| json!({"target": what, "met": met}))
                    .collect::<Vec<_>>()
            }),
        })
    }
}

/// Every measurement for one fleet size.
fn size(
    meshvm: &Path,
    work: &Path,
    vms: usize,
    runs: u32,
    baseline: bool,
) -> Result<SizeResult, String> {
    eprintln!("xtask bench: {vms} VMs");
    let dir = work.join(format!("{vms}"));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut series: Vec<(&'static str, Series)> = MEASUREMENTS
        .iter()
        .map(|(k, _, _)| (*k, Series::default()))
        .collect();
    let mut record = |key: &str, s: Sample| {
        series
            .iter_mut()
            .find(|(k, _)| *k == key)
            .expect("a known measurement")
            .1
            .push(s);
    };

    // The fleets and the in-process measurements come from a process of their own: this one
    // stays small, because a child's peak RSS as `wait4` reports it starts from the RSS of the
    // process that spawned it.
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new(exe)
        .args([
            "bench-prepare",
            "--vms",
            &vms.to_string(),
            "--runs",
            &runs.to_string(),
        ])
        .arg(&dir)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running bench-prepare: {e}"))?;
    if !out.status.success() {
        return Err(format!("bench-prepare {vms} failed"));
    }
    let prepared: Prepared = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("reading bench-prepare's output: {e}"))?;
    for (key, samples) in [
        ("load", &prepared.load_ms),
        ("render_memory", &prepared.render_memory_ms),
        (
            "render_memory_1_thread",
            &prepared.render_memory_1_thread_ms,
        ),
    ] {
        for ms in samples {
            record(key, Sample::wall(Duration::from_secs_f64(ms / 1e3)));
        }
    }
    let fleet_file = dir.join(FLEET_FILE);
    let changed_file = dir.join(CHANGED_FILE);
    let fleet_bytes = std::fs::metadata(&fleet_file).map_or(0, |m| m.len());
    let (gitops_path, branch) = (prepared.gitops_path, prepared.branch);
    let files = prepared.files;

    let fleet_arg = |f: &Path| vec!["-f".to_owned(), f.display().to_string()];
    let mut git_writes = json!({});
    // validate's runs first, before any step that writes tens of thousands of files: for a
    // while after those are written and removed the disk is still busy (`sync`
    // notwithstanding), and a 70 ms validate measured 100-130 ms there.
    for _ in 0..runs {
        let mut args = vec!["validate".to_owned()];
        args.extend(fleet_arg(&fleet_file));
        record("validate", child(Command::new(meshvm).args(&args), &[0])?);
    }
    for run in 0..runs {
        // meshvm render -o into a directory that does not exist yet.
        if baseline {
            let out = dir.join(format!("render-{run}"));
            let mut args = vec!["render".to_owned()];
            args.extend(fleet_arg(&fleet_file));
            args.extend(["-o".to_owned(), out.display().to_string()]);
            record("render_dir", child(Command::new(meshvm).args(&args), &[0])?);
            remove(&out)?;
        }

        // meshvm gitops sync: cold, no-op, one VM changed.
        let repo = dir.join(format!("sync-{run}.git"));
        git(
            &dir,
            &[
                "init",
                "-q",
                "--bare",
                "-b",
                &branch,
                &repo.display().to_string(),
            ],
        )?;
        let sync = |fleet: &Path| {
            let mut args = vec!["gitops".to_owned(), "sync".to_owned(), "-q".to_owned()];
            args.extend(fleet_arg(fleet));
            args.extend(["--repo".to_owned(), repo.display().to_string()]);
            let mut cmd = Command::new(meshvm);
            cmd.args(args)
                .env("MESHVM_GIT_AUTHOR", "bench <bench@localhost>");
            isolate_git(&mut cmd);
            child(&mut cmd, &[0])
        };
        // The baseline: render into a work tree, git add -A, git commit.
        let wt = dir.join(format!("git-{run}"));
        git(
            &dir,
            &["init", "-q", "-b", &branch, &wt.display().to_string()],
        )?;
        let wt_git = wt.join(".git");
        // `render -o` lists what it wrote in `.meshvm-files`; that list is not part of the
        // tree a sync commits.
        std::fs::write(
            wt_git.join("info").join("exclude"),
            format!("/{gitops_path}/.meshvm-files\n"),
        )
        .map_err(|e| format!("writing the baseline's exclude file: {e}"))?;
        let subtree = wt.join(&gitops_path);
        let script = |fleet: &Path, may_be_empty: bool| -> Result<Option<Sample>, String> {
            if !baseline {
                return Ok(None);
            }
            let mut args = vec!["render".to_owned()];
            args.extend(fleet_arg(fleet));
            args.extend(["-o".to_owned(), subtree.display().to_string()]);
            let mut total = child(Command::new(meshvm).args(&args), &[0])?;
            let mut add = Command::new("git");
            add.current_dir(&wt).args(["add", "-A"]);
            isolate_git(&mut add);
            total.then(child(&mut add, &[0])?);
            let mut commit = Command::new("git");
            commit
                .current_dir(&wt)
                .args(["commit", "-q", "-m", "Sync the fleet"]);
            isolate_git(&mut commit);
            // `git commit` exits 1 when there is nothing to commit.
            let ok: &[i32] = if may_be_empty { &[0, 1] } else { &[0] };
            total.then(child(&mut commit, ok)?);
            Ok(Some(total))
        };

        // Each state for meshvm, then the baseline, so that a noisy moment hits both.
        record("sync_cold", sync(&fleet_file)?);
        if let Some(s) = script(&fleet_file, false)? {
            record("git_cold", s);
        }
        if baseline {
            same_tree(&repo, &wt, &gitops_path)?;
        }
        let cold = (count_objects(&repo)?, count_objects(&wt_git)?);

        let head = git(&repo, &["rev-parse", "HEAD"])?;
        record("sync_noop", sync(&fleet_file)?);
        if let Some(s) = script(&fleet_file, true)? {
            record("git_noop", s);
        }
        if git(&repo, &["rev-parse", "HEAD"])? != head {
            return Err("a sync with nothing changed made a commit".into());
        }

        // gitops diff of the one-VM change (exit code 4: there are changes).
        let mut args = vec!["gitops".to_owned(), "diff".to_owned()];
        args.extend(fleet_arg(&changed_file));
        args.extend(["--repo".to_owned(), repo.display().to_string()]);
        let mut cmd = Command::new(meshvm);
        isolate_git(cmd.args(&args));
        record("diff_one_vm", child(&mut cmd, &[4])?);

        let before = (count_objects(&repo)?, count_objects(&wt_git)?);
        record("sync_one_vm", sync(&changed_file)?);
        if let Some(s) = script(&changed_file, false)? {
            record("git_one_vm", s);
        }
        if baseline {
            same_tree(&repo, &wt, &gitops_path)?;
        }
        let after = (count_objects(&repo)?, count_objects(&wt_git)?);

        if run == 0 {
            let writes = |cold: ObjectCount, before: ObjectCount, after: ObjectCount| {
                json!({
                    "loose_objects_after_cold": cold.loose,
                    "one_vm_objects_written": after.objects().saturating_sub(before.objects()),
                    "one_vm_kib_written": after.kib.saturating_sub(before.kib),
                })
            };
            git_writes = json!({
                "meshvm": writes(cold.0, before.0, after.0),
                "git_cli": writes(cold.1, before.1, after.1),
            });
        }
        remove(&repo)?;
        remove(&wt)?;
    }
    remove(&dir)?;
    Ok(SizeResult {
        vms,
        files,
        fleet_bytes,
        series,
        git_writes,
    })
}

const FLEET_FILE: &str = "fleet.yaml";
const CHANGED_FILE: &str = "fleet-changed.yaml";

/// `bench-prepare`'s report.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Prepared {
    files: usize,
    gitops_path: String,
    branch: String,
    load_ms: Vec<f64>,
    render_memory_ms: Vec<f64>,
    render_memory_1_thread_ms: Vec<f64>,
}

/// Internal to `cargo xtask bench`: writes a synthetic fleet and its one-VM-changed twin
/// into DIR, times loading and rendering it in process, and prints the figures as JSON.
#[derive(Debug, clap::Args)]
pub struct PrepareArgs {
    #[arg(long)]
    vms: usize,
    #[arg(long)]
    runs: u32,
    dir: PathBuf,
}

pub fn prepare(args: PrepareArgs) -> ExitCode {
    match prepared(&args) {
        Ok(p) => {
            println!("{}", serde_json::to_string(&p).expect("JSON"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xtask bench-prepare: {e}");
            ExitCode::FAILURE
        }
    }
}

fn prepared(args: &PrepareArgs) -> Result<Prepared, String> {
    let fleet = meshvm::synthetic::fleet(args.vms);
    let fleet_file = args.dir.join(FLEET_FILE);
    write(&fleet_file, meshvm::k8s::yaml::to_string(&fleet))?;
    write(
        &args.dir.join(CHANGED_FILE),
        meshvm::k8s::yaml::to_string(&one_vm_changed(&fleet)),
    )?;
    // The library, as the binary calls it: on all cores, and on one thread for the ratio.
    let all_cores = pool(0)?;
    let one_thread = pool(1)?;
    let render = |pool: &rayon::ThreadPool, fleet: &meshvm::spec::CheckedFleet| {
        let (rendered, t) = timed(|| pool.install(|| meshvm::render::render(fleet)));
        (rendered, t.as_secs_f64() * 1e3)
    };
    let mut out = Prepared {
        files: 0,
        gitops_path: fleet.gitops.path.clone(),
        branch: fleet.gitops.branch.clone(),
        load_ms: Vec::new(),
        render_memory_ms: Vec::new(),
        render_memory_1_thread_ms: Vec::new(),
    };
    for _ in 0..args.runs {
        let (loaded, t) = timed(|| meshvm::spec::load_fleet(&fleet_file));
        let loaded = loaded.map_err(|e| format!("loading the synthetic fleet: {e}"))?;
        out.load_ms.push(t.as_secs_f64() * 1e3);
        let (parallel, ms) = render(&all_cores, &loaded.fleet);
        out.render_memory_ms.push(ms);
        let (sequential, ms) = render(&one_thread, &loaded.fleet);
        out.render_memory_1_thread_ms.push(ms);
        if parallel != sequential {
            return Err("the parallel render differs from the 1-thread render".into());
        }
        out.files = sequential.files.len();
    }
    Ok(out)
}

/// The fleet with one VM's address changed: a VM in the middle, in a group with
/// WorkloadEntries, so that its entry and its cluster.env change.
fn one_vm_changed(fleet: &Fleet) -> Fleet {
    let mut changed = fleet.clone();
    let n = changed.workloads.len();
    let g = (0..n)
        .map(|i| (n / 2 + i) % n)
        .find(|&g| {
            let w = &changed.workloads[g];
            !w.auto_register && !w.instances.is_empty()
        })
        .expect("a synthetic fleet has a group with WorkloadEntries");
    let group = &mut changed.workloads[g];
    let vm = group.instances.len() / 2;
    // Outside the synthetic fleets' 10.0.0.0/16.
    group.instances[vm].address = "10.200.0.1".into();
    changed
}

fn pool(threads: usize) -> Result<rayon::ThreadPool, String> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| e.to_string())
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// One timed step (or a sequence of steps, summed).
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: Duration,
    max_rss_kib: Option<u64>,
}

impl Sample {
    fn wall(wall: Duration) -> Sample {
        Sample {
            wall,
            max_rss_kib: None,
        }
    }

    /// Adds a step run after this one: times add up, the peak is the larger one.
    fn then(&mut self, next: Sample) {
        self.wall += next.wall;
        self.max_rss_kib = self.max_rss_kib.max(next.max_rss_kib);
    }
}

/// Runs a child to its end; its wall time and peak RSS (`wait4`'s rusage, which also covers
/// its own children). Fails unless it exits with one of `ok`.
///
/// The page cache is flushed first, untimed: otherwise the write-back of one step's tens of
/// thousands of files (the baseline's work tree and loose objects) lands on the next step.
fn child(cmd: &mut Command, ok: &[i32]) -> Result<Sample, String> {
    let what = format!("{cmd:?}");
    let stderr = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    let err_file = stderr.reopen().map_err(|e| e.to_string())?;
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let start = Instant::now();
    let spawned = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err_file)
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    let (status, rusage) = wait4(spawned.id())?;
    let wall = start.elapsed();
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    if !ok.contains(&code) {
        let err = std::fs::read_to_string(stderr.path()).unwrap_or_default();
        return Err(format!("{what} exited with {code}:\n{err}"));
    }
    Ok(Sample {
        wall,
        // Linux reports ru_maxrss in KiB.
        max_rss_kib: Some(rusage.ru_maxrss as u64),
    })
}

/// Waits for the child `pid`, returning its wait status and resource usage. The `Child`
/// handle is dropped unwaited; dropping it does not touch the process.
fn wait4(pid: u32) -> Result<(i32, libc::rusage), String> {
    let pid = libc::pid_t::try_from(pid).map_err(|e| e.to_string())?;
    let mut status = 0;
    // SAFETY: rusage is plain old data; wait4 writes both out-parameters on success.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to live locals; `pid` is our own unreaped child.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut rusage) };
        if r == pid {
            return Ok((status, rusage));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("wait4: {err}"));
        }
    }
}

/// Neither the user's nor the system's git configuration: both sides run as on a clean CI
/// machine.
fn isolate_git(cmd: &mut Command) {
    cmd.env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@localhost")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@localhost");
}

/// Runs git (untimed) in `dir`; its trimmed stdout.
fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir).args(args);
    isolate_git(&mut cmd);
    let out = cmd.output().map_err(|e| format!("git {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git {args:?} in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The subtree both sides committed must be the same tree: same work measured.
fn same_tree(repo: &Path, wt: &Path, path: &str) -> Result<(), String> {
    let spec = format!("HEAD:{path}");
    let (a, b) = (
        git(repo, &["rev-parse", &spec])?,
        git(wt, &["rev-parse", &spec])?,
    );
    if a != b {
        return Err(format!(
            "meshvm gitops sync committed {path} as tree {a}, git add -A as {b}: the two \
             sides no longer do the same work"
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
struct ObjectCount {
    loose: u64,
    in_pack: u64,
    kib: u64,
}

impl ObjectCount {
    fn objects(&self) -> u64 {
        self.loose + self.in_pack
    }
}

/// `git count-objects -v` of the repository at `git_dir`.
fn count_objects(git_dir: &Path) -> Result<ObjectCount, String> {
    let text = git(git_dir, &["count-objects", "-v"])?;
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    Ok(ObjectCount {
        loose: field("count"),
        in_pack: field("in-pack"),
        kib: field("size") + field("size-pack"),
    })
}

fn write(path: &Path, text: String) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

fn remove(path: &Path) -> Result<(), String> {
    std::fs::remove_dir_all(path).map_err(|e| format!("removing {}: {e}", path.display()))
}

/// The results as a text table: medians, spreads, per-VM cost, peak RSS and ratios.
fn table(machine: &Value, runs: u32, results: &[SizeResult]) -> String {
    let mut out = format!(
        "\nmeshvm bench: {} CPUs ({}), {}, commit {}; {runs} runs each\n\
         median [min-max]; ratio = meshvm / baseline of the same run (< 1 is faster)\n\n",
        machine["cpus"],
        machine["cpu"].as_str().unwrap_or("?"),
        machine["git"].as_str().unwrap_or("git ?"),
        machine["commit"].as_str().unwrap_or("?"),
    );
    out.push_str(&format!(
        "{:>7} {:<43} {:>10} {:>21} {:>8} {:>9} {:>7}\n",
        "VMs", "measurement", "median", "spread", "us/VM", "peak RSS", "ratio"
    ));
    for r in results {
        for (key, label, baseline) in MEASUREMENTS {
            let s = r.get(key);
            if s.times.is_empty() {
                continue; // not measured (--no-baseline)
            }
            let (min, max) = s.min_max_ms();
            let ratio = match (*key, baseline) {
                ("render_memory", _) => {
                    format!("{:.2}", r.ratio("render_memory", "render_memory_1_thread"))
                }
                (_, Some(b)) if !r.get(b).times.is_empty() => format!("{:.2}", r.ratio(key, b)),
                _ => String::new(),
            };
            out.push_str(&format!(
                "{:>7} {:<43} {:>10} {:>21} {:>8.1} {:>9} {:>7}\n",
                r.vms,
                label,
                ms(s.median_ms()),
                format!("[{}-{}]", ms(min), ms(max)),
                s.median_ms() * 1e3 / r.vms as f64,
                s.peak_rss_mib()
                    .map(|m| format!("{m:.0} MiB"))
                    .unwrap_or_default(),
                ratio,
            ));
        }
        out.push_str(&format!(
            "{:>7} {} files; git writes: {}\n\n",
            "", r.files, r.git_writes
        ));
    }
    for r in results.iter().filter(|r| TARGETS_AT.contains(&r.vms)) {
        out.push_str(&format!("targets at {} VMs (medians):\n", r.vms));
        for (what, met) in targets(r) {
            out.push_str(&format!(
                "  {}  {what}\n",
                if met { "met   " } else { "MISSED" }
            ));
        }
    }
    out
}

/// The fleet sizes issue 18 sets targets for.
const TARGETS_AT: &[usize] = &[10_000, 50_000];

/// Issue 18's targets for one size: what, and whether the medians meet it.
fn targets(r: &SizeResult) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let limits: &[(&str, &str, f64)] = if r.vms == 10_000 {
        &[
            ("sync_cold", "cold sync", 1000.0),
            ("sync_noop", "no-op sync", 100.0),
            ("sync_one_vm", "one-VM sync", 300.0),
            ("diff_one_vm", "gitops diff of one VM", 500.0),
            ("validate", "validate", 100.0),
        ]
    } else {
        &[("sync_noop", "no-op sync", 100.0)]
    };
    for &(key, label, limit_ms) in limits {
        let median = r.get(key).median_ms();
        out.push((
            format!("{label} <= {}: {}", ms(limit_ms), ms(median)),
            median <= limit_ms,
        ));
    }
    if r.vms == 50_000 {
        let rss = r.get("sync_cold").peak_rss_mib().unwrap_or(f64::NAN);
        out.push((
            format!("peak RSS of a cold sync <= 300 MiB: {rss:.0} MiB"),
            rss <= 300.0,
        ));
    }
    out
}

fn ms(x: f64) -> String {
    if x >= 10_000.0 {
        format!("{:.1} s", x / 1e3)
    } else if x >= 100.0 {
        format!("{x:.0} ms")
    } else {
        format!("{x:.1} ms")
    }
}
