//! `meshvm gitops …`: commit the rendered tree into Git, or show what that would change.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use meshvm::FileTree;
use meshvm::git::{
    self, Event, GitError, Mode, OnHandEdits, Options, Plan, PushOutcome, Report, Target,
};
use meshvm::spec::SourceFile;
use meshvm::spec::diagnostic::Diagnostics;

use super::FleetArg;
use crate::command_error::{CmdResult, CommandError, Exit, to_stdout};

/// Put the rendered GitOps tree into a Git repository.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    // Boxed: these carry many options, and clap's enums are moved around by value.
    Sync(Box<SyncArgs>),
    Diff(Box<DiffArgs>),
}

/// Commit the rendered tree at the fleet's `gitops.path`, and push it with --push.
///
/// The commit is made with libgit2, without a work tree: the repository may be bare, and
/// nobody's checkout is touched (a branch that is checked out is never moved). Files outside
/// `gitops.path` are kept as they are; files of VMs removed from the fleet are deleted; an
/// unchanged fleet makes no commit. Files inside `gitops.path` that someone changed since
/// meshvm's last commit are listed, and sync refuses to overwrite them unless --force.
///
/// Credentials come from the environment, never from the command line: MESHVM_GIT_TOKEN
/// (HTTPS token; user name from the URL, MESHVM_GIT_USERNAME, or `x-access-token`),
/// MESHVM_SSH_KEY and MESHVM_SSH_KEY_PASSPHRASE, an ssh-agent (SSH_AUTH_SOCK), and git
/// credential helpers. Each is tried once; a refusal is not retried.
///
/// A push that loses a race (someone pushed meanwhile) fetches, rebuilds onto the new tip and
/// retries, a few times with backoff; it never force-pushes. A failed push keeps the local
/// commit and says how to retry.
///
/// The fleet's warnings (as `meshvm validate` shows them) follow the result on stderr, and
/// `warnings` in JSON. When nothing changed since meshvm's last commit, the fleet is not read
/// again (the no-op shortcut), so its warnings, shown by the run that committed it, are not
/// repeated; `meshvm validate` shows them any time.
#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// Push the branch to the remote (the URL of --repo, or --remote of a local repository).
    #[arg(long)]
    push: bool,
    /// Overwrite files inside gitops.path that were edited by hand.
    #[arg(long)]
    force: bool,
    /// Show what would change (as `gitops diff`) and write nothing; exit code 4 when there are
    /// changes.
    #[arg(long)]
    dry_run: bool,
    /// Commit author, `Name <email>`; default: git config user.name/user.email, else
    /// `meshvm <meshvm@localhost>`.
    #[arg(long, env = "MESHVM_GIT_AUTHOR", value_name = "NAME <EMAIL>", value_parser = identity)]
    author: Option<git::Identity>,
    /// Committer, `Name <email>`; default: the author.
    #[arg(long, env = "MESHVM_GIT_COMMITTER", value_name = "NAME <EMAIL>", value_parser = identity)]
    committer: Option<git::Identity>,
    /// Allow a sync that removes more than half of the committed VMs, and more than one (VMs that move to
    /// another group do not count).
    #[arg(long)]
    allow_mass_removal: bool,
    /// Push attempts when the remote branch moves meanwhile.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=20))]
    attempts: u32,
}

/// Show what `gitops sync` would change: VMs added, changed and removed, and a unified diff.
///
/// Exit code 0 when there is nothing to sync, 4 when there are changes. Nothing is written
/// (for a URL, the local cache clone is fetched into).
///
/// The fleet's warnings follow on stderr (`warnings` in JSON), as for `gitops sync`: not
/// repeated when nothing changed since meshvm's last commit.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// A short summary instead of the diff: the counts, one line per group (+added ~changed
    /// >moved-in -removed), the running VMs that must re-join the mesh, and the removals.
    #[arg(long)]
    stat: bool,
    /// With `--output markdown`: write the comment's parts as DIR/part-1.md, part-2.md, …
    /// (part files of an earlier run are removed first) and print their paths, instead of
    /// printing the parts one after another.
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
    /// With `--output markdown`: the most characters of one part (one comment); GitHub's
    /// limit is 65,536.
    #[arg(long, value_name = "CHARS", default_value_t = git::review::COMMENT_BUDGET, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1000..))]
    part_size: usize,
}

