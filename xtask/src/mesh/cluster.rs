//! The harness's control plane: etcd and kube-apiserver on 127.0.0.1, detached from `up`, their
//! PIDs recorded so that `down` stops exactly them.
//!
//! Certificates come from Debian's `openssl`: a test CA, the API server's serving certificate
//! (localhost, 127.0.0.1), an admin client certificate (O=system:masters) and the
//! ServiceAccount signing key. openssl is on every Debian machine; a Rust certificate crate
//! would add a C crypto build to the two shared cores for a few seconds' work.

use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::Paths;
use super::build::Tool;
use crate::ci::run_quietly;

/// A process `up` starts: the program, and the name of its PID and log files (two istiods run
/// the same program).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Process {
    pub tool: Tool,
    pub name: &'static str,
}

impl Process {
    pub(super) const fn of(tool: Tool) -> Process {
        Process {
            tool,
            name: tool.name(),
        }
    }
}

pub(super) const ETCD: Process = Process::of(Tool::Etcd);
pub(super) const KUBE_APISERVER: Process = Process::of(Tool::KubeApiserver);
/// istiod, the default revision.
pub(super) const ISTIOD: Process = Process::of(Tool::PilotDiscovery);
/// istiod of the revision [`super::istiod::REVISION`].
pub(super) const ISTIOD_REVISION: Process = Process {
    tool: Tool::PilotDiscovery,
    name: "pilot-discovery-rev",
};

/// The processes `up` starts, in start order (`down` stops them in reverse); Flux's two only
/// when they are built (`mesh build --flux`).
const PROCESSES: [Process; 6] = [
    ETCD,
    KUBE_APISERVER,
    ISTIOD,
    ISTIOD_REVISION,
    super::flux::SOURCE_CONTROLLER,
    super::flux::KUSTOMIZE_CONTROLLER,
];

/// How long the API server and the CRDs may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

fn pid_file(paths: &Paths, process: Process) -> PathBuf {
    paths.state.join(format!("{}.pid", process.name))
}

/// Where `process` writes its output.
pub(super) fn log_file(paths: &Paths, process: Process) -> PathBuf {
    paths.state.join(format!("{}.log", process.name))
}

/// The PID `up` recorded for `process`, when that process still runs its program.
fn live_pid(paths: &Paths, process: Process) -> Result<Option<i32>, String> {
    let file = pid_file(paths, process);
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", file.display())),
    };
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| format!("{}: not a PID: {text:?}", file.display()))?;
    Ok(runs(pid, &paths.tool(process.tool)).then_some(pid))
}

/// Whether `pid` is a live (not zombie) process whose program is `binary`: a PID the kernel
/// has reused for something else is never signalled.
fn runs(pid: i32, binary: &Path) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let program = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the parenthesised command name.
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    program == binary.as_os_str().as_encoded_bytes() && !zombie
}

