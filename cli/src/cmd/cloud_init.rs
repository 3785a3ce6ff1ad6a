//! `meshvm cloud-init <vm>`: the user-data that joins one VM to the mesh at first boot.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use meshvm::cloudinit::{self, Provider, Templates};
use meshvm::timestamp::{human_duration, rfc3339};
use meshvm::vmfiles;

use super::FleetArg;
use crate::command_error::{CmdResult, CommandError, to_stdout};

/// Largest token file read; ServiceAccount tokens are about 1 KiB.
const MAX_TOKEN_FILE: u64 = 64 * 1024;

/// Write the cloud-init user-data that joins a VM to the mesh.
///
/// The document (`#cloud-config`) carries the VM's mesh files base64-encoded (root-cert.pem,
/// istio-token, cluster.env, the mesh config), and one step that downloads the istio-sidecar
/// package of the fleet (`sidecar:` version, format, arch, or its mirror `url`), checks its
/// sha256 and installs it, then hands the files to istio-proxy, adds the istiod hosts entry
/// (once, also when cloud-init runs again) and runs `systemctl enable --now istio`.
///
/// The token is checked first: a ServiceAccount token of the VM's group, audience istio-ca,
/// valid for at least --min-token-validity. Make one with
/// `kubectl create token <serviceAccount> -n <namespace> --audience istio-ca --duration 1h`.
/// It is read from a file or standard input, never from the command line, and never printed
/// in messages. The user-data holds it: keep the output out of Git (writing it inside a Git
/// work tree is refused) and launch the VM before the token expires.
///
/// The size of the user-data is reported on stderr; with --provider, a document over that
/// cloud's limit is an error (use --gzip).
///
/// With --all or --group, the user-data of many VMs at once: one `<vm>.user-data` per VM in
/// the directory -o names, each 0600, with the tokens read from --token-dir (one file per
/// ServiceAccount, named `<namespace>.<serviceAccount>`). Nothing is written unless every
/// VM's user-data can be.
///
/// With --group G --broker-ca FILE, for a group whose `join.method` is join-token, aws or gcp:
/// ONE user-data for every VM of the group, with no token in it. Its meshvm-join.service gets
/// each VM's token from the join broker at every boot (see docs/join.md).
///
/// --print-template NAME prints an embedded template, to start a --template of your own.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["vm", "all", "group", "print_template"])))]
#[command(group(clap::ArgGroup::new("token").args(["token_file", "token_stdin", "token_dir"])))]
pub struct Args {
    /// The VM, by its name in the fleet (`workloads[].instances[].name`).
    #[arg(value_name = "VM")]
    vm: Option<String>,
    /// Every VM of the fleet (with --token-dir and -o DIR).
    #[arg(long)]
    all: bool,
    /// Every VM of this workload group (with --token-dir and -o DIR).
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// With --all or --group: a directory holding one token file per ServiceAccount, named
    /// `<namespace>.<serviceAccount>`.
    #[arg(long, value_name = "DIR")]
    token_dir: Option<PathBuf>,
    /// Print the embedded template NAME and exit: a start for your own --template directory.
    #[arg(long, value_name = "NAME", value_enum)]
    print_template: Option<TemplateName>,
    #[command(flatten)]
    fleet: FleetArg,
    /// Read the istio-token from this file.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Read the istio-token from standard input.
    #[arg(long)]
    token_stdin: bool,
    /// The mesh's root certificate (PEM), instead of the fleet's `mesh.rootCert`.
    #[arg(long, value_name = "FILE")]
    root_cert: Option<PathBuf>,
    /// Write the user-data to FILE, created with mode 0600 (default: standard output).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Compress the user-data with gzip (cloud-init accepts it; it fits smaller limits).
    #[arg(long)]
    gzip: bool,
    /// The cloud the VM runs on: a user-data over its size limit is an error.
    #[arg(long, value_enum, default_value = "none")]
    provider: ProviderArg,
    /// A directory with your own `user-data.yaml.hbs` and/or `join.sh.hbs` (handlebars), each
    /// replacing the embedded one; values must go through the `yaml`, `yaml-block` or `sh`
    /// helper.
    #[arg(long, value_name = "DIR")]
    template: Option<PathBuf>,
    /// The least time the token must still be valid, such as 15m, 1h or 90s.
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = parse_duration)]
    min_token_validity: Duration,
    /// Allow writing the output inside a Git work tree (it holds a bearer token).
    #[arg(long)]
    allow_in_repo: bool,
    /// With --group of a broker-joined group (`join.method` join-token, aws or gcp): the CA of
    /// the join broker's serving certificate (PEM, the `ca.crt` of its Secret). The group's
    /// one user-data then holds no token; its VMs get theirs from the broker at every boot.
    #[arg(long, value_name = "FILE")]
    broker_ca: Option<PathBuf>,
    /// With --group: the group's namespace, when groups of that name are in several.
    #[arg(long, value_name = "NAMESPACE", requires = "group")]
    namespace: Option<String>,
    /// Also validate the document against this cloud-init JSON schema
    /// (schema-cloud-config-v1.json).
    #[arg(long, value_name = "FILE")]
    schema: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TemplateName {
    #[value(name = "user-data.yaml.hbs")]
    UserData,
    #[value(name = "join.sh.hbs")]
    Join,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ProviderArg {
    Aws,
    Azure,
    Gcp,
    Openstack,
    None,
}

impl From<ProviderArg> for Provider {
    fn from(p: ProviderArg) -> Provider {
        match p {
            ProviderArg::Aws => Provider::Aws,
            ProviderArg::Azure => Provider::Azure,
            ProviderArg::Gcp => Provider::Gcp,
            ProviderArg::Openstack => Provider::Openstack,
            ProviderArg::None => Provider::None,
        }
    }
}

pub fn run(args: Args) -> CmdResult {
    if let Some(name) = args.print_template {
        let templates = Templates::default();
        let text = match name {
            TemplateName::UserData => templates.user_data,
            TemplateName::Join => templates.join,
        };
        to_stdout(|out| out.write_all(text.as_bytes()))?;
        return Ok(ExitCode::SUCCESS);
    }
    if let (Some(group), Some(ca)) = (&args.group, &args.broker_ca) {
        return run_group(&args, group, ca);
    }
    if args.all || args.group.is_some() {
        return run_many(&args);
    }
    let Some(vm) = args.vm.as_deref() else {
        unreachable!("clap requires one of VM, --all, --group, --print-template")
    };
    if args.token_dir.is_some() || !(args.token_file.is_some() || args.token_stdin) {
        return Err(CommandError::usage(
            "one VM's user-data needs its token: --token-file FILE or --token-stdin \
             (--token-dir is for --all and --group)",
        ));
    }
    if args.token_stdin && args.fleet.file == Path::new(meshvm::spec::STDIN) {
        return Err(CommandError::usage(
            "the token and the fleet cannot both come from standard input",
        ));
    }
    // Checked before anything is rendered, so no token is read for an output that is refused.
    if let Some(output) = &args.output {
        refuse_git_work_tree(output, args.allow_in_repo)?;
    }
    let source = args.fleet.load()?;
    let templates = load_templates(args.template.as_deref())?;
    let token = read_token(&args)?;
    // Whole seconds, as the token's times are.
    let now = time::UtcDateTime::now();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let made = user_data(&args, &source, vm, &token, &templates, now)?;
    let bytes = made.bytes;
    emit(&args, &bytes)?;
    report(&args, vm, &bytes, args.output.as_deref(), made.expires, now);
    super::warn_about_root_cert(&source);
    Ok(ExitCode::SUCCESS)
}

/// One VM's user-data, encoded, with when its token expires.
struct Made {
    bytes: Vec<u8>,
    expires: time::UtcDateTime,
}

/// `--all` / `--group`: every VM's user-data into the directory -o names, all or nothing.
fn run_many(args: &Args) -> CmdResult {
    let (Some(token_dir), Some(out_dir)) = (&args.token_dir, &args.output) else {
        return Err(CommandError::usage(
            "--all and --group need --token-dir DIR (one token file per ServiceAccount, \
             named <namespace>.<serviceAccount>) and -o DIR",
        ));
    };
    if args.token_file.is_some() || args.token_stdin {
        return Err(CommandError::usage(
            "--all and --group read each group's token from --token-dir",
        ));
    }
    refuse_git_work_tree(out_dir, args.allow_in_repo)?;
    let source = args.fleet.load()?;
    let templates = load_templates(args.template.as_deref())?;
    let vms: Vec<_> = source
        .fleet
        .vms()
        .filter(|(g, _)| args.group.as_ref().is_none_or(|name| *name == g.name))
        .collect();
    if vms.is_empty() {
        return Err(CommandError::invalid(format!(
            "{}: no workload group named {:?}",
            args.fleet.file.display(),
            args.group.as_deref().unwrap_or_default()
        )));
    }
    let now = time::UtcDateTime::now();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let mut made = Vec::new();
    let mut problems = Vec::new();
    for (group, vm) in &vms {
        let token_file = token_dir.join(format!("{}.{}", group.namespace, group.service_account));
        let token = match read_token_file(&token_file) {
            Ok(token) => token,
            Err(e) => {
                problems.push(format!("VM {}: {}", vm.name, e.error));
                continue;
            }
        };
        match user_data(args, &source, &vm.name, &token, &templates, now) {
            Ok(m) => made.push((vm.name.as_str(), m)),
            Err(e) => problems.push(e.error.to_string()),
        }
    }
    if !problems.is_empty() {
        return Err(CommandError::invalid(format!(
            "nothing written; {} of {} VMs failed:\n  {}",
            problems.len(),
            vms.len(),
            problems.join("\n  ")
        ))
        .hinted(
            "put one token per ServiceAccount in --token-dir, named <namespace>.<serviceAccount>: \
             kubectl create token <serviceAccount> -n <namespace> --audience istio-ca \
             --duration 1h > DIR/<namespace>.<serviceAccount>",
        ));
    }
    std::fs::create_dir_all(out_dir)
        .map_err(|e| CommandError::invalid(format!("cannot create {}: {e}", out_dir.display())))?;
    for (vm, m) in &made {
        let path = out_dir.join(format!("{vm}.user-data"));
        write_private(&path, &m.bytes)?;
        report(args, vm, &m.bytes, Some(&path), m.expires, now);
    }
    to_stdout(|out| {
        writeln!(
            out,
            "wrote the user-data of {} VMs into {} (each 0600)",
            made.len(),
            out_dir.display()
        )
    })?;
    super::warn_about_root_cert(&source);
    Ok(ExitCode::SUCCESS)
}

/// `--group G --broker-ca FILE`: the one user-data of a broker-joined group, no secret in it.
fn run_group(args: &Args, group: &str, ca: &Path) -> CmdResult {
    if args.token_dir.is_some() || args.token_file.is_some() || args.token_stdin {
        return Err(CommandError::usage(
            "a broker-joined group's user-data holds no token: drop --token-dir/--token-file/--token-stdin",
        ));
    }
    let source = args.fleet.load()?;
    let templates = load_templates(args.template.as_deref())?;
    let root_cert = args
        .root_cert
        .as_deref()
        .map(|p| read_text(p, "the root certificate"))
        .transpose()?;
    let broker_ca = read_text(ca, "the join broker's CA")?;
    let now = time::UtcDateTime::now();
    let request = cloudinit::group::GroupRequest {
        fleet: &source.fleet,
        group,
        namespace: args.namespace.as_deref(),
        root_cert: root_cert.as_deref(),
        broker_ca: &broker_ca,
        now,
    };
    let made = cloudinit::group::render_group(&request, &templates).map_err(|e| {
        let error = CommandError::invalid(format!("group {group}: {e}"));
        if matches!(e, cloudinit::CloudInitError::MissingFile(_)) {
            error.hinted("give --root-cert FILE, or set mesh.rootCert in the fleet")
        } else {
            error
        }
    })?;
    if let Some(path) = &args.schema {
        check_schema(&made.document, path)?;
    }
    for warning in &made.warnings {
        eprintln!("warning: group {group}: {warning}");
    }
    let bytes = cloudinit::encode(&made.document, args.gzip);
    let provider = Provider::from(args.provider);
    cloudinit::check_size(provider, bytes.len(), args.gzip)
        .map_err(|e| CommandError::invalid(format!("group {group}: {e}")))?;
    emit(args, &bytes)?;
    eprintln!(
        "meshvm: user-data of group {group}: {} bytes{}, no token in it: every VM of the group gets its own from the join broker",
        bytes.len(),
        if args.gzip { " (gzip)" } else { "" },
    );
    Ok(ExitCode::SUCCESS)
}

/// What was made, on stderr.
fn report(
    args: &Args,
    vm: &str,
    bytes: &[u8],
    output: Option<&Path>,
    expires: time::UtcDateTime,
    now: time::UtcDateTime,
) {
    let provider = Provider::from(args.provider);
    let remaining = Duration::try_from(expires - now).unwrap_or_default();
    eprintln!(
        "meshvm: user-data of VM {}: {} bytes{}{}{}; the token in it expires at {} (in {})",
        vm,
        bytes.len(),
        if args.gzip { " (gzip)" } else { "" },
        match provider.limit() {
            Some(limit) => format!(", {} limit {limit}", provider.name()),
            None => String::new(),
        },
        match output {
            Some(path) => format!(", written to {} (mode 0600)", path.display()),
            None => String::new(),
        },
        rfc3339(expires),
        human_duration(remaining),
    );
}

/// The user-data of `vm`, checked (token, root certificate, size) and encoded.
fn user_data(
    args: &Args,
    source: &meshvm::spec::SourceFile,
    vm: &str,
    token: &str,
    templates: &Templates,
    now: time::UtcDateTime,
) -> Result<Made, CommandError> {
    let fleet_file = args.fleet.file.display();
    let mut files = vmfiles::vm_files(&source.fleet, vm)
        .map_err(|e| CommandError::invalid(format!("{fleet_file}: {e}")))?;
    if let Some(path) = &args.root_cert {
        files.insert(vmfiles::ROOT_CERT, read_text(path, "the root certificate")?);
    }
    if !files.contains(vmfiles::ROOT_CERT) {
        return Err(CommandError::invalid(format!(
            "{fleet_file}: the VM needs the mesh's root certificate"
        ))
        .hinted(
            "give --root-cert FILE, or set mesh.rootCert in the fleet (the `root-cert.pem` of the \
             istio-ca-root-cert ConfigMap)",
        ));
    }
    let request = cloudinit::Request {
        fleet: &source.fleet,
        vm,
        files: &files,
        token,
        now,
        min_token_validity: args.min_token_validity,
    };
    let user_data = cloudinit::render(&request, templates)
        .map_err(|e| CommandError::invalid(format!("VM {vm}: {e}")))?;
    if let Some(path) = &args.schema {
        check_schema(&user_data.document, path)?;
    }
    for warning in &user_data.warnings {
        eprintln!("warning: VM {vm}: {warning}");
    }

    let bytes = cloudinit::encode(&user_data.document, args.gzip);
    let provider = Provider::from(args.provider);
    cloudinit::check_size(provider, bytes.len(), args.gzip).map_err(|e| {
        let error = CommandError::invalid(format!("VM {vm}: {e}"));
        match e.compressed {
            true => error,
            false => error.hinted("add --gzip: cloud-init accepts gzip-compressed user-data"),
        }
    })?;
    Ok(Made {
        bytes,
        expires: user_data.token_expires_at,
    })
}

/// The token from its file or stdin. Errors name where it came from, never what it holds.
fn read_token(args: &Args) -> Result<String, CommandError> {
    match &args.token_file {
        Some(path) => read_token_file(path),
        None => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .lock()
                .take(MAX_TOKEN_FILE + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| {
                    CommandError::invalid(format!("cannot read the token from stdin: {e}"))
                })?;
            token_text("the token on stdin", bytes)
        }
    }
}