/// Where and how: shared by sync and diff.
#[derive(Debug, clap::Args)]
struct RepoArgs {
    #[command(flatten)]
    fleet: FleetArg,
    /// The repository: a local path (bare or not; created bare when missing; by default
    /// ./meshvm-gitops.git), or a URL (ssh://, git@host:path, https://, git://, file://),
    /// worked on through a local cache clone.
    #[arg(
        long,
        env = "MESHVM_REPO",
        value_name = "PATH_OR_URL",
        default_value = "meshvm-gitops.git"
    )]
    repo: String,
    /// The branch to commit to; default: the fleet's gitops.branch.
    #[arg(long)]
    branch: Option<String>,
    /// The branch on the remote; default: the same as --branch.
    #[arg(long, value_name = "BRANCH")]
    remote_branch: Option<String>,
    /// Where a new branch (one that exists neither here nor on the remote) starts; default:
    /// the remote's default branch (for a local repository, the branch its HEAD names), so
    /// that the new branch can be reviewed and merged as a pull request.
    #[arg(long, value_name = "BRANCH")]
    base: Option<String>,
    /// For a local repository: the remote that --push pushes to.
    #[arg(long, default_value = "origin", value_name = "NAME")]
    remote: String,
    /// Where cache clones of URL repositories live; default: $XDG_CACHE_HOME/meshvm/repos
    /// or ~/.cache/meshvm/repos.
    #[arg(long, env = "MESHVM_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Private SSH key file (its passphrase, if any, in MESHVM_SSH_KEY_PASSPHRASE).
    #[arg(long, env = "MESHVM_SSH_KEY", value_name = "FILE")]
    ssh_key: Option<PathBuf>,
    /// Trust only SSH host keys with this fingerprint (as `ssh-keygen -lf` prints it); known
    /// hosts files are then not read. Repeatable.
    #[arg(long, value_name = "SHA256:…")]
    ssh_host_fingerprint: Vec<String>,
    /// known_hosts file for SSH host keys; default: ~/.ssh/known_hosts and
    /// /etc/ssh/ssh_known_hosts. Repeatable.
    #[arg(long, value_name = "FILE")]
    known_hosts: Vec<PathBuf>,
    /// `text` for people, `json` for machines; `gitops diff` also writes `markdown`, a
    /// pull-request comment: counts per group, removals first and highlighted, the running VMs
    /// that must re-join the mesh (root certificate, revision, CA address, mesh ID, trust
    /// domain or cluster ID changed) at the top, per-VM diffs folded, in parts of at most --part-size
    /// characters. Each part starts with a marker line, `<!-- meshvm-diff: <gitops.path> -->`
    /// (`… part N -->` after the first), by which a CI job finds and updates its comment.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    /// Colour the text output: `auto` when stdout is a terminal and NO_COLOR is not set.
    #[arg(long, value_enum, value_name = "WHEN", default_value = "auto")]
    color: crate::paint::ColorWhen,
    /// Never page the text output. On a terminal, a diff is paged as git pages one:
    /// MESHVM_PAGER, else PAGER, else `less -FRX` (empty or `cat`: no pager).
    #[arg(long)]
    no_pager: bool,
    /// Give up on a remote that takes longer than this to connect, or stalls this long.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
    /// No progress or notes on stderr; errors only. (Progress — a bar per step of a long
    /// sync — shows only when stderr is a terminal; logs never get it.)
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Text,
    Json,
    Markdown,
}

fn identity(text: &str) -> Result<git::Identity, String> {
    git::Identity::parse(text).ok_or_else(|| format!("{text:?} is not `Name <email>`"))
}

