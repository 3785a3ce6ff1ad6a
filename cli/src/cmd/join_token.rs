use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use meshvm::join::tokens::RANDOM_BYTES;

use super::FleetArg;
use crate::broker::kube::Kube;
use crate::broker::token_file::TokenFile;
use crate::broker::token_secret::TokenSecret;
use crate::command_error::{CmdResult, CommandError, to_stdout};

/// Join tokens for on-premises VMs of `join: {method: join-token}` groups.
///
/// A token is shown once, at creation; the book (`--book`) keeps only its SHA-256, its group,
/// expiry and remaining uses. The broker (`meshvm join-server --join-tokens FILE`) consumes a
/// use per join.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a token for a group and print it (once).
    Create(CreateArgs),
    /// List the tokens: ID, group, VM, expiry, uses left (never the tokens).
    List(BookArg),
    /// Revoke a token by its ID.
    Revoke(RevokeArgs),
}

#[derive(Debug, clap::Args)]
pub struct BookArg {
    /// The join-token book (JSON, 0600).
    #[arg(
        long = "book",
        value_name = "FILE",
        env = "MESHVM_JOIN_TOKENS",
        default_value = "join-tokens.json"
    )]
    book: PathBuf,
    /// The book in a Kubernetes Secret instead, `NAMESPACE/NAME` (key `book.json`; created
    /// when missing), as `join-server --join-tokens-secret` reads it.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    secret: Option<String>,
    /// The kubeconfig for --secret (its current context).
    #[arg(long, value_name = "FILE", requires = "secret")]
    kubeconfig: Option<PathBuf>,
}

impl BookArg {
    /// Runs `f` on the book, in its file or its Secret; writes it back when `f` says so.
    fn update<T>(
        &self,
        f: impl FnMut(&mut meshvm::join::tokens::TokenBook) -> (T, bool),
    ) -> Result<T, CommandError> {
        let Some(secret) = &self.secret else {
            let mut f = f;
            return TokenFile::new(&self.book)
                .update(|book| f(book))
                .map_err(CommandError::invalid);
        };
        let secret = TokenSecret::parse(secret).map_err(CommandError::usage)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CommandError::invalid(format!("cannot start the runtime: {e}")))?;
        runtime
            .block_on(async {
                let kube = Kube::new(self.kubeconfig.as_deref())?;
                secret.update(&kube, f).await
            })
            .map_err(CommandError::invalid)
    }
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    #[command(flatten)]
    book: BookArg,
    #[command(flatten)]
    fleet: FleetArg,
    /// The workload group, as `NAMESPACE/NAME` or `NAME` when the name is unique.
    #[arg(long)]
    group: String,
    /// Bind the token to one VM of the group.
    #[arg(long)]
    vm: Option<String>,
    /// How long the token is valid: `30m`, `24h`, `7d`.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// How many joins the token allows.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    uses: u32,
}

#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    book: BookArg,
    /// The token's ID (the 12 hex digits `list` shows).
    id: String,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `30s`, `15m`, `24h`, `7d` in seconds.
fn parse_ttl(text: &str) -> Result<i64, CommandError> {
    let bad = || {
        CommandError::usage(format!(
            "--ttl {text:?} is not a duration such as 30m, 24h or 7d"
        ))
    };
    let unit_at = text.char_indices().last().map(|(i, _)| i).ok_or_else(bad)?;
    let (number, unit) = text.split_at(unit_at);
    let n: i64 = number.parse().map_err(|_| bad())?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    match n.checked_mul(scale) {
        Some(s) if s > 0 && s <= 366 * 86_400 => Ok(s),
        _ => Err(CommandError::usage(format!(
            "--ttl {text:?} must be between 1s and 366d"
        ))),
    }
}

fn random() -> Result<[u8; RANDOM_BYTES], CommandError> {
    let mut bytes = [0; RANDOM_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| CommandError::invalid(format!("cannot read /dev/urandom: {e}")))?;
    Ok(bytes)
}