/// The token in `path`. Errors name the file, never what it holds.
fn read_token_file(path: &Path) -> Result<String, CommandError> {
    let cannot = |e| {
        CommandError::invalid(format!(
            "cannot read the token file {}: {e}",
            path.display()
        ))
    };
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut bytes = Vec::new();
    file.take(MAX_TOKEN_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    token_text(&format!("the token file {}", path.display()), bytes)
}

fn token_text(what: &str, bytes: Vec<u8>) -> Result<String, CommandError> {
    if bytes.len() as u64 > MAX_TOKEN_FILE {
        return Err(CommandError::invalid(format!(
            "{what} is larger than {MAX_TOKEN_FILE} bytes; it should hold one token"
        )));
    }
    String::from_utf8(bytes).map_err(|_| CommandError::invalid(format!("{what} is not text")))
}

fn read_text(path: &Path, what: &str) -> Result<String, CommandError> {
    std::fs::read_to_string(path)
        .map_err(|e| CommandError::invalid(format!("cannot read {what} {}: {e}", path.display())))
}

/// The embedded templates, with the ones found in `dir` instead. Any other file in `dir` is an
/// error, so that a misnamed template is not silently ignored.
fn load_templates(dir: Option<&Path>) -> Result<Templates, CommandError> {
    let mut templates = Templates::default();
    let Some(dir) = dir else {
        return Ok(templates);
    };
    let entries = std::fs::read_dir(dir).map_err(|e| {
        CommandError::invalid(format!(
            "cannot read the template directory {}: {e}",
            dir.display()
        ))
    })?;
    for entry in entries {
        let entry = entry.map_err(|e| CommandError::invalid(format!("{}: {e}", dir.display())))?;
        let name = entry.file_name();
        let slot = match name.to_str() {
            Some(cloudinit::USER_DATA_TEMPLATE_NAME) => &mut templates.user_data,
            Some(cloudinit::JOIN_TEMPLATE_NAME) => &mut templates.join,
            _ => {
                return Err(CommandError::invalid(format!(
                    "{}: {:?} is not a meshvm template",
                    dir.display(),
                    name
                ))
                .hinted(format!(
                    "a template directory holds {} and/or {}",
                    cloudinit::USER_DATA_TEMPLATE_NAME,
                    cloudinit::JOIN_TEMPLATE_NAME
                )));
            }
        };
        *slot = read_text(&entry.path(), "the template")?;
    }
    Ok(templates)
}

fn check_schema(document: &str, path: &Path) -> Result<(), CommandError> {
    let schema: serde_json::Value = serde_json::from_str(&read_text(path, "the schema")?)
        .map_err(|e| CommandError::invalid(format!("{}: not JSON: {e}", path.display())))?;
    let problems = cloudinit::schema_problems(document, &schema)
        .map_err(|e| CommandError::invalid(format!("{}: {e}", path.display())))?;
    if problems.is_empty() {
        return Ok(());
    }
    Err(CommandError::invalid(format!(
        "the user-data does not validate against {}:\n  {}",
        path.display(),
        problems.join("\n  ")
    )))
}

/// A user-data file holds a bearer token: refuse to write it where `git add` would pick it up.
pub(crate) fn refuse_git_work_tree(output: &Path, allowed: bool) -> Result<(), CommandError> {
    if allowed {
        return Ok(());
    }
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir = parent.canonicalize().map_err(|e| {
        CommandError::invalid(format!(
            "cannot write {}: {}: {e}",
            output.display(),
            parent.display()
        ))
    })?;
    if let Some(top) = dir.ancestors().find(|d| d.join(".git").exists()) {
        return Err(CommandError::invalid(format!(
            "{} is inside the Git work tree {}, and the user-data holds a bearer token",
            output.display(),
            top.display()
        ))
        .hinted(
            "write it outside the repository, or pass --allow-in-repo (and keep it out of \
             commits)",
        ));
    }
    Ok(())
}

/// Writes `bytes` as `path` with mode 0600 from the start: a temporary file beside it (created
/// 0600) renamed over it, so the file is never readable by others, even when it existed.
/// One user-data to `-o FILE` (0600) or stdout; gzip never to a terminal.
fn emit(args: &Args, bytes: &[u8]) -> Result<(), CommandError> {
    match &args.output {
        Some(path) => write_private(path, bytes),
        None if args.gzip && std::io::stdout().is_terminal() => Err(CommandError::usage(
            "gzip-compressed user-data is binary: write it with -o FILE or pipe it",
        )),
        None => to_stdout(|out| out.write_all(bytes)),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CommandError> {
    let fail =
        |e: std::io::Error| CommandError::invalid(format!("cannot write {}: {e}", path.display()));
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut file = tempfile::Builder::new()
        .prefix(".meshvm-user-data-")
        .tempfile_in(dir)
        .map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.as_file().sync_all().map_err(fail)?;
    file.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

/// `90s`, `15m`, `1h30m`, `2d`, or `0`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration such as 90s, 15m, 1h30m or 2d");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() || text.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        for (text, secs) in [
            ("0", 0),
            ("90s", 90),
            ("15m", 900),
            ("1h30m", 5400),
            ("2d", 172_800),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
        for bad in ["", "15", "m", "1x", "-1m", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