pub fn run(command: Command) -> CmdResult {
    let (timeout, output) = match &command {
        Command::Sync(a) => (a.repo.timeout, a.repo.output),
        Command::Diff(a) => (a.repo.timeout, a.repo.output),
    };
    let timeout = Duration::from_secs(timeout);
    // A local repository without --push: no remote operation, so no CA certificates to load.
    let local = |repo: &RepoArgs| matches!(Target::parse(&repo.repo), Ok(Target::Path(_)));
    let offline = match &command {
        Command::Sync(a) => !a.push && local(&a.repo),
        Command::Diff(a) => local(&a.repo),
    };
    // SAFETY: nothing has touched libgit2 yet, and the binary runs commands on one thread (the
    // signal watcher of `main` reads no environment).
    unsafe {
        if offline {
            git::init_offline();
        }
        git::set_network_timeouts(timeout, timeout);
    }
    let result = match command {
        Command::Sync(args) if args.repo.output == Output::Markdown => Err(CommandError::usage(
            "--output markdown is for `meshvm gitops diff`",
        )),
        Command::Sync(args) => sync(*args),
        Command::Diff(args) => diff(*args),
    };
    result.map_err(|e| match output {
        Output::Json => e.in_json(),
        Output::Text | Output::Markdown => e,
    })
}

/// The rendered GitOps tree of the fleet, relative to `gitops.path`: the same tree
/// `meshvm render` writes (the render is pure, so a rebuild after a lost push race is the same
/// tree on a new parent).
///
/// With `gitops.hydrator`, also its `hydrator.metadata` files, and what the sync records
/// (`git::dry::hydrate`).
/// The rendered tree for a sync with `opts`, without the VMs whose directories an earlier
/// render of the same inputs gave (`git::reuse`), and the reuse to sync it with.
fn rendered_tree(
    source: &SourceFile,
    opts: &Options,
) -> (FileTree, Option<git::dry::Hydrated>, git::reuse::Reuse) {
    let (mut rendered, reuse) = git::reuse::render(&source.fleet, opts);
    let hydrated = git::dry::hydrate(&mut rendered, source);
    (rendered.files, hydrated, reuse)
}

impl RepoArgs {
    fn options(
        &self,
        source: &SourceFile,
        hydrated: Option<&git::dry::Hydrated>,
    ) -> Result<Options, CommandError> {
        let mut opts = self.options_for(&source.fleet.gitops.sync_branch())?;
        opts.render_inputs = Some(source.render_inputs());
        if let Some(h) = hydrated {
            opts.render_inputs = Some(h.render_inputs.clone());
            opts.extra_trailers = h.trailers.clone();
        }
        Ok(opts)
    }

    /// The options, with `fleet_branch` (the fleet's `gitops.branch`) as the default branch.
    fn options_for(&self, fleet_branch: &str) -> Result<Options, CommandError> {
        let target = Target::parse(&self.repo).map_err(CommandError::invalid)?;
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let cache_dir = self.cache_dir.clone().unwrap_or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .or_else(|| home.as_ref().map(|h| h.join(".cache")))
                .unwrap_or_else(|| PathBuf::from(".meshvm-cache"));
            base.join("meshvm/repos")
        });
        let branch = self
            .branch
            .clone()
            .unwrap_or_else(|| fleet_branch.to_owned());
        let mut opts = Options::new(target, cache_dir, branch);
        opts.remote = self.remote.clone();
        opts.remote_branch = self.remote_branch.clone();
        opts.base = self.base.clone();
        let env = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        opts.auth = git::Auth {
            token: env("MESHVM_GIT_TOKEN"),
            token_username: env("MESHVM_GIT_USERNAME"),
            ssh_key: self.ssh_key.clone(),
            ssh_key_passphrase: env("MESHVM_SSH_KEY_PASSPHRASE"),
            ssh_agent: env("SSH_AUTH_SOCK").is_some(),
            credential_helpers: true,
        };
        if let Some(key) = &self.ssh_key {
            if !key.is_file() {
                return Err(CommandError::invalid(format!(
                    "the SSH key {} (MESHVM_SSH_KEY / --ssh-key) does not exist",
                    key.display()
                )));
            }
        }
        let mut pinned = Vec::new();
        for fp in &self.ssh_host_fingerprint {
            pinned.push(git::known_hosts::parse_fingerprint(fp).ok_or_else(|| {
                CommandError::usage(format!(
                    "--ssh-host-fingerprint {fp:?} is not a SHA256 fingerprint like \
                     SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8 (see `ssh-keygen -lf`)"
                ))
            })?);
        }
        opts.host_keys = git::HostKeys {
            pinned,
            known_hosts: if self.known_hosts.is_empty() {
                git::known_hosts::default_files(home.as_deref())
            } else {
                self.known_hosts.clone()
            },
        };
        Ok(opts)
    }
}

