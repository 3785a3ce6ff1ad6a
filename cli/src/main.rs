//! `meshvm`: the command line. Thin: it parses arguments, calls the library, prints, and maps
//! errors to the documented exit codes (see `command_error.rs`).

mod broker;
mod cmd;
mod command_error;
mod paint;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// Bring virtual machines into an Istio service mesh, the GitOps way.
///
/// One fleet file (meshvm.yaml) describes the mesh, the sidecar package and the VMs. meshvm
/// renders it into a Kustomize tree that Argo CD or Flux apply, commits that tree with Git,
/// and writes the cloud-init user-data that joins each VM to the mesh at first boot.
///
/// Start with `meshvm init`, then `meshvm validate`, `meshvm render` and `meshvm gitops sync`.
#[derive(Debug, Parser)]
#[command(
    name = "meshvm",
    version,
    propagate_version = true,
    max_term_width = 100
)]
#[command(after_long_help = command_error::EXIT_CODES_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Init(cmd::init::Args),
    Validate(cmd::validate::Args),
    Schema(cmd::schema::Args),
    Render(cmd::render::Args),
    #[command(subcommand)]
    Vm(cmd::vm::Command),
    #[command(subcommand)]
    Workload(cmd::workload::Command),
    Completions(cmd::completions::Args),
    #[command(subcommand)]
    Gitops(cmd::gitops::Command),
    #[command(name = "cloud-init")]
    CloudInit(cmd::cloud_init::Args),
    #[command(name = "join-server")]
    JoinServer(cmd::join_server::Args),
    #[command(name = "join-token", subcommand)]
    JoinToken(cmd::join_token::Command),
}

/// On SIGINT or SIGTERM: remove what the command was making (`meshvm::interrupt`), say
/// whether anything changed, and exit 130 or 143 as a shell does for a killed command
/// (`command_error::Exit::for_signal`).
fn clean_up_on_signals() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return; // without handlers the default applies: the next run cleans up
    };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let changed = meshvm::interrupt::clean_up();
            if changed.is_empty() {
                eprintln!("\ninterrupted; nothing changed");
            } else {
                eprintln!("\ninterrupted after: {}", changed.join("; "));
            }
            std::process::exit(command_error::Exit::for_signal(signal) as i32);
        }
    });
}

fn main() -> ExitCode {
    tune_malloc();
    clean_up_on_signals();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Gitops(_)) {
        // Only `gitops` reaches a remote through libgit2, and decides for itself; the others
        // use it to check branch names at most, with no use for the CA bundle it would load.
        // SAFETY: first use of libgit2; the signal watcher above reads no environment.
        unsafe { meshvm::git::init_offline() };
    }
    let result = match cli.command {
        Command::Init(args) => cmd::init::run(args),
        Command::Validate(args) => cmd::validate::run(args),
        Command::Schema(args) => cmd::schema::run(args),
        Command::Render(args) => cmd::render::run(args),
        Command::Vm(command) => cmd::vm::run(command),
        Command::Workload(command) => cmd::workload::run(command),
        Command::Completions(args) => cmd::completions::run(args, &mut Cli::command()),
        Command::Gitops(command) => cmd::gitops::run(command),
        Command::CloudInit(args) => cmd::cloud_init::run(args),
        Command::JoinServer(args) => cmd::join_server::run(args),
        Command::JoinToken(command) => cmd::join_token::run(command),
    };
    match result {
        Ok(code) => code,
        Err(error) => error.report(),
    }
}

/// glibc's malloc, tuned for a sync of a large fleet (peak RSS of a cold sync of 50,000 VMs:
/// 428 MiB with glibc's defaults, 336 MiB with the arenas limited, under 300 MiB with the
/// threshold fixed too; heap 209 MB):
/// - One arena per core, not eight: memory a thread frees goes back to its own arena only,
///   and a sync renders on every core and then hashes, plans and packs mostly on one, so the
///   render's freed memory stayed mapped beside the later steps'.
/// - Allocations from 256 KiB up get mappings of their own, returned when freed: glibc raises
///   that threshold after the first such free (up to 32 MiB), and then the plan's and the
///   index's vectors of several MB were carved from the heap and left it in pieces.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // SAFETY: mallopt only sets tunables; called before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, i32::try_from(cores).unwrap_or(i32::MAX));
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 20);
        }
    }
}