/// Whether a harness started by `up` runs.
pub fn running(paths: &Paths) -> Result<bool, String> {
    for process in PROCESSES {
        if live_pid(paths, process)?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Starts the harness and waits until the API server serves the CRDs. Refuses when one runs.
pub fn up(paths: &Paths) -> Result<(), String> {
    if running(paths)? {
        return Err(already_running(paths));
    }
    // A start that fails half-way stops what it started: no etcd or API server left behind.
    start(paths).inspect_err(|_| {
        let _ = down(paths);
    })
}

fn already_running(paths: &Paths) -> String {
    let pids: Vec<String> = PROCESSES
        .iter()
        .filter_map(|process| {
            let pid = live_pid(paths, *process).ok().flatten()?;
            Some(format!("{} (PID {pid})", process.name))
        })
        .collect();
    format!(
        "a harness is already running: {}; use it (`eval $(cargo xtask mesh env)`) or stop \
         it with `cargo xtask mesh down`",
        pids.join(", ")
    )
}

fn start(paths: &Paths) -> Result<(), String> {
    let started = Instant::now();
    // Leftovers of a harness that died are replaced.
    remove_state(paths)?;
    let state = &paths.state;
    let pki = state.join("pki");
    std::fs::create_dir_all(&pki).map_err(|e| format!("{}: {e}", pki.display()))?;
    certificates(&pki)?;

    let [client, peer, secure] = free_ports::<3>()?;
    let etcd_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let data_dir = state.join("etcd-data");
    let etcd_args = vec![
        format!("--data-dir={}", data_dir.display()),
        format!("--listen-client-urls={etcd_url}"),
        format!("--advertise-client-urls={etcd_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=default={peer_url}"),
        "--unsafe-no-fsync".into(),
    ];
    spawn(paths, ETCD, &etcd_args)?;
    wait_for(paths, ETCD, "etcd /health", || {
        curl(&format!("{etcd_url}/health")).is_some_and(|body| body.contains("\"health\":\"true\""))
    })?;

    let file = |name: &str| pki.join(name).display().to_string();
    let apiserver_args = vec![
        format!("--etcd-servers={etcd_url}"),
        "--bind-address=127.0.0.1".into(),
        // Without it the API server looks for an address on the default route's interface.
        "--advertise-address=127.0.0.1".into(),
        format!("--secure-port={secure}"),
        format!("--cert-dir={}", pki.display()),
        format!("--tls-cert-file={}", file("apiserver.crt")),
        format!("--tls-private-key-file={}", file("apiserver.key")),
        format!("--client-ca-file={}", file("ca.crt")),
        "--authorization-mode=RBAC".into(),
        "--service-cluster-ip-range=10.0.0.0/24".into(),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        format!("--service-account-key-file={}", file("sa.pub")),
        format!("--service-account-signing-key-file={}", file("sa.key")),
        // No controller manager creates the `default` ServiceAccounts this plugin demands.
        "--disable-admission-plugins=ServiceAccount".into(),
        "--allow-privileged=true".into(),
    ];
    spawn(paths, KUBE_APISERVER, &apiserver_args)?;
    write_kubeconfig(paths, secure, &pki)?;
    wait_for(paths, KUBE_APISERVER, "kube-apiserver /readyz", || {
        kubectl(paths, &["get", "--raw", "/readyz"]).is_ok()
    })?;
    load_crds(paths)?;
    let istiod = super::istiod::start(paths)?;
    let flux = if super::build::flux_built(paths) {
        super::flux::start(paths)?;
        "Flux's source-controller and kustomize-controller"
    } else {
        "no Flux (not built: `cargo xtask mesh build --flux`)"
    };
    eprintln!(
        "xtask mesh: up in {:.1?}: etcd {etcd_url}, kube-apiserver https://127.0.0.1:{secure}, \
         istiod {istiod}, {flux}; `eval $(cargo xtask mesh env)` to use it",
        started.elapsed()
    );
    Ok(())
}

/// Stops the recorded processes (SIGTERM, then SIGKILL after 10 s) and removes the state.
pub fn down(paths: &Paths) -> Result<(), String> {
    for process in PROCESSES.iter().rev() {
        let Some(pid) = live_pid(paths, *process)? else {
            continue;
        };
        let binary = paths.tool(process.tool);
        // SAFETY: kill(2) on a PID checked just above to be this harness's process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while runs(pid, &binary) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if runs(pid, &binary) {
            // SAFETY: as above; the process ignored SIGTERM.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        eprintln!("xtask mesh: stopped {} (PID {pid})", process.name);
    }
    super::istiod::remove_network(paths)?;
    remove_state(paths)
}

fn remove_state(paths: &Paths) -> Result<(), String> {
    match std::fs::remove_dir_all(&paths.state) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", paths.state.display())),
    }
}

/// `N` ports free on 127.0.0.1 now, held together so that they differ.
pub(super) fn free_ports<const N: usize>() -> Result<[u16; N], String> {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("no free port on 127.0.0.1: {e}"))?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr().map_err(|e| e.to_string())?.port();
    }
    Ok(ports)
}

/// Starts `process` in its own process group (so that `up` returns and a Ctrl-C in the shell
/// does not reach it), its output in `<state>/<name>.log`, and records its PID.
pub(super) fn spawn(paths: &Paths, process: Process, args: &[String]) -> Result<(), String> {
    spawn_in(paths, process, args, &paths.state, &[])
}

/// [`spawn`] in the working directory `cwd` with extra environment variables.
pub(super) fn spawn_in(
    paths: &Paths,
    process: Process,
    args: &[String],
    cwd: &Path,
    envs: &[(&str, String)],
) -> Result<(), String> {
    let log_path = log_file(paths, process);
    let log = File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(paths.tool(process.tool));
    cmd.args(args)
        .current_dir(cwd)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0);
    let child = cmd.spawn().map_err(|e| format!("{cmd:?}: {e}"))?;
    let file = pid_file(paths, process);
    std::fs::write(&file, format!("{}\n", child.id()))
        .map_err(|e| format!("{}: {e}", file.display()))
}