/// What a sync (or its plan) did, with the options it ran with and the fleet's warnings
/// (`None` when the no-op shortcut did not read the fleet).
struct Synced {
    report: Report,
    opts: Options,
    warnings: Option<Diagnostics>,
}

impl Synced {
    /// Prints the fleet's warnings on stderr, after the result.
    fn warn(&self) {
        for w in self.warnings.iter().flat_map(|w| w.iter()) {
            eprintln!("warning: {w}");
        }
    }

    /// Adds the warnings to a JSON result (left out when the fleet was not read).
    fn with_warnings(&self, mut value: serde_json::Value) -> serde_json::Value {
        if let Some(w) = &self.warnings {
            value["warnings"] = super::warnings_json(w);
        }
        value
    }
}

/// Loads and renders the fleet, then syncs it (or, in a dry-run mode, plans the sync) with the
/// options `configure` sets, showing progress on stderr.
fn sync_fleet(repo: &RepoArgs, configure: impl Fn(&mut Options)) -> Result<Synced, CommandError> {
    if let Some((report, opts)) = unchanged(repo, &configure)? {
        return Ok(Synced {
            report,
            opts,
            warnings: None,
        });
    }
    let source = repo.fleet.load()?;
    let (tree, hydrated, reuse) = {
        // Where the sync goes, to find the record of earlier renders there.
        let mut opts = repo.options_for(&source.fleet.gitops.sync_branch())?;
        configure(&mut opts);
        rendered_tree(&source, &opts)
    };
    if let Some(git::dry::DryState::Uncommitted { path }) = hydrated.as_ref().map(|h| &h.state) {
        if !repo.quiet {
            eprintln!(
                "note: {path} is not committed as it is: hydrator.metadata leaves drySha out"
            );
        }
    }
    let mut opts = repo.options(&source, hydrated.as_ref())?;
    configure(&mut opts);
    opts.reuse = Some(std::sync::Arc::new(reuse));
    // The fleet itself is done with: its memory goes before the sync's peak (16 MB of a
    // 50,000-VM fleet), and only what the sync and the glance cache read is kept.
    let fields = meshvm::spec::inputs::Fields::of(&source);
    let SourceFile {
        fleet,
        sha256,
        warnings,
        ..
    } = source;
    drop(fleet);
    let input = git::Input {
        tree,
        path: &fields.path,
        fleet_sha256: &sha256,
    };
    let mut progress = Progress::new(repo.quiet);
    let result = git::sync(input, &opts, &mut |e| progress.event(e));
    progress.finish();
    if result.is_ok() && opts.mode.writes() {
        // The next sync's glance then reads these fields instead of scanning the file.
        if let Some(cache) = git::glance_cache(&opts.target) {
            cache.put(&repo.fleet.file, &sha256, &fields);
        }
    }
    Ok(Synced {
        report: result?,
        opts,
        warnings: Some(warnings),
    })
}

/// The no-op shortcut: when the render's inputs are those of meshvm's last commit and its
/// subtree is untouched, the report of a sync that changes nothing, without loading or
/// rendering the fleet (`git::unchanged`); `None` runs the full sync.
fn unchanged(
    repo: &RepoArgs,
    configure: &impl Fn(&mut Options),
) -> Result<Option<(Report, Options)>, CommandError> {
    let now = time::UtcDateTime::now();
    let cache = Target::parse(&repo.repo)
        .ok()
        .and_then(|target| git::glance_cache(&target));
    let Some(glance) = meshvm::spec::inputs::glance_cached(&repo.fleet.file, now, cache.as_ref())
    else {
        return Ok(None);
    };
    let mut opts = repo.options_for(&glance.branch)?;
    configure(&mut opts);
    let inputs = if glance.hydrator {
        git::dry::inputs_of(&glance.render_inputs, &repo.fleet.file)
    } else {
        glance.render_inputs.clone()
    };
    opts.render_inputs = Some(inputs.clone());
    Ok(git::unchanged(&glance.path, &inputs, &opts).map(|report| (report, opts)))
}

