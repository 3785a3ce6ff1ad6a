//! A VM for user-data tests, without a hypervisor: a Debian root built once with mmdebstrap
//! (cached under target/, keyed by what goes into it), booted with real systemd and real
//! cloud-init in `systemd-nspawn`, seeded as NoCloud. Also a stand-in `istio-sidecar` .deb and
//! a small HTTP server on 127.0.0.1 to download it from (the container shares the host's
//! network). Also compiled into the `mesh` test binary (the real join in tests/mesh/join.rs:
//! a VM in the harness's network namespace), which uses other parts of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::support::{checked, require_tool};

const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";
/// What the VM image holds: cloud-init and systemd, and what a cloud image has for the
/// join step (curl, iproute2). Not iptables: a test installs it as a dependency of the package.
const PACKAGES: &[&str] = &["cloud-init", "systemd-sysv", "curl", "iproute2"];

/// The image's own cloud-init settings: NoCloud only, no network configuration (the container
/// shares the host's), and no modules that fail for lack of locales or ssh.
const CLOUD_CFG: &str = "\
datasource_list: [NoCloud, None]
network: {config: disabled}
locale: C.UTF-8
ssh_genkeytypes: []
";

/// Runs after cloud-init's final stage: writes what the test checks to /meshvm-out, a
/// directory of the host (the root may be a volatile overlay, and /run is a tmpfs), then powers
/// off.
const REPORT_SCRIPT: &str = r#"#!/bin/sh
# meshvm e2e test: report what cloud-init did, then power off.
sleep 3
out=/meshvm-out
for f in /etc/hosts /etc/cloud/templates/hosts.debian.tmpl /var/log/cloud-init-output.log; do
  if [ -e "$f" ]; then cp "$f" "$out/$(basename "$f")"; fi
done
{
  echo "cloud-init $(cloud-init status 2>/dev/null | sed -n 's/^status: //p')"
  echo "istio $(systemctl show -p ActiveState --value istio) $(systemctl is-enabled istio 2>/dev/null || echo absent)"
  echo "package $(dpkg-query -W -f='${Status}' istio-sidecar 2>/dev/null || echo absent)"
  echo "user $(getent passwd istio-proxy >/dev/null && echo istio-proxy || echo absent)"
  echo "sourced $(cat /run/istio-sourced 2>/dev/null)"
  echo "pwned $(find / -xdev -name 'pwned-*' 2>/dev/null | wc -l)"
  for f in /etc/certs/root-cert.pem /var/run/secrets/tokens/istio-token \
           /var/lib/istio/envoy/cluster.env /etc/istio/config/mesh; do
    if [ -e "$f" ]; then
      echo "file $f $(stat -L -c '%U %a' "$f") $(sha256sum < "$f" | cut -c1-64)"
    else
      echo "file $f missing"
    fi
  done
  if [ -L /etc/istio ]; then echo "etc-istio symlink $(readlink /etc/istio)"
  elif [ -e /etc/istio ]; then echo "etc-istio directory"
  else echo "etc-istio missing"; fi
} > "$out/report.new" 2>&1
mv "$out/report.new" "$out/report"
systemctl poweroff
"#;

const REPORT_UNIT: &str = "\
[Unit]
Description=meshvm e2e test report
After=cloud-final.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/meshvm-test-report

[Install]
WantedBy=cloud-init.target
";

fn require_tools() {
    require_tool(
        "mmdebstrap",
        "apt-get install mmdebstrap (builds the Debian root the VM tests boot)",
    );
    require_tool(
        "systemd-nspawn",
        "apt-get install systemd-container (boots the VM root)",
    );
    require_tool(
        "dpkg-deb",
        "apt-get install dpkg-dev (builds the stand-in istio-sidecar package)",
    );
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-cache")
}