/// Polls `ready` until it holds; fails with the log's tail when the process exits or time
/// runs out.
pub(super) fn wait_for(
    paths: &Paths,
    process: Process,
    what: &str,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if ready() {
            return Ok(());
        }
        let alive = live_pid(paths, process)?.is_some();
        if !alive || Instant::now() > deadline {
            let log = log_file(paths, process);
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            let why = if alive {
                "timed out"
            } else {
                "the process exited"
            };
            let _ = down(paths);
            return Err(format!(
                "{what} never became ready ({why}); the end of {}:\n{}",
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(super) fn curl(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-fsS", "--max-time", "2", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// kubectl against the harness; what it said when it fails.
pub(super) fn kubectl(paths: &Paths, args: &[&str]) -> Result<(), String> {
    run_quietly(
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(paths.kubeconfig())
            .args(args),
    )
}

pub(super) fn openssl(pki: &Path, args: &[&str]) -> Result<(), String> {
    run_quietly(Command::new("openssl").args(args).current_dir(pki))
}

/// The test CA, the serving and admin certificates it signs (valid a week), and the
/// ServiceAccount token signing key pair (RSA, as the tokens' RS256 expects).
fn certificates(pki: &Path) -> Result<(), String> {
    // A fresh P-256 key and a certificate valid for a week: self-signed, or signed by the CA.
    let certificate =
        |key: &'static str, crt: &'static str, signed: bool, extra: &[&'static str]| {
            let mut args = vec!["req", "-x509", "-newkey", "ec", "-pkeyopt"];
            args.extend(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "7"]);
            args.extend(["-keyout", key, "-out", crt]);
            if signed {
                args.extend(["-CA", "ca.crt", "-CAkey", "ca.key"]);
            }
            args.extend(extra);
            openssl(pki, &args)
        };
    certificate("ca.key", "ca.crt", false, &["-subj", "/CN=meshvm-test-ca"])?;
    certificate(
        "apiserver.key",
        "apiserver.crt",
        true,
        &[
            "-subj",
            "/CN=kube-apiserver",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext",
            "extendedKeyUsage=serverAuth",
            // `req -x509` marks certificates as CAs by default; rustls (the join broker's
            // client) refuses a CA certificate as a server's, as RFC 5280 says it should.
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ],
    )?;
    certificate(
        "admin.key",
        "admin.crt",
        true,
        &[
            "-subj",
            "/O=system:masters/CN=meshvm-admin",
            "-addext",
            "extendedKeyUsage=clientAuth",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ],
    )?;
    openssl(
        pki,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "sa.key",
        ],
    )?;
    openssl(pki, &["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"])
}

fn write_kubeconfig(paths: &Paths, port: u16, pki: &Path) -> Result<(), String> {
    let file = |name: &str| pki.join(name).display().to_string();
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: mesh
  cluster:
    server: https://127.0.0.1:{port}
    certificate-authority: {ca}
users:
- name: admin
  user:
    client-certificate: {crt}
    client-key: {key}
contexts:
- name: mesh
  context: {{cluster: mesh, user: admin}}
current-context: mesh
",
        ca = file("ca.crt"),
        crt = file("admin.crt"),
        key = file("admin.key"),
    );
    let path = paths.kubeconfig();
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The CRD files of ../shared/crds loaded server-side (some are too large for the
/// last-applied annotation of a client-side apply), then waited for until Established.
fn load_crds(paths: &Paths) -> Result<(), String> {
    let dir = paths.root.join("../shared/crds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| {
            format!(
                "{}: {e} (the real CRDs of Istio, Argo CD and Flux)",
                dir.display()
            )
        })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut args = vec!["apply", "--server-side", "--field-manager=meshvm-harness"];
    for file in &files {
        args.extend(["-f", file.to_str().ok_or("a CRD path is not UTF-8")?]);
    }
    kubectl(paths, &args)?;
    wait_crds_established(paths)
}

/// Waits until every CRD is Established. `kubectl wait` fails at once instead of waiting on a
/// CRD the API server has not given any condition yet ("accessor error: <nil>"), a race of a
/// fresh apply: such a failure is retried until the deadline.
pub(super) fn wait_crds_established(paths: &Paths) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let waited = kubectl(
            paths,
            &[
                "wait",
                "--for=condition=Established",
                "crd",
                "--all",
                "--timeout=60s",
            ],
        );
        match waited {
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(500)),
            done => return done,
        }
    }
}