fn sync(args: SyncArgs) -> CmdResult {
    let synced = sync_fleet(&args.repo, |opts| {
        opts.mode = match (args.dry_run, args.repo.output) {
            (true, Output::Text | Output::Markdown) => Mode::DryRunWithDiff,
            (true, Output::Json) => Mode::DryRun,
            (false, _) => Mode::Commit,
        };
        opts.push = args.push;
        if args.force {
            opts.on_hand_edits = OnHandEdits::Overwrite;
        }
        opts.author = args.author.clone();
        opts.committer = args.committer.clone();
        opts.max_attempts = args.attempts;
        opts.allow_mass_removal = args.allow_mass_removal;
    })?;
    let (report, opts) = (&synced.report, &synced.opts);
    if args.dry_run {
        print_plan(&synced, &args.repo)?;
        if !args.repo.quiet {
            synced.warn();
        }
        if !report.plan.overwrites.is_empty() && !args.force {
            return Err(GitError::HandEdits {
                path: report.plan.path.clone(),
                paths: report.plan.overwrites.clone(),
            }
            .into());
        }
        return Ok(changes_exit(&report.plan));
    }
    match args.repo.output {
        Output::Json => print_json(&synced.with_warnings(sync_json(report, &opts.target)))?,
        Output::Text | Output::Markdown => print_sync(report, opts, args.repo.quiet)?,
    }
    if !args.repo.quiet {
        synced.warn();
    }
    Ok(ExitCode::SUCCESS)
}

fn diff(args: DiffArgs) -> CmdResult {
    if args.output_dir.is_some() && args.repo.output != Output::Markdown {
        return Err(CommandError::usage(
            "--output-dir writes the parts of --output markdown",
        ));
    }
    let synced = sync_fleet(&args.repo, |opts| {
        // The per-VM diffs also tell which VMs must re-join (--stat and markdown).
        opts.mode = match args.repo.output {
            Output::Json => Mode::DryRun,
            Output::Text | Output::Markdown => Mode::DryRunWithDiff,
        };
    })?;
    let plan = &synced.report.plan;
    match (args.repo.output, &args.output_dir) {
        (Output::Markdown, None) => {
            let parts = git::review::markdown(plan, args.part_size);
            to_stdout(|out| out.write_all(parts.concat().as_bytes()))?;
        }
        (Output::Markdown, Some(dir)) => {
            write_parts(dir, &git::review::markdown(plan, args.part_size))?
        }
        (Output::Text, _) if args.stat => {
            crate::paint::show(&git::review::stat(plan), args.repo.color, false)?;
        }
        _ => print_plan(&synced, &args.repo)?,
    }
    if !args.repo.quiet {
        synced.warn();
    }
    Ok(changes_exit(&synced.report.plan))
}