/// The cached Debian root, built on first use (a minute or two; then reused across runs).
pub fn debian_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        require_tools();
        let key = sha256_hex(
            format!("{SUITE}\n{MIRROR}\n{PACKAGES:?}\n{CLOUD_CFG}\n{REPORT_SCRIPT}\n{REPORT_UNIT}")
                .as_bytes(),
        );
        let root = cache_dir().join(format!("debian-{SUITE}-{}", &key[..16]));
        if root.join("etc/meshvm-test-image").exists() {
            return root;
        }
        std::fs::create_dir_all(cache_dir()).unwrap();
        // Built beside its final place and renamed, so an interrupted build is never used.
        let partial = cache_dir().join(format!(".partial-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&partial);
        eprintln!("e2e: building the Debian root {} (once)", root.display());
        checked(
            Command::new("mmdebstrap")
                .args(["--variant=minbase", "--quiet"])
                .arg(format!("--include={}", PACKAGES.join(",")))
                .args([SUITE])
                .arg(&partial)
                .arg(MIRROR)
                .stdin(Stdio::null()),
        );
        let write = |rel: &str, text: &str, mode: u32| {
            use std::os::unix::fs::PermissionsExt;
            let path = partial.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write("etc/cloud/cloud.cfg.d/90-meshvm-test.cfg", CLOUD_CFG, 0o644);
        write("usr/local/sbin/meshvm-test-report", REPORT_SCRIPT, 0o755);
        write(
            "etc/systemd/system/meshvm-test-report.service",
            REPORT_UNIT,
            0o644,
        );
        let wants = partial.join("etc/systemd/system/cloud-init.target.wants");
        std::fs::create_dir_all(&wants).unwrap();
        std::os::unix::fs::symlink(
            "/etc/systemd/system/meshvm-test-report.service",
            wants.join("meshvm-test-report.service"),
        )
        .unwrap();
        write("etc/meshvm-test-image", &key, 0o644);
        if std::fs::rename(&partial, &root).is_err() {
            // Another test process finished first.
            let _ = std::fs::remove_dir_all(&partial);
            assert!(root.join("etc/meshvm-test-image").exists());
        }
        // Roots of earlier image definitions are not used again.
        for entry in std::fs::read_dir(cache_dir()).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("debian-") && entry.path() != root {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        root
    })
}

/// A VM booted from the cached root: ephemeral (a volatile overlay over the shared root, for
/// one boot) or persistent (a private copy, for several boots). Removed when dropped.
pub struct Vm {
    dir: tempfile::TempDir,
    /// The private copy of a persistent VM.
    copy: Option<PathBuf>,
    name: String,
}

impl Vm {
    fn with_copy(persistent: bool) -> Vm {
        Vm::of_image(debian_root(), persistent)
    }

    fn of_image(image: &Path, persistent: bool) -> Vm {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = tempfile::Builder::new()
            .prefix("meshvm-vm-")
            .tempdir_in(Path::new(env!("CARGO_TARGET_TMPDIR")))
            .unwrap();
        let copy = persistent.then(|| {
            let root = dir.path().join("root");
            checked(
                Command::new("cp")
                    .args(["-a", "--reflink=auto"])
                    .arg(image)
                    .arg(&root),
            );
            root
        });
        let name = format!(
            "meshvm-e2e-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        Vm { dir, copy, name }
    }

    /// A VM for one boot: its writes go to a tmpfs overlay, the cached root stays untouched.
    pub fn ephemeral() -> Vm {
        Vm::with_copy(false)
    }

    /// A VM that keeps its disk across boots.
    pub fn persistent() -> Vm {
        Vm::with_copy(true)
    }

    /// A persistent VM of another image, such as one of [`debian_root_with`].
    pub fn persistent_of(image: &Path) -> Vm {
        Vm::of_image(image, true)
    }

    /// The persistent VM's disk, as the host sees it.
    pub fn disk(&self) -> &Path {
        self.copy.as_deref().expect("a persistent VM")
    }

    /// Boots the VM in the background with more `systemd-nspawn` arguments (a network
    /// namespace, …); it runs until [`Running::stop`] or its report unit powers it off.
    pub fn start(&self, extra: &[String]) -> Running {
        let (mut cmd, console, _) = self.command();
        cmd.args(extra);
        let child = cmd.spawn().expect("systemd-nspawn starts");
        Running { child, console }
    }

    /// Seeds the NoCloud datasource: user-data and an instance-id.
    pub fn seed(&self, user_data: &[u8], instance_id: &str) {
        let seed = self.dir.path().join("seed");
        std::fs::create_dir_all(&seed).unwrap();
        std::fs::write(seed.join("user-data"), user_data).unwrap();
        std::fs::write(
            seed.join("meta-data"),
            format!("instance-id: {instance_id}\nlocal-hostname: vm\n"),
        )
        .unwrap();
    }

    /// Adds a file to the image's own cloud-init configuration (persistent VMs).
    pub fn configure(&self, name: &str, text: &str) {
        let root = self.copy.as_ref().expect("a persistent VM");
        std::fs::write(root.join("etc/cloud/cloud.cfg.d").join(name), text).unwrap();
    }

    /// The `systemd-nspawn` command that boots the VM, its console going to `console.log`, and
    /// the host directory the VM sees as /meshvm-out.
    fn command(&self) -> (Command, PathBuf, PathBuf) {
        let out = self.dir.path().join("out");
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap();
        let log_path = self.dir.path().join("console.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = Command::new("systemd-nspawn");
        cmd.args(["--register=no", "--keep-unit", "-b", "-M", &self.name])
            .arg(format!(
                "--bind-ro={}:/var/lib/cloud/seed/nocloud",
                self.dir.path().join("seed").display()
            ))
            .arg(format!("--bind={}:/meshvm-out", out.display()));
        match &self.copy {
            Some(root) => cmd.arg("-D").arg(root),
            None => cmd.args(["--volatile=overlay", "-D"]).arg(debian_root()),
        };
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        (cmd, log_path, out)
    }

    /// Boots the VM until the report unit powers it off, and returns the report.
    pub fn boot(&self) -> Report {
        let (mut cmd, log_path, out) = self.command();
        let started = Instant::now();
        let mut child = cmd.spawn().expect("systemd-nspawn starts");
        let limit = Duration::from_secs(300);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the VM did not power off within {limit:?}\n{}",
                    diagnostics(&log_path, &out)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        eprintln!(
            "e2e: {} booted and powered off in {:.1?}",
            self.name,
            started.elapsed()
        );
        let text = std::fs::read_to_string(out.join("report")).unwrap_or_else(|_| {
            panic!(
                "no report from the VM (nspawn: {status})\n{}",
                diagnostics(&log_path, &out)
            )
        });
        Report::parse(&text, out.clone(), diagnostics(&log_path, &out))
    }
}

/// A VM booted by [`Vm::start`]; powered off when dropped.
pub struct Running {
    child: std::process::Child,
    console: PathBuf,
}

impl Running {
    /// The end of the VM's console.
    pub fn console(&self) -> String {
        let text = std::fs::read_to_string(&self.console).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Powers the VM off as a host shutdown would (SIGTERM to systemd-nspawn), killing it
    /// after a minute; whether it powered off in time.
    pub fn stop(&mut self) -> bool {
        if self.child.try_wait().unwrap().is_none() {
            // Our own child, not reaped yet: its PID is still its own.
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Running {
    /// The VM's init (its PID 1) as the host sees it: the process systemd-nspawn forked.
    pub fn leader(&self) -> Option<u32> {
        let pid = self.child.id();
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        tasks.flatten().find_map(|task| {
            let children = std::fs::read_to_string(task.path().join("children")).ok()?;
            children.split_whitespace().next()?.parse().ok()
        })
    }

    /// Runs `script` with `sh -c` inside the running VM, `input` on its stdin, and returns its
    /// output. nsenter into the VM's namespaces (mount, PID, network, UTS, IPC): the VM is not
    /// registered with machined (`--register=no`), so no `systemd-run -M` or `machinectl`.
    pub fn sh(&self, script: &str, input: &[u8]) -> std::process::Output {
        let leader = self.leader().expect("the VM is running").to_string();
        let mut child = Command::new("nsenter")
            .args([
                "-t", &leader, "-m", "-p", "-n", "-u", "-i", "--", "sh", "-c", script,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nsenter starts");
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The cached Debian root with more packages installed (apt in the root, once; then reused).
pub fn debian_root_with(packages: &[&str]) -> PathBuf {
    let base = debian_root();
    let key = sha256_hex(format!("{}\n{packages:?}", base.display()).as_bytes());
    let root = cache_dir().join(format!("with-{}", &key[..16]));
    if root.join("etc/meshvm-test-image-with").exists() {
        return root;
    }
    let partial = cache_dir().join(format!(".partial-with-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    checked(
        Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(base)
            .arg(&partial),
    );
    checked(
        Command::new("systemd-nspawn")
            .args(["--quiet", "--register=no", "--keep-unit", "--pipe", "-D"])
            .arg(&partial)
            .args(["sh", "-c"])
            .arg(format!(
                "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
                 --no-install-recommends {}",
                packages.join(" ")
            ))
            .stdin(Stdio::null()),
    );
    std::fs::write(partial.join("etc/meshvm-test-image-with"), &key).unwrap();
    if std::fs::rename(&partial, &root).is_err() {
        let _ = std::fs::remove_dir_all(&partial);
        assert!(root.join("etc/meshvm-test-image-with").exists());
    }
    root
}

fn diagnostics(console: &Path, out: &Path) -> String {
    let tail = |path: &Path, n: usize| {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    };
    format!(
        "--- console ---\n{}\n--- /var/log/cloud-init-output.log ---\n{}",
        tail(console, 40),
        tail(&out.join("cloud-init-output.log"), 60)
    )
}

/// What the VM reported: one value per key (`cloud-init`, `istio`, `package`, `user`,
/// `etc-istio`, `file <path>`), the files it copied out (`hosts`, `hosts.debian.tmpl`,
/// `cloud-init-output.log`), and the logs for failure messages.
pub struct Report {
    pub values: BTreeMap<String, String>,
    out: PathBuf,
    pub logs: String,
}

impl Report {
    fn parse(text: &str, out: PathBuf, logs: String) -> Report {
        let mut values = BTreeMap::new();
        for line in text.lines() {
            let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
            let (key, rest) = if key == "file" {
                let (path, rest) = rest.split_once(' ').unwrap_or((rest, ""));
                (format!("file {path}"), rest)
            } else {
                (key.to_owned(), rest)
            };
            values.insert(key, rest.to_owned());
        }
        Report { values, out, logs }
    }

    pub fn get(&self, key: &str) -> &str {
        self.values.get(key).map(String::as_str).unwrap_or("")
    }

    /// A file the VM copied out; empty when it had none.
    pub fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.out.join(name)).unwrap_or_default()
    }

    /// Fails with the VM's logs unless `key` reads `expected`.
    pub fn expect(&self, key: &str, expected: &str) {
        assert_eq!(
            self.get(key),
            expected,
            "VM report `{key}`\nreport: {:#?}\n{}",
            self.values,
            self.logs
        );
    }
}

/// The architecture name Debian uses on this machine (the stand-in package's).
pub fn host_arch() -> String {
    let out = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A stand-in for Istio's `istio-sidecar` .deb: the real package's dependencies (`depends`;
/// the real one has `iproute2, iptables`), its postinst's behaviour (istio-proxy user,
/// `/etc/istio → /var/lib/istio` only when /etc/istio does not exist, the directories,
/// `touch /var/lib/istio/config/mesh`), an `istio` unit, and an `istio-start.sh` that, as
/// istio-proxy, checks what the real agent reads and then waits.
pub fn stand_in_sidecar_deb(version: &str, depends: &str) -> Vec<u8> {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("pkg");
    let write = |rel: &str, text: &str, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        let path = pkg.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    write(
        "DEBIAN/control",
        &format!(
            "Package: istio-sidecar\nVersion: {version}\nArchitecture: {}\nDepends: {depends}\nMaintainer: meshvm tests <tests@meshvm.invalid>\nDescription: stand-in for Istio's istio-sidecar package (meshvm tests)\n",
            host_arch()
        ),
        0o644,
    );
    write(
        "DEBIAN/postinst",
        r#"#!/bin/sh
set -e
umask 022
if ! getent passwd istio-proxy >/dev/null; then
    if command -v useradd >/dev/null; then
        groupadd --system istio-proxy
        useradd --system --gid istio-proxy --home-dir /var/lib/istio istio-proxy
    else
        addgroup --system istio-proxy
        adduser --system --group --home /var/lib/istio istio-proxy
    fi
fi
if [ ! -e /etc/istio ]; then
   ln -s /var/lib/istio /etc/istio
fi
mkdir -p /var/lib/istio/envoy /var/lib/istio/proxy /var/lib/istio/config /var/log/istio
touch /var/lib/istio/config/mesh
mkdir -p /etc/certs
chown istio-proxy:istio-proxy /etc/certs
chown istio-proxy:istio-proxy /var/lib/istio/envoy /var/lib/istio/config /var/log/istio /var/lib/istio/config/mesh /var/lib/istio/proxy
"#,
        0o755,
    );
    write(
        "lib/systemd/system/istio.service",
        "[Unit]\nDescription=istio-sidecar: The Istio sidecar (meshvm test stand-in)\n\n[Service]\nExecStart=/usr/local/bin/istio-start.sh\nRestart=always\nRestartSec=10\n\n[Install]\nWantedBy=multi-user.target\n",
        0o644,
    );
    write(
        "usr/local/bin/istio-start.sh",
        r#"#!/bin/sh
# Stand-in for istio-start.sh: source cluster.env as root (as the real one does), then as
# istio-proxy check what pilot-agent reads: the token only until the first certificate.
set -eu
. /var/lib/istio/envoy/cluster.env
printf '%s\n' "$ISTIO_SERVICE" > /run/istio-sourced
exec setpriv --reuid=istio-proxy --regid=istio-proxy --init-groups sh -eu -c '
for f in /etc/certs/root-cert.pem /var/lib/istio/envoy/cluster.env /etc/istio/config/mesh; do
  test -r "$f" || { echo "istio stand-in: cannot read $f" >&2; exit 1; }
done
if [ ! -e /etc/istio/proxy/joined ]; then
  test -r /var/run/secrets/tokens/istio-token || { echo "istio stand-in: cannot read the token" >&2; exit 1; }
  touch /etc/istio/proxy/joined
fi
exec sleep infinity'
"#,
        0o755,
    );
    write("var/lib/istio/envoy/sidecar.env", "# stand-in\n", 0o644);
    let deb = dir.path().join("istio-sidecar.deb");
    checked(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(&pkg)
            .arg(&deb)
            .stdout(Stdio::null()),
    );
    std::fs::read(deb).unwrap()
}

/// Serves `files` (name → body) at `http://127.0.0.1:<port>/<name>` for the rest of the
/// test process, and returns that base address; anything else is a 404.
pub fn serve(files: Vec<(&str, Vec<u8>)>) -> String {
    serve_on("127.0.0.1", files)
}

/// [`serve`] on another address of the host (one a VM in its own network namespace reaches).
pub fn serve_on(address: &str, files: Vec<(&str, Vec<u8>)>) -> String {
    let listener = TcpListener::bind((address, 0)).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let files: BTreeMap<String, Vec<u8>> = files
        .into_iter()
        .map(|(name, body)| (format!("/{name}"), body))
        .collect();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            loop {
                let mut header = String::new();
                match reader.read_line(&mut header) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if header == "\r\n" || header == "\n" => break,
                    Ok(_) => {}
                }
            }
            let wanted = request.split_whitespace().nth(1).and_then(|p| files.get(p));
            let (status, body): (&str, &[u8]) = match wanted {
                Some(body) => ("200 OK", body),
                None => ("404 Not Found", b"not found\n"),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(body);
        }
    });
    base
}
