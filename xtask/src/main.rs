//! `cargo xtask`: the project's own automation. `cargo xtask ci` is what CI runs.
//!
//! Exit codes: 0 ok, 1 a check failed (invalid object, missing schema, failed CI step),
//! 2 usage.

mod bench;
mod bench_repo;
mod ci;
mod fuzz;
mod mesh;
mod mutants;

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xtask::kube::Source;
use xtask::schemas::{self, SchemaLocations};
use xtask::validate::{Options, Report, Validator};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Validate(ValidateArgs),
    ValidateUserData(UserDataArgs),
    Ci,
    Fuzz(FuzzArgs),
    Mutants(MutantsArgs),
    Bench(bench::Args),
    /// Repository size and sync time over many small syncs (bounded by repacking).
    BenchRepo(bench_repo::Args),
    /// The real-cluster harness: etcd, kube-apiserver and istioctl built from tests/upstream.
    Mesh(mesh::Args),
    #[command(hide = true)]
    BenchPrepare(bench::PrepareArgs),
}

/// Validate Kubernetes manifests against JSON schemas, as kubeconform does.
///
/// Reads YAML files, and directories: a directory with a kustomization is validated through
/// its `kubectl kustomize` build, any other directory through its .yaml/.yml/.json files.
/// `-` reads standard input. When `kubeconform` is on PATH it checks the same streams too, and
/// any verdict that differs fails the run.
#[derive(Debug, clap::Args)]
struct ValidateArgs {
    /// Files and directories; `-` for standard input.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// A schema location template, tried in order (kubeconform's -schema-location; `default`
    /// is kubeconform's public location). Without one: MESHVM_SCHEMAS, else ../shared/schemas
    /// beside the workspace, else the public kubeconform and CRDs-catalog locations.
    #[arg(long = "schema-location", value_name = "TEMPLATE")]
    schema_locations: Vec<String>,
    /// Reject unknown fields (the -strict schemas) and duplicate keys.
    #[arg(long)]
    strict: bool,
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    /// `master` or a version such as 1.30.0.
    #[arg(long, default_value = "master")]
    kubernetes_version: String,
    /// Skip objects that have no schema instead of failing.
    #[arg(long)]
    ignore_missing_schemas: bool,
    /// Kinds to skip (`Kind` or `apiVersion/Kind`), comma-separated.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// Where http(s) schemas are cached.
    #[arg(long, value_name = "DIR", default_value_os_t = schemas::default_cache_dir())]
    cache: PathBuf,
    /// Do not cross-check with a kubeconform binary on PATH.
    #[arg(long)]
    no_kubeconform: bool,
}

/// Run every fuzz target (fuzz/) for a bounded time, seeded with the fixtures. Needs
/// cargo-fuzz (`cargo install cargo-fuzz`).
#[derive(Debug, clap::Args)]
struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    seconds: u32,
}

/// Mutation testing with cargo-mutants of the quoting, name, path and Git plan code, against
/// the library's hermetic tests (`.cargo/mutants.toml`). Needs cargo-mutants (`cargo install
/// cargo-mutants --locked`); slow (hours on two cores), so not part of `cargo xtask ci`.
#[derive(Debug, clap::Args)]
struct MutantsArgs {
    /// More cargo-mutants options, after `--` (e.g. `-- --file core/src/tree.rs`).
    #[arg(last = true)]
    extra: Vec<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

/// Validate cloud-init user-data against the newest cloud-config schema and, when cloud-init
/// is installed, with `cloud-init schema -c`.
#[derive(Debug, clap::Args)]
struct UserDataArgs {
    /// User-data files (plain or gzip-compressed).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The cloud-config schema (a path or URL). Default: from MESHVM_SCHEMAS, else
    /// ../shared/schemas, else cloud-init's repository.
    #[arg(long, value_name = "LOCATION")]
    schema: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate(args) => validate(args),
        Command::ValidateUserData(args) => validate_user_data(args),
        Command::Ci => ci::run(),
        Command::Fuzz(args) => fuzz::run(&schemas::workspace_root(), args.seconds),
        Command::Mutants(args) => mutants::run(&schemas::workspace_root(), &args.extra),
        Command::Bench(args) => bench::run(args),
        Command::BenchRepo(args) => bench_repo::run(args),
        Command::BenchPrepare(args) => bench::prepare(args),
        Command::Mesh(args) => mesh::run(args),
    }
}

fn validate(args: ValidateArgs) -> ExitCode {
    let locations = if args.schema_locations.is_empty() {
        SchemaLocations::from_env_or_default()
    } else {
        match SchemaLocations::new(&args.schema_locations) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("xtask validate: {e}");
                return ExitCode::from(2);
            }
        }
    }
    .with_cache_dir(args.cache);
    let options = Options {
        strict: args.strict,
        kubernetes_version: args.kubernetes_version,
        ignore_missing_schemas: args.ignore_missing_schemas,
        skip_kinds: args.skip,
    };
    let mut sources = Vec::new();
    for path in &args.paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            let text = std::io::stdin()
                .read_to_string(&mut text)
                .map(|_| text)
                .map_err(|e| format!("reading standard input: {e}"));
            sources.push(Source {
                name: "stdin".into(),
                text,
            });
            continue;
        }
        match xtask::kube::collect_sources(path) {
            Ok(found) => sources.extend(found),
            Err(e) => {
                eprintln!("xtask validate: {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    }
    let validator = Validator::with_options(locations, options);
    let report = validator.validate_sources(&sources);
    match args.output {
        Output::Text => print!("{}", report.to_text()),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report.to_json()).expect("JSON")
        ),
    }
    let agreed = args.no_kubeconform || second_opinion(&validator, &sources, &report);
    if report.is_success() && agreed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs kubeconform when it is on PATH; false when it disagrees or cannot run.
fn second_opinion(validator: &Validator, sources: &[Source], report: &Report) -> bool {
    let Some(binary) = xtask::kubeconform::find() else {
        return true;
    };
    eprintln!("xtask validate: cross-checking with {}", binary.display());
    let locations = validator.locations();
    match xtask::kubeconform::cross_check(
        &binary,
        &locations.kubernetes,
        locations.cache_dir.as_deref(),
        validator.options(),
        sources,
        &report.verdicts,
    ) {
        Ok(disagreements) if disagreements.is_empty() => true,
        Ok(disagreements) => {
            for d in &disagreements {
                eprintln!("xtask validate: kubeconform disagrees: {d}");
            }
            false
        }
        Err(e) => {
            eprintln!("xtask validate: kubeconform: {e}");
            false
        }
    }
}

fn validate_user_data(args: UserDataArgs) -> ExitCode {
    let mut locations = SchemaLocations::from_env_or_default();
    if let Some(schema) = args.schema {
        locations.cloud_init = schema;
    }
    let mut ok = true;
    for file in &args.files {
        let result = std::fs::read(file)
            .map_err(|e| vec![e.to_string()])
            .and_then(|bytes| xtask::cloudinit::validate_user_data_with(&locations, bytes));
        match result {
            Ok(()) => println!("{}: valid cloud-config", file.display()),
            Err(errors) => {
                ok = false;
                for e in errors {
                    println!("{}: {e}", file.display());
                }
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