/// Writes the comment's parts as DIR/part-N.md, after removing the part files of an earlier
/// run (a CI job posts every part file it finds); prints their paths.
fn write_parts(dir: &std::path::Path, parts: &[String]) -> Result<(), CommandError> {
    let cannot =
        |e: std::io::Error| CommandError::invalid(format!("cannot write {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(cannot)?;
    for entry in std::fs::read_dir(dir).map_err(cannot)? {
        let name = entry.map_err(cannot)?.file_name();
        let name = name.to_string_lossy();
        let stale = name
            .strip_prefix("part-")
            .and_then(|n| n.strip_suffix(".md"))
            .is_some_and(|n| n.parse::<usize>().is_ok());
        if stale {
            std::fs::remove_file(dir.join(&*name)).map_err(cannot)?;
        }
    }
    let mut paths = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let path = dir.join(format!("part-{}.md", i + 1));
        std::fs::write(&path, part).map_err(cannot)?;
        paths.push(path);
    }
    to_stdout(|out| {
        for p in &paths {
            writeln!(out, "{}", p.display())?;
        }
        Ok(())
    })
}

fn changes_exit(plan: &Plan) -> ExitCode {
    if plan.has_changes() {
        Exit::Changes.into()
    } else {
        ExitCode::SUCCESS
    }
}

fn short(id: git::Oid) -> String {
    id.to_string()[..10].to_owned()
}

fn counts(plan: &Plan) -> String {
    let v = &plan.vms;
    let moved = if v.moved.is_empty() {
        String::new()
    } else {
        format!(", {} moved", v.moved.len())
    };
    format!(
        "{} VM{} added, {} changed, {} removed{moved}; {} file{} changed",
        v.added.len(),
        if v.added.len() == 1 { "" } else { "s" },
        v.changed.len(),
        v.removed.len(),
        plan.files.len(),
        if plan.files.len() == 1 { "" } else { "s" },
    )
}

fn print_plan(synced: &Synced, repo: &RepoArgs) -> Result<(), CommandError> {
    let plan = &synced.report.plan;
    if repo.output == Output::Json {
        let mut value = serde_json::to_value(plan).expect("a plan is JSON");
        value["changes"] = plan.has_changes().into();
        value["repository"] = synced.opts.target.display().into();
        return print_json(&synced.with_warnings(value));
    }
    let mut text = Vec::new();
    write_plan(&mut text, plan).expect("writing to memory");
    crate::paint::show(&String::from_utf8_lossy(&text), repo.color, !repo.no_pager)
}

fn write_plan(out: &mut dyn Write, plan: &Plan) -> std::io::Result<()> {
    let base = plan.base.map_or("a new branch".to_owned(), short);
    writeln!(
        out,
        "{} on {} (against {base}): {}",
        plan.path,
        plan.branch,
        if plan.has_changes() {
            counts(plan)
        } else {
            "no changes".to_owned()
        }
    )?;
    for (sign, vms) in [
        ('+', &plan.vms.added),
        ('~', &plan.vms.changed),
        ('-', &plan.vms.removed),
    ] {
        for vm in vms {
            writeln!(out, "  {sign} {}  ({}/{})", vm.name, vm.namespace, vm.group)?;
        }
    }
    for m in &plan.vms.moved {
        writeln!(
            out,
            "  > {}  ({}/{} → {}/{})",
            m.from.name, m.from.namespace, m.from.group, m.to.namespace, m.to.group
        )?;
    }
    for f in plan.other_files() {
        writeln!(out, "  {} {}", f.change.sign(), f.path)?;
    }
    write_cleanup(out, plan)?;
    if let Some((removed, of)) = plan.mass_removal() {
        writeln!(
            out,
            "note: this removes {removed} of the {of} committed VMs; sync refuses that without \
             --allow-mass-removal"
        )?;
    }
    if !plan.hand_edits.is_empty() {
        writeln!(
            out,
            "edited by hand since meshvm's last commit{}:",
            if plan.overwrites.is_empty() {
                ""
            } else {
                " (sync overwrites only with --force)"
            }
        )?;
        for p in &plan.hand_edits {
            let mark = if plan.overwrites.contains(p) {
                "!"
            } else {
                " "
            };
            writeln!(out, "  {mark} {p}")?;
        }
    }
    if let Some(diff) = plan.diff.as_deref().filter(|d| !d.is_empty()) {
        writeln!(out)?;
        out.write_all(diff.as_bytes())?;
    }
    Ok(())
}

/// What the engines leave behind when a group's directory goes: Flux prunes its objects,
/// Argo CD keeps the group's Application (the ApplicationSet never deletes one) and the
/// objects it applied. VMs that moved keep their WorkloadEntry (same name and namespace), now
/// applied by their new group's Application.
fn write_cleanup(out: &mut dyn Write, plan: &Plan) -> std::io::Result<()> {
    if plan.removed_groups.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "groups removed: Flux prunes their objects; Argo CD keeps them and the group's \
         Application. For Argo CD, delete by hand the Application generated for each directory \
         (it has no finalizer: its objects stay), then:"
    )?;
    for g in &plan.removed_groups {
        let mut objects = vec![format!("workloadgroup/{}", g.group)];
        objects.extend(
            plan.vms
                .removed
                .iter()
                .filter(|v| v.namespace == g.namespace && v.group == g.group)
                .map(|v| format!("workloadentry/{}", v.name)),
        );
        writeln!(
            out,
            "  {}/{}:  kubectl -n {} delete {}  (and the group's ServiceEntry, unless another \
             group now serves it)",
            plan.path,
            meshvm::render::layout::group_dir(&g.namespace, &g.group),
            g.namespace,
            objects.join(" ")
        )?;
    }
    Ok(())
}