pub fn run(command: Command) -> CmdResult {
    match command {
        Command::Create(args) => create(args),
        Command::List(args) => list(args),
        Command::Revoke(args) => revoke(args),
    }
}

fn create(args: CreateArgs) -> CmdResult {
    let ttl = parse_ttl(&args.ttl)?;
    let source = args.fleet.load()?;
    let fleet = source.fleet.fleet();
    let matches: Vec<_> = fleet
        .workloads
        .iter()
        .filter(|w| match args.group.split_once('/') {
            Some((ns, name)) => w.namespace == ns && w.name == name,
            None => w.name == args.group,
        })
        .collect();
    let group = match matches.as_slice() {
        [one] => *one,
        [] => {
            return Err(CommandError::invalid(format!(
                "{}: no workload group {:?}",
                source.path.display(),
                args.group
            )));
        }
        _ => {
            return Err(CommandError::invalid(format!(
                "{}: several groups are named {:?}",
                source.path.display(),
                args.group
            ))
            .hinted("name it as NAMESPACE/NAME"));
        }
    };
    if group.join.method != meshvm::spec::JoinMethod::JoinToken {
        return Err(CommandError::invalid(format!(
            "group {}/{} joins by `{}`, not by join token",
            group.namespace,
            group.name,
            group.join.method.as_str()
        ))
        .hinted("set `join: {method: join-token}` on the group in the fleet"));
    }
    if let Some(vm) = &args.vm {
        if !group.instances.iter().any(|i| &i.name == vm) {
            return Err(CommandError::invalid(format!(
                "group {}/{} has no VM {vm:?}",
                group.namespace, group.name
            )));
        }
    }
    let random = random()?;
    let created = args.book.update(|book| {
        let now = now();
        book.prune(now);
        let c = book.create(
            random,
            &group.namespace,
            &group.name,
            args.vm.as_deref(),
            ttl,
            args.uses,
            now,
        );
        (c, true)
    })?;
    let expires = meshvm::timestamp::rfc3339(
        time::UtcDateTime::from_unix_timestamp(created.entry.expires)
            .unwrap_or(time::UtcDateTime::UNIX_EPOCH),
    );
    to_stdout(|out| writeln!(out, "{}", created.token))?;
    eprintln!(
        "join token {} for {}/{}: {} use{}, expires {expires}; it is shown only now",
        created.entry.id,
        group.namespace,
        group.name,
        args.uses,
        if args.uses == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}

fn list(args: BookArg) -> CmdResult {
    let book = args.update(|book| (book.clone(), false))?;
    let now = now();
    to_stdout(|out| {
        writeln!(
            out,
            "ID            GROUP                          VM              EXPIRES               USES  STATE"
        )?;
        for e in &book.tokens {
            let expires = meshvm::timestamp::rfc3339(
                time::UtcDateTime::from_unix_timestamp(e.expires)
                    .unwrap_or(time::UtcDateTime::UNIX_EPOCH),
            );
            let state = if e.expires <= now {
                "expired"
            } else if e.uses_left == 0 {
                "used-up"
            } else {
                "valid"
            };
            writeln!(
                out,
                "{:<13} {:<30} {:<15} {:<21} {:>4}  {state}",
                e.id,
                format!("{}/{}", e.namespace, e.group),
                e.vm.as_deref().unwrap_or("-"),
                expires,
                e.uses_left
            )?;
        }
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn revoke(args: RevokeArgs) -> CmdResult {
    let removed = args.book.update(|book| {
        let removed = book.revoke(&args.id);
        (removed, removed)
    })?;
    if !removed {
        return Err(CommandError::invalid(format!(
            "{}: no join token {:?}",
            args.book.book.display(),
            args.id
        ))
        .hinted("`meshvm join-token list` shows the IDs"));
    }
    eprintln!("join token {} revoked", args.id);
    Ok(ExitCode::SUCCESS)
}