fn push_word(push: &PushOutcome) -> (&'static str, Option<u32>) {
    match push {
        PushOutcome::NotAsked => ("not-asked", None),
        PushOutcome::UpToDate => ("up-to-date", None),
        PushOutcome::Pushed { attempts } => ("pushed", Some(*attempts)),
    }
}

fn sync_json(report: &Report, target: &Target) -> serde_json::Value {
    let (push, attempts) = push_word(&report.push);
    serde_json::json!({
        "changes": report.plan.has_changes(),
        "commit": report.commit.map(|c| c.to_string()),
        "head": report.head.map(|c| c.to_string()),
        "push": push,
        "attempts": attempts,
        "repository": target.display(),
        "localRepository": report.repo_dir,
        "plan": report.plan,
    })
}

fn print_json(value: &serde_json::Value) -> Result<(), CommandError> {
    let json = serde_json::to_string_pretty(value).expect("JSON values print");
    to_stdout(|out| writeln!(out, "{json}"))
}

fn print_sync(report: &Report, opts: &Options, quiet: bool) -> Result<(), CommandError> {
    to_stdout(|out| write_sync(out, report, opts))?;
    if report.push == PushOutcome::NotAsked && matches!(opts.target, Target::Url(_)) && !quiet {
        eprintln!(
            "note: not pushed; the commit is in the cache {} (add --push to publish it)",
            report.repo_dir.display()
        );
    }
    Ok(())
}

fn write_sync(out: &mut dyn Write, report: &Report, opts: &Options) -> std::io::Result<()> {
    let plan = &report.plan;
    let target = opts.target.display();
    match (report.commit, report.head) {
        (Some(c), _) => writeln!(
            out,
            "committed {} to {} in {}: {}",
            short(c),
            plan.branch,
            report.repo_dir.display(),
            counts(plan)
        )?,
        (None, Some(h)) => writeln!(
            out,
            "{} on {} is up to date ({}): no commit",
            plan.path,
            plan.branch,
            short(h)
        )?,
        (None, None) => writeln!(out, "nothing to commit: the rendered tree is empty")?,
    }
    match &report.push {
        PushOutcome::Pushed { attempts } => {
            let remote_branch = opts.remote_branch.as_deref().unwrap_or(&plan.branch);
            let retried = if *attempts > 1 {
                format!(" after {} attempts", attempts)
            } else {
                String::new()
            };
            writeln!(out, "pushed to {target} {remote_branch}{retried}")
        }
        PushOutcome::UpToDate => writeln!(out, "the remote is up to date"),
        PushOutcome::NotAsked => Ok(()),
    }
}

/// Progress on stderr: a bar redrawn in place on a terminal, nothing otherwise.
struct Progress {
    quiet: bool,
    bar: super::progress::Bar,
}

impl Progress {
    fn new(quiet: bool) -> Progress {
        Progress {
            quiet,
            bar: super::progress::Bar::new(quiet),
        }
    }

    fn event(&mut self, event: Event<'_>) {
        if self.quiet {
            return;
        }
        match event {
            Event::Progress { step, done, total } => self.progress(step, done, total),
            Event::Pushing { attempt, url } => {
                self.finish();
                if attempt == 1 {
                    eprintln!("pushing to {url}");
                }
            }
            Event::Retry {
                attempt,
                of,
                reason,
                wait,
            } => {
                self.finish();
                eprintln!(
                    "the remote branch moved ({reason}); fetching and rebuilding, retry {} of {} \
                     in {}",
                    attempt,
                    of - 1,
                    human_duration(wait)
                );
            }
            Event::Remote(text) => {
                self.finish();
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    eprintln!("remote: {}", line.trim_end());
                }
            }
        }
    }

    fn progress(&mut self, step: git::Step, done: usize, total: usize) {
        // Not a terminal (a log, a CI job): quiet; the result line says what was done.
        self.bar.show(step.label(), done, total);
    }

    /// Ends a bar left mid-line.
    fn finish(&mut self) {
        self.bar.finish();
    }
}

fn human_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}
