//! A VM really joins the mesh: the harness's istiod (pilot-discovery, out of cluster, the
//! harness's root plugged in as its CA) signs a workload certificate for a real pilot-agent
//! that presents a real TokenRequest token, and sees its proxy connected.
//!
//! The agent runs as Istio's package runs it: Istio's own `istio-start.sh` (read from the
//! istio module in the Go module cache, never copied here) with meshvm's VM files in place
//! (cluster.env, mesh, root-cert.pem, the token, the hosts line), in the harness's VM network
//! namespace, so it reaches istiod only through the east-west address meshvm's hosts line
//! names. Envoy is the stand-in of tests/upstream/envoystandin (Envoy cannot be built here).
//!
//! Two tests boot a real VM (a Debian root in systemd-nspawn, in that namespace) from
//! `meshvm cloud-init`'s user-data with Istio's own package: the join, and the refusals (one
//! boot, the cases one after another in the running VM); the others run the agent directly
//! in the namespace, seconds each instead of a boot: probe health, the rejoin that fails
//! today, a multi-network and a revisioned mesh (the harness's istiod-1-28).

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::apply::apply_tree;
use crate::cluster::{checked, harness_var, kubectl, meshvm, output};

/// The trust domain and cluster the harness's istiod runs with (xtask/src/mesh/istiod.rs).
pub(crate) const TRUST_DOMAIN: &str = "cluster.local";

pub(crate) fn var(name: &str) -> String {
    harness_var(name).to_string_lossy().into_owned()
}

/// The harness has one VM network namespace: one agent at a time.
pub(crate) fn vm_slot() -> MutexGuard<'static, ()> {
    static SLOT: Mutex<()> = Mutex::new(());
    SLOT.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Polls `f` until it returns `Some`, for at most `limit`; `None` when time ran out.
pub(crate) fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = f() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn curl(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-fsS", "--max-time", "5", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn configmap_root(namespace: &str) -> Option<String> {
    let out = output(kubectl().args([
        "get",
        "configmap",
        "-n",
        namespace,
        "istio-ca-root-cert",
        "-o",
        "jsonpath={.data.root-cert\\.pem}",
    ]));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn istiod_is_ready_and_publishes_the_harness_root() {
    let ready = curl(&format!("{}/ready", var("MESH_ISTIOD_DEBUG")));
    assert!(ready.is_some(), "istiod /ready does not answer 200");
    let root = std::fs::read_to_string(var("MESH_ROOT_CERT")).unwrap();
    assert!(root.contains("BEGIN CERTIFICATE"), "{root}");
    assert_eq!(
        configmap_root("istio-system").as_deref(),
        Some(root.as_str())
    );
    // A namespace made now receives it too: istiod's namespace controller runs.
    let namespace = format!("join-root-{}", std::process::id());
    checked(kubectl().args(["create", "namespace", &namespace]));
    let published = poll(Duration::from_secs(30), || configmap_root(&namespace));
    assert_eq!(published.as_deref(), Some(root.as_str()), "{namespace}");
}

/// The agent's root directory, laid out as Istio's package and meshvm's user-data leave a VM.
struct VmRoot {
    dir: tempfile::TempDir,
}

impl VmRoot {
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, bytes: &[u8]) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

/// One VM's files as meshvm writes them, with `token` as its istio-token.
fn vm_files(fleet: &Path, vm: &str, token: &str) -> meshvm::FileTree {
    let source = meshvm::spec::load_fleet(fleet).unwrap();
    let mut files = meshvm::vmfiles::vm_files(&source.fleet, vm).unwrap();
    meshvm::vmfiles::insert_token(&mut files, token.as_bytes()).unwrap();
    files
}

impl VmRoot {
    /// A VM root with Istio's packaging files and meshvm's VM `files` where the package and the
    /// user-data put them; meshvm's hosts line goes where `ip netns exec` finds the VM
    /// network namespace's /etc/hosts.
    fn of(files: &meshvm::FileTree, istio: &Path) -> VmRoot {
        let get = |name: &str| files.get(name).unwrap().bytes.clone();
        let root = VmRoot {
            dir: tempfile::tempdir().unwrap(),
        };
        let packaging = istio.join("tools/packaging/common");
        root.write(
            "var/lib/istio/envoy/sidecar.env",
            &std::fs::read(packaging.join("sidecar.env")).unwrap(),
        );
        root.write(
            "var/lib/istio/envoy/envoy_bootstrap_tmpl.json",
            &std::fs::read(packaging.join("envoy_bootstrap.json")).unwrap(),
        );
        root.write("var/lib/istio/envoy/cluster.env", &get("cluster.env"));
        root.write("etc/istio/config/mesh", &get("mesh.yaml"));
        root.write("etc/certs/root-cert.pem", &get("root-cert.pem"));
        if files.contains("istio-token") {
            root.write("var/run/secrets/tokens/istio-token", &get("istio-token"));
        }
        let hosts = format!(
            "127.0.0.1 localhost\n{}",
            String::from_utf8(get("hosts")).unwrap()
        );
        let etc_hosts = PathBuf::from("/etc/netns")
            .join(var("MESH_VM_NETNS"))
            .join("hosts");
        std::fs::write(&etc_hosts, &hosts).unwrap();
        root
    }

    /// The workload certificate the agent wrote (OUTPUT_CERTS=./etc/certs), once it has one.
    fn cert_chain(&self) -> Option<String> {
        std::fs::read_to_string(self.path("etc/certs/cert-chain.pem"))
            .ok()
            .filter(|t| t.contains("END CERTIFICATE"))
    }
}

/// The istio module's directory in the Go module cache (the version tests/upstream pins).
pub(crate) fn istio_module() -> PathBuf {
    let out = checked(
        Command::new("go")
            .args(["list", "-m", "-f", "{{.Dir}}", "istio.io/istio"])
            .current_dir(testkit::workspace().join("tests/upstream"))
            .env("GOFLAGS", "-mod=readonly")
            .env("GOTOOLCHAIN", "local"),
    );
    let dir = PathBuf::from(out.trim());
    assert!(
        dir.join("tools/packaging/common/istio-start.sh").exists(),
        "{}: no tools/packaging (run `cargo xtask mesh build`)",
        dir.display()
    );
    dir
}

/// Renders `fleet` into `dir` and applies the tree to the harness.
pub(crate) fn apply_fleet(fleet: &Path, dir: &Path) {
    apply_tree(&render_fleet(fleet, dir), dir);
}

/// A fleet of one auto-registered group in its own namespace, whose VM is the harness's
/// network namespace, with the harness's root and east-west address.
pub(crate) fn join_fleet(dir: &Path, namespace: &str) -> PathBuf {
    let text = std::fs::read_to_string(testkit::fixture("fleets/autoregister/meshvm.yaml"))
        .unwrap()
        .replace("namespace: jobs", &format!("namespace: {namespace}"))
        .replace(
            "address: 203.0.113.10",
            &format!("address: {}", var("MESH_EASTWEST_ADDRESS")),
        )
        .replace(
            "address: 10.3.0.7",
            &format!("address: {}", var("MESH_VM_ADDRESS")),
        )
        .replace(
            "  dnsCapture: false\n",
            "  dnsCapture: false\n  rootCert: root-cert.pem\n",
        );
    assert!(text.contains("rootCert: root-cert.pem"), "{text}");
    std::fs::copy(var("MESH_ROOT_CERT"), dir.join("root-cert.pem")).unwrap();
    let fleet = dir.join("meshvm.yaml");
    std::fs::write(&fleet, text).unwrap();
    fleet
}

/// A real TokenRequest token (audience istio-ca) for `namespace/sa`.
fn token(namespace: &str, sa: &str) -> String {
    checked(kubectl().args([
        "create",
        "token",
        sa,
        "-n",
        namespace,
        "--audience",
        "istio-ca",
        "--duration",
        "1h",
    ]))
    .trim()
    .to_owned()
}

/// pilot-agent, started by Istio's istio-start.sh in the VM network namespace, its process
/// group stopped when dropped.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    /// The agent on a VM root made of meshvm's VM `files`.
    fn start_with(files: &meshvm::FileTree) -> (VmRoot, Agent) {
        let istio = istio_module();
        let root = VmRoot::of(files, &istio);
        let agent = Agent::start(&root, &istio);
        (root, agent)
    }

    fn start(root: &VmRoot, istio: &Path) -> Agent {
        Agent::start_env(root, istio, &[])
    }

    /// [`Agent::start`] with more environment (what sidecar.env could set, such as
    /// `SECRET_TTL`).
    fn start_env(root: &VmRoot, istio: &Path, env: &[(&str, &str)]) -> Agent {
        let bin = root.path("usr/local/bin");
        std::fs::create_dir_all(&bin).unwrap();
        let agent = bin.join("pilot-agent");
        if !agent.exists() {
            std::os::unix::fs::symlink(harness_var("MESH_PILOT_AGENT"), agent).unwrap();
        }
        // Each run's log on its own (a restarted VM's agent starts a new one).
        let log = root.path("agent.log");
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &var("MESH_VM_NETNS"), "bash"])
            .arg(istio.join("tools/packaging/common/istio-start.sh"))
            .current_dir(root.dir.path())
            .env("ISTIO_BIN_BASE", &bin)
            // As root, without sudo (the package's unit runs it as root, then sudo -u
            // istio-proxy; the VM test covers that).
            .env("USER", "root")
            .env("EXEC_USER", "root")
            .env("ISTIO_CUSTOM_IP_TABLES", "true")
            .env("CLOUD_PLATFORM", "none")
            .env(
                "PROXY_CONFIG",
                format!("binaryPath: {}\n", var("MESH_ENVOY_STANDIN")),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .process_group(0);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        Agent { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) {
        let pgid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some()
                && !Path::new(&format!("/proc/{pgid}")).exists()
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn openssl(args: &[&str]) -> (bool, String) {
    let out = output(Command::new("openssl").args(args));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The WorkloadEntries of `namespace`.
fn workload_entries(namespace: &str) -> Vec<Value> {
    let out = checked(kubectl().args(["get", "workloadentries", "-n", namespace, "-o", "json"]));
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"].as_array().cloned().unwrap_or_default()
}

/// The proxies istiod reports connected (`/debug/adsz`: id, labels, metadata).
pub(crate) fn connected_proxies() -> Vec<Value> {
    connected_proxies_of("MESH_ISTIOD_DEBUG")
}

/// The proxies the istiod whose debug address is in `debug_var` reports connected.
fn connected_proxies_of(debug_var: &str) -> Vec<Value> {
    let Some(text) = curl(&format!("{}/debug/adsz", var(debug_var))) else {
        return Vec::new();
    };
    let adsz: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    adsz["clients"].as_array().cloned().unwrap_or_default()
}

/// Tests 1–3 of the join with the real agent in the VM network namespace: the certificate it
/// gets (SPIFFE URI of the group's ServiceAccount, chaining to the fleet's root), the proxy
/// istiod reports connected with the fleet's cluster ID, network and labels, and the
/// WorkloadEntry istiod registers, then removes after its grace period once the agent stops.
#[test]
fn a_real_agent_with_a_real_token_joins_through_the_east_west_address() {
    let _slot = vm_slot();
    let scratch = tempfile::tempdir().unwrap();
    let namespace = format!("join-{}", std::process::id());
    let fleet = join_fleet(scratch.path(), &namespace);
    apply_fleet(&fleet, scratch.path());
    let sa = "batch";
    let token = token(&namespace, sa);

    let files = vm_files(&fleet, "batch-1", &token);
    let hosts = String::from_utf8(files.get("hosts").unwrap().bytes.clone()).unwrap();
    assert_eq!(
        hosts,
        format!("{} istiod.istio-system.svc\n", var("MESH_EASTWEST_ADDRESS"))
    );
    let (root, mut agent) = Agent::start_with(&files);
    let got = poll(Duration::from_secs(60), || root.cert_chain());
    assert!(got.is_some(), "no workload certificate:\n{}", agent.log());
    let chain = root.path("etc/certs/cert-chain.pem");

    // 1. The certificate: the group's SPIFFE identity, chaining to the fleet's root.
    let chain = chain.to_str().unwrap();
    let (_, text) = openssl(&["x509", "-in", chain, "-noout", "-ext", "subjectAltName"]);
    let spiffe = format!("URI:spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{sa}");
    assert!(text.contains(&spiffe), "{text}\n{}", agent.log());
    let fleet_root = scratch.path().join("root-cert.pem");
    let (ok, text) = openssl(&["verify", "-CAfile", fleet_root.to_str().unwrap(), chain]);
    assert!(ok, "{text}");
    // The stand-in got the same identity over the agent's SDS socket.
    let sds = poll(Duration::from_secs(30), || {
        let log = agent.log();
        log.contains(&format!(
            "SDS secret default: URI SANs [spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{sa}]"
        ))
        .then_some(())
    });
    assert!(sds.is_some(), "{}", agent.log());

    // 2. istiod reports the proxy connected, with the fleet's cluster ID, network and labels.
    let vm_ip = var("MESH_VM_ADDRESS");
    let proxy = poll(Duration::from_secs(60), || {
        connected_proxies()
            .into_iter()
            .find(|c| c["metadata"]["NAMESPACE"] == namespace.as_str())
    });
    let proxy =
        proxy.unwrap_or_else(|| panic!("istiod reports no proxy of {namespace}:\n{}", agent.log()));
    let metadata = &proxy["metadata"];
    assert_eq!(
        metadata["CLUSTER_ID"],
        var("MESH_CLUSTER_ID").as_str(),
        "{proxy:#}"
    );
    // The fleet names no network.
    assert_eq!(metadata["NETWORK"].as_str().unwrap_or(""), "", "{proxy:#}");
    assert_eq!(metadata["LABELS"]["app"], "batch", "{proxy:#}");
    assert_eq!(metadata["SERVICE_ACCOUNT"], sa, "{proxy:#}");
    assert_eq!(metadata["INSTANCE_IPS"], vm_ip.as_str(), "{proxy:#}");

    // 3. The auto-registered WorkloadEntry, with the group's labels.
    let entry_name = format!("batch-{vm_ip}");
    let entry = poll(Duration::from_secs(30), || {
        workload_entries(&namespace)
            .into_iter()
            .find(|e| e["metadata"]["name"] == entry_name.as_str())
    });
    let entry = entry.unwrap_or_else(|| panic!("no WorkloadEntry {entry_name}:\n{}", agent.log()));
    assert_eq!(entry["spec"]["address"], vm_ip.as_str(), "{entry:#}");
    assert_eq!(entry["spec"]["labels"]["app"], "batch", "{entry:#}");
    assert_eq!(entry["spec"]["serviceAccount"], sa, "{entry:#}");

    // ... removed after the grace period once the proxy is gone.
    agent.stop();
    let gone = poll(Duration::from_secs(60), || {
        workload_entries(&namespace)
            .iter()
            .all(|e| e["metadata"]["name"] != entry_name.as_str())
            .then_some(())
    });
    assert!(gone.is_some(), "{entry_name} outlived the grace period");
}

pub(crate) fn render_fleet(fleet: &Path, dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    checked(
        meshvm()
            .arg("render")
            .arg("-f")
            .arg(fleet)
            .arg("-o")
            .arg(&tree),
    );
    tree
}

/// Istio's `istio-sidecar.deb` as its packaging builds it (tools/packaging/packaging.mk):
/// pilot-agent and `envoy` (here the stand-in) in /usr/local/bin with istio-start.sh, the
/// `istio` unit, sidecar.env and the bootstrap template, Istio's postinst.sh, and the
/// dependencies it names; every packaging file read from the istio module, none copied here.
pub(crate) fn sidecar_deb(istio: &Path, version: &str) -> Vec<u8> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("pkg");
    let put = |rel: &str, from: &Path, mode: u32| {
        let path = pkg.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::copy(from, &path).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let packaging = istio.join("tools/packaging");
    put(
        "usr/local/bin/pilot-agent",
        &harness_var("MESH_PILOT_AGENT"),
        0o755,
    );
    put(
        "usr/local/bin/envoy",
        &harness_var("MESH_ENVOY_STANDIN"),
        0o755,
    );
    put(
        "usr/local/bin/istio-start.sh",
        &packaging.join("common/istio-start.sh"),
        0o755,
    );
    put(
        "lib/systemd/system/istio.service",
        &packaging.join("common/istio.service"),
        0o644,
    );
    put(
        "var/lib/istio/envoy/sidecar.env",
        &packaging.join("common/sidecar.env"),
        0o644,
    );
    put(
        "var/lib/istio/envoy/envoy_bootstrap_tmpl.json",
        &packaging.join("common/envoy_bootstrap.json"),
        0o644,
    );
    put("DEBIAN/postinst", &packaging.join("postinst.sh"), 0o755);
    std::fs::write(
        pkg.join("DEBIAN/conffiles"),
        "/var/lib/istio/envoy/envoy_bootstrap_tmpl.json\n/var/lib/istio/envoy/sidecar.env\n",
    )
    .unwrap();
    std::fs::write(
        pkg.join("DEBIAN/control"),
        format!(
            "Package: istio-sidecar\nVersion: {version}\nArchitecture: {}\n\
             Depends: iproute2, iptables, sudo, hostname\nMaintainer: istio@istio.io\n\
             Description: Istio Sidecar (pilot-agent; Envoy is meshvm's test stand-in)\n",
            crate::nspawn::host_arch()
        ),
    )
    .unwrap();
    let deb = dir.path().join("istio-sidecar.deb");
    checked(
        Command::new("dpkg-deb")
            // Uncompressed, as Istio's FAST_VM_BUILDS: it only crosses a veth.
            .args(["--root-owner-group", "-Znone", "--build"])
            .arg(&pkg)
            .arg(&deb),
    );
    std::fs::read(deb).unwrap()
}

/// The join fleet with its sidecar package served from `url`.
pub(crate) fn with_package(fleet: &Path, url: &str, sha256: &str) {
    let text = std::fs::read_to_string(fleet).unwrap();
    let sidecar = "sidecar:\n  version: 1.28.0\n";
    assert!(text.contains(sidecar), "{text}");
    let text = text.replace(
        sidecar,
        &format!(
            "{sidecar}  arch: {}\n  sha256: \"{sha256}\"\n  url: {url}\n",
            crate::nspawn::host_arch()
        ),
    );
    std::fs::write(fleet, text).unwrap();
}

/// The VM itself: a Debian root booted by systemd-nspawn in the harness's VM network namespace
/// from the user-data `meshvm cloud-init` writes (a real token), which installs Istio's
/// package and starts the `istio` unit: the VM gets its certificate (test 1), istiod reports
/// its proxy (test 2), registers its WorkloadEntry and removes it after the grace period once
/// the VM is powered off (test 3).
#[test]
fn a_debian_vm_booted_from_meshvm_user_data_joins_the_mesh() {
    let _slot = vm_slot();
    let scratch = tempfile::tempdir().unwrap();
    let namespace = format!("join-vm-{}", std::process::id());
    let fleet = join_fleet(scratch.path(), &namespace);
    serve_package(&fleet);
    apply_fleet(&fleet, scratch.path());
    let sa = "batch";
    let (vm, mut running) = boot_join_vm(&fleet, scratch.path(), &token(&namespace, sa));
    let disk = vm.disk().to_path_buf();
    let logs = |running: &crate::nspawn::Running| vm_logs(&disk, running);

    // 1. The certificate pilot-agent wrote on the VM (OUTPUT_CERTS=/etc/certs).
    let chain = disk.join("etc/certs/cert-chain.pem");
    let got = poll(Duration::from_secs(240), || {
        std::fs::read_to_string(&chain)
            .ok()
            .filter(|t| t.contains("END CERTIFICATE"))
    });
    assert!(
        got.is_some(),
        "the VM got no workload certificate\n{}",
        logs(&running)
    );
    let chain = chain.to_str().unwrap();
    let (_, text) = openssl(&["x509", "-in", chain, "-noout", "-ext", "subjectAltName"]);
    let spiffe = format!("URI:spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{sa}");
    assert!(text.contains(&spiffe), "{text}\n{}", logs(&running));
    let fleet_root = scratch.path().join("root-cert.pem");
    let (ok, text) = openssl(&["verify", "-CAfile", fleet_root.to_str().unwrap(), chain]);
    assert!(ok, "{text}");
    // The agent ran as Istio's unit runs it (sudo -u istio-proxy), logging where an operator
    // looks: /var/log/istio, not the journal (istio-start.sh redirects it there).
    let agent_log = poll(Duration::from_secs(10), || {
        std::fs::read_to_string(disk.join("var/log/istio/istio.log"))
            .ok()
            .filter(|log| log.contains("generated new workload certificate"))
    });
    assert!(agent_log.is_some(), "{}", logs(&running));
    let passwd = std::fs::read_to_string(disk.join("etc/passwd")).unwrap();
    let proxy_uid: u32 = passwd
        .lines()
        .find_map(|l| l.strip_prefix("istio-proxy:x:"))
        .and_then(|rest| rest.split(':').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no istio-proxy user:\n{passwd}"));
    let owner = std::os::unix::fs::MetadataExt::uid(
        &std::fs::metadata(disk.join("var/log/istio/istio.log")).unwrap(),
    );
    assert_eq!(owner, proxy_uid, "the agent did not run as istio-proxy");

    // 2. istiod reports the VM's proxy connected, with the fleet's cluster ID and labels.
    let vm_ip = var("MESH_VM_ADDRESS");
    let proxy = poll(Duration::from_secs(60), || {
        connected_proxies()
            .into_iter()
            .find(|c| c["metadata"]["NAMESPACE"] == namespace.as_str())
    });
    let proxy = proxy
        .unwrap_or_else(|| panic!("istiod reports no proxy of {namespace}\n{}", logs(&running)));
    let metadata = &proxy["metadata"];
    assert_eq!(
        metadata["CLUSTER_ID"],
        var("MESH_CLUSTER_ID").as_str(),
        "{proxy:#}"
    );
    assert_eq!(metadata["LABELS"]["app"], "batch", "{proxy:#}");
    assert_eq!(metadata["INSTANCE_IPS"], vm_ip.as_str(), "{proxy:#}");

    // 3. The WorkloadEntry istiod registers for it, gone after the grace period once the VM
    // is powered off.
    let entry_name = format!("batch-{vm_ip}");
    let entry = poll(Duration::from_secs(30), || {
        workload_entries(&namespace)
            .into_iter()
            .find(|e| e["metadata"]["name"] == entry_name.as_str())
    });
    let entry =
        entry.unwrap_or_else(|| panic!("no WorkloadEntry {entry_name}\n{}", logs(&running)));
    assert_eq!(entry["spec"]["labels"]["app"], "batch", "{entry:#}");
    assert!(
        running.stop(),
        "the VM did not power off\n{}",
        running.console()
    );
    let gone = poll(Duration::from_secs(60), || {
        workload_entries(&namespace)
            .iter()
            .all(|e| e["metadata"]["name"] != entry_name.as_str())
            .then_some(())
    });
    assert!(gone.is_some(), "{entry_name} outlived the grace period");
}

/// Istio's package for `fleet`, served from the east-west address (the only host the VM
/// reaches), its URL and checksum written into `fleet`.
fn serve_package(fleet: &Path) {
    let deb = sidecar_deb(&istio_module(), "1.28.0");
    let sha256 = crate::nspawn::sha256_hex(&deb);
    let base = crate::nspawn::serve_on(
        &var("MESH_EASTWEST_ADDRESS"),
        vec![("istio-sidecar.deb", deb)],
    );
    with_package(fleet, &format!("{base}/istio-sidecar.deb"), &sha256);
}

/// A Debian VM booted by systemd-nspawn in the harness's VM network namespace from the
/// user-data `meshvm cloud-init` writes for `batch-1` of `fleet` with `token`; it stays up
/// until the [`crate::nspawn::Running`] is stopped or dropped.
fn boot_join_vm(
    fleet: &Path,
    scratch: &Path,
    token: &str,
) -> (crate::nspawn::Vm, crate::nspawn::Running) {
    let token_file = scratch.join("token");
    std::fs::write(&token_file, token).unwrap();
    let user_data = scratch.join("user-data");
    checked(
        meshvm()
            .args(["cloud-init", "batch-1", "-f"])
            .arg(fleet)
            .arg("--token-file")
            .arg(&token_file)
            .arg("-o")
            .arg(&user_data),
    );
    // The image has the package's dependencies (the VM's network reaches only the harness).
    let image = crate::nspawn::debian_root_with(&["sudo", "iptables"]);
    let vm = crate::nspawn::Vm::persistent_of(&image);
    // This VM stays up: not the system tests' report-and-power-off unit.
    std::fs::remove_file(
        vm.disk()
            .join("etc/systemd/system/cloud-init.target.wants/meshvm-test-report.service"),
    )
    .unwrap();
    vm.seed(&std::fs::read(&user_data).unwrap(), "iid-join-1");
    let running = vm.start(&[
        format!(
            "--network-namespace-path=/run/netns/{}",
            var("MESH_VM_NETNS")
        ),
        // A VM's root may change its own network (nspawn withholds this unless it makes the
        // network itself): `istio-start.sh` runs `pilot-agent istio-iptables` as root.
        "--capability=CAP_NET_ADMIN".into(),
    ]);
    (vm, running)
}

/// What the VM logged: cloud-init's output, the `istio` unit's journal (istio-start.sh's own
/// failures, before the agent runs), the agent's logs (istio-start.sh sends them to
/// /var/log/istio), and the console.
pub(crate) fn vm_logs(disk: &Path, running: &crate::nspawn::Running) -> String {
    let read = |rel: &str| std::fs::read_to_string(disk.join(rel)).unwrap_or_default();
    format!(
        "--- cloud-init-output.log ---\n{}\n--- journalctl -u istio ---\n{}\n--- istio.log ---\n{}\n--- istio.err.log ---\n{}\n--- console ---\n{}",
        read("var/log/cloud-init-output.log"),
        unit_journal(disk, "istio"),
        read("var/log/istio/istio.log"),
        read("var/log/istio/istio.err.log"),
        running.console()
    )
}

/// The last lines a unit logged in the VM's (persistent) journal, read from its disk.
pub(crate) fn unit_journal(disk: &Path, unit: &str) -> String {
    let out = output(
        Command::new("journalctl")
            .arg("-D")
            .arg(disk.join("var/log/journal"))
            .args([
                "--no-pager",
                "-o",
                "short-monotonic",
                "-n",
                "60",
                "-u",
                unit,
            ]),
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A fleet in `dir` for the harness: its east-west address and root, one group (`workload`,
/// YAML lines at the list's indentation) whose VMs are the harness's VM.
fn harness_fleet(dir: &Path, mesh_extra: &str, workload: &str) -> PathBuf {
    harness_fleet_via(dir, &var("MESH_EASTWEST_ADDRESS"), mesh_extra, workload)
}

/// [`harness_fleet`] with the east-west gateway at `gateway`.
fn harness_fleet_via(dir: &Path, gateway: &str, mesh_extra: &str, workload: &str) -> PathBuf {
    std::fs::copy(var("MESH_ROOT_CERT"), dir.join("root-cert.pem")).unwrap();
    let text = format!(
        "apiVersion: meshvm.io/v1alpha1\nkind: Fleet\nmesh:\n  meshID: mesh1\n  clusterID: {}\n  \
         eastWestGateway: {{address: {}}}\n  dnsCapture: false\n  rootCert: root-cert.pem\n\
         {mesh_extra}sidecar:\n  version: 1.28.0\ngitops:\n  path: clusters/cluster1\n  \
         repoURL: https://git.example.com/mesh.git\n  engines: [flux]\nworkloads:\n{workload}",
        var("MESH_CLUSTER_ID"),
        gateway,
    );
    let fleet = dir.join("meshvm.yaml");
    std::fs::write(&fleet, text).unwrap();
    fleet
}

/// The `Healthy` condition of a WorkloadEntry: (status, message).
fn health(namespace: &str, entry: &str) -> Option<(String, String)> {
    let out =
        output(kubectl().args(["get", "workloadentry", "-n", namespace, entry, "-o", "json"]));
    let entry: Value = serde_json::from_slice(&out.stdout).ok()?;
    let conditions = entry["status"]["conditions"].as_array()?;
    let healthy = conditions.iter().find(|c| c["type"] == "Healthy")?;
    Some((
        healthy["status"].as_str().unwrap_or("").to_owned(),
        healthy["message"].as_str().unwrap_or("").to_owned(),
    ))
}

/// Test 4: a static group with a probe. The WorkloadEntry meshvm committed (applied as the
/// GitOps engine would) has no health until the VM's agent runs the group's probe; then istiod
/// writes the probe's result on it: `Healthy: True` while the probed port answers, `False`
/// with the probe's error once it stops answering. The probed port is a listener of the test
/// on the east-west address (the probe's `host`), so the test decides what the probe sees.
/// The agent runs in the VM network namespace (as in the test above): the booted VM test
/// covers the package and the unit.
#[test]
fn a_static_vms_probe_sets_the_health_of_the_workload_entry_meshvm_committed() {
    let _slot = vm_slot();
    let scratch = tempfile::tempdir().unwrap();
    let namespace = format!("join-probe-{}", std::process::id());
    let eastwest = var("MESH_EASTWEST_ADDRESS");
    let listener = std::net::TcpListener::bind((eastwest.as_str(), 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let fleet = harness_fleet(
        scratch.path(),
        "",
        &format!(
            "  - name: db\n    namespace: {namespace}\n    serviceAccount: db\n    \
             labels: {{app: db}}\n    ports: {{tcp: 5432}}\n    probe:\n      \
             tcpSocket: {{host: {eastwest}, port: {port}}}\n      periodSeconds: 1\n      \
             failureThreshold: 1\n    instances:\n      - {{name: db-1, address: {}}}\n",
            var("MESH_VM_ADDRESS")
        ),
    );
    apply_fleet(&fleet, scratch.path());
    let entries = workload_entries(&namespace);
    assert!(
        entries.iter().any(|e| e["metadata"]["name"] == "db-1"
            && e["metadata"]["annotations"]["proxy.istio.io/health-checks-enabled"] == "true"),
        "meshvm's health-checked WorkloadEntry db-1 is not applied: {entries:#?}"
    );
    assert_eq!(health(&namespace, "db-1"), None, "health before any probe");

    let files = vm_files(&fleet, "db-1", &token(&namespace, "db"));
    let (_root, agent) = Agent::start_with(&files);
    let healthy = poll(Duration::from_secs(60), || {
        health(&namespace, "db-1").filter(|(status, _)| status == "True")
    });
    assert!(
        healthy.is_some(),
        "db-1 never became healthy:\n{}",
        agent.log()
    );

    drop(listener);
    let unhealthy = poll(Duration::from_secs(30), || {
        health(&namespace, "db-1").filter(|(status, _)| status == "False")
    });
    let (_, message) = unhealthy.unwrap_or_else(|| panic!("db-1 stayed healthy:\n{}", agent.log()));
    assert!(
        message.contains(&format!("{eastwest}:{port}")) && message.contains("refused"),
        "{message}"
    );
}

/// `token` as the API server would have issued it two hours earlier, so expired an hour ago:
/// its times moved back and signed again with the API server's own ServiceAccount key (the API
/// server issues no token shorter than 10 minutes).
fn expired(token: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = token.split('.');
    let (header, payload) = (parts.next().unwrap(), parts.next().unwrap());
    let mut claims: Value = serde_json::from_slice(&b64.decode(payload).unwrap()).unwrap();
    for time in ["exp", "iat", "nbf"] {
        let at = claims[time]
            .as_i64()
            .unwrap_or_else(|| panic!("{claims}: no {time}"));
        claims[time] = (at - 7200).into();
    }
    let signed = format!(
        "{header}.{}",
        b64.encode(serde_json::to_vec(&claims).unwrap())
    );
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input");
    std::fs::write(&input, &signed).unwrap();
    let key = harness_var("MESH_SA_KEY");
    let out = output(
        Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&key)
            .arg(&input),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("{signed}.{}", b64.encode(out.stdout))
}

/// What istiod logged after `from` bytes of its log.
fn istiod_log_since(from: u64) -> String {
    let text = std::fs::read(harness_var("MESH_ISTIOD_LOG")).unwrap_or_default();
    String::from_utf8_lossy(&text[(from as usize).min(text.len())..]).into_owned()
}

fn istiod_log_len() -> u64 {
    std::fs::metadata(harness_var("MESH_ISTIOD_LOG")).map_or(0, |m| m.len())
}

/// Test 6: what a VM that cannot join sees, in one booted VM, one case after another. It boots
/// from `meshvm cloud-init`'s user-data for a fleet whose east-west address has no istiod (an
/// unreachable istiod); then each further case changes the running VM's files as an operator
/// would (the hosts line, the token, root-cert.pem) and restarts its `istio` unit: an expired
/// token, a wrong root certificate, a token of another ServiceAccount. (meshvm's own
/// `cloud-init` refuses the two bad tokens, so they cannot come in through user-data: checked
/// here too.) Each is a message in the agent's log on the VM (/var/log/istio/istio.log and
/// istio.err.log, where Istio's istio-start.sh sends it) and no certificate of the group's
/// identity in the VM's /etc/certs; istiod reports no proxy of the group.
#[test]
fn a_vm_that_cannot_join_says_why_and_gets_no_certificate() {
    let _slot = vm_slot();
    let scratch = tempfile::tempdir().unwrap();
    let namespace = format!("join-refused-{}", std::process::id());
    let fleet = join_fleet(scratch.path(), &namespace);
    serve_package(&fleet);
    apply_fleet(&fleet, scratch.path());
    let good = token(&namespace, "batch");
    checked(kubectl().args(["create", "serviceaccount", "intruder", "-n", &namespace]));
    let intruder = token(&namespace, "intruder");

    // The two bad tokens never reach a VM through meshvm: `cloud-init` refuses them.
    for (bad, why) in [
        (expired(&good), "the token expired at"),
        (intruder.clone(), "not for the VM's ServiceAccount"),
    ] {
        let file = scratch.path().join("bad-token");
        std::fs::write(&file, bad).unwrap();
        let out = output(
            meshvm()
                .args(["cloud-init", "batch-1", "-f"])
                .arg(&fleet)
                .arg("--token-file")
                .arg(&file),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(why), "{stderr}");
    }

    // An unreachable istiod: the user-data of a fleet whose east-west address is the VM's own,
    // where nothing listens.
    let eastwest = var("MESH_EASTWEST_ADDRESS");
    let nowhere = var("MESH_VM_ADDRESS");
    let unreachable = scratch.path().join("unreachable");
    std::fs::create_dir(&unreachable).unwrap();
    let text = std::fs::read_to_string(&fleet).unwrap();
    let from = format!("address: {eastwest}");
    assert!(text.contains(&from), "{text}");
    std::fs::copy(
        scratch.path().join("root-cert.pem"),
        unreachable.join("root-cert.pem"),
    )
    .unwrap();
    let bad_fleet = unreachable.join("meshvm.yaml");
    std::fs::write(
        &bad_fleet,
        text.replace(&from, &format!("address: {nowhere}")),
    )
    .unwrap();
    let (vm, running) = boot_join_vm(&bad_fleet, scratch.path(), &good);
    let disk = vm.disk().to_path_buf();
    let vm_case = VmCase {
        disk: &disk,
        running: &running,
        namespace: &namespace,
    };
    // The boot installs the package first: minutes, not seconds.
    vm_case.refused(
        "unreachable istiod",
        Duration::from_secs(240),
        "connection refused",
    );
    let hosts = std::fs::read_to_string(disk.join("etc/hosts")).unwrap();
    assert!(
        hosts.contains(&format!("{nowhere} istiod.istio-system.svc")),
        "{hosts}"
    );

    // An expired token (the hosts line set right): istiod's TokenReview fails; the agent hears
    // only that authentication failed, istiod's log says why.
    let mark = istiod_log_len();
    // The token goes in on stdin (never on a command line).
    let write_token = format!("cat > {}", meshvm::cloudinit::TOKEN_PATH);
    vm_case.restart_istio(
        &format!("sed -i 's/^{nowhere} istiod/{eastwest} istiod/' /etc/hosts; {write_token}"),
        expired(&good).as_bytes(),
        || (),
    );
    vm_case.refused(
        "expired token",
        Duration::from_secs(60),
        "request authenticate failure",
    );
    let why = istiod_log_since(mark);
    let line = why
        .lines()
        .find(|l| l.contains("service account token has expired"));
    let line = line.unwrap_or_else(|| panic!("istiod's log does not say why:\n{why}"));
    eprintln!("expired token, istiod: {line}");

    // A root certificate that is not the mesh's (a good token): the agent refuses istiod's
    // serving certificate.
    let other = scratch.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let (ok, text) = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=not the mesh root",
        "-keyout",
        other.join("key.pem").to_str().unwrap(),
        "-out",
        other.join("root.pem").to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    // /etc/certs is on the VM's disk; the token's tmpfs only inside the VM.
    let vm_root = disk.join("etc/certs/root-cert.pem");
    let mesh_root = std::fs::read(&vm_root).unwrap();
    let wrong_root = std::fs::read(other.join("root.pem")).unwrap();
    vm_case.restart_istio(&write_token, good.as_bytes(), || {
        std::fs::write(&vm_root, &wrong_root).unwrap();
    });
    vm_case.refused(
        "wrong root certificate",
        Duration::from_secs(60),
        "certificate signed by unknown authority",
    );

    // A token of another ServiceAccount of the namespace (the mesh's root back): istiod's CA
    // signs what the token proves (the CSR's names do not count), so the agent gets a
    // certificate of *that* identity, never the group's; istiod then refuses its proxy (its
    // metadata names the group's ServiceAccount) and registers nothing.
    // (Only once the agent is stopped: with the group's token still in place, an agent that
    // sees the mesh's root again gets the group's certificate.)
    vm_case.restart_istio(&write_token, intruder.as_bytes(), || {
        std::fs::write(&vm_root, &mesh_root).unwrap();
    });
    let spiffe = format!("spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/intruder");
    let line = poll(Duration::from_secs(60), || {
        vm_case
            .agent_log()
            .lines()
            .find(|l| l.contains("no identities") && l.contains(&spiffe))
            .map(str::to_owned)
    });
    let line = line.unwrap_or_else(|| panic!("another ServiceAccount:\n{}", vm_case.logs()));
    eprintln!("another ServiceAccount: {line}");
    let chain = disk.join("etc/certs/cert-chain.pem");
    if let Ok(pem) = std::fs::read_to_string(&chain) {
        let (_, text) = openssl(&[
            "x509",
            "-noout",
            "-ext",
            "subjectAltName",
            "-in",
            chain.to_str().unwrap(),
        ]);
        assert!(!text.contains("/sa/batch"), "{text}\n{pem}");
    }
    vm_case.no_proxy("another ServiceAccount");
    assert!(
        workload_entries(&namespace).is_empty(),
        "{}",
        vm_case.logs()
    );
}

/// The booted VM of the refusal test.
struct VmCase<'a> {
    disk: &'a Path,
    running: &'a crate::nspawn::Running,
    namespace: &'a str,
}

impl VmCase<'_> {
    /// The agent's log on the VM: what istio-start.sh sends to istio.log and istio.err.log.
    fn agent_log(&self) -> String {
        let read = |rel: &str| std::fs::read_to_string(self.disk.join(rel)).unwrap_or_default();
        read("var/log/istio/istio.log") + &read("var/log/istio/istio.err.log")
    }

    fn logs(&self) -> String {
        vm_logs(self.disk, self.running)
    }

    /// Stops the VM's `istio` unit, empties the agent's logs, runs `on_host` (changes to the
    /// VM's disk), then `change` in the VM (with `input` on its stdin), and starts the unit
    /// again.
    fn restart_istio(&self, change: &str, input: &[u8], on_host: impl FnOnce()) {
        self.sh(
            "systemctl stop istio; : > /var/log/istio/istio.log; : > /var/log/istio/istio.err.log",
            b"",
        );
        on_host();
        self.sh(&format!("{change}; systemctl start istio"), input);
    }

    /// Runs `script` (`set -e`) in the VM; it must succeed.
    fn sh(&self, script: &str, input: &[u8]) {
        let out = self.running.sh(&format!("set -e; {script}"), input);
        assert!(
            out.status.success(),
            "{script}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits up to `limit` for the agent to log that it failed to get its certificate signed
    /// for the reason `why` (on the same line), then checks the VM has no certificate and
    /// istiod reports no proxy of the group.
    fn refused(&self, case: &str, limit: Duration, why: &str) {
        let line = poll(limit, || {
            self.agent_log()
                .lines()
                .find(|l| l.contains("failed to sign CSR") && l.contains(why))
                .map(str::to_owned)
        });
        let line = line.unwrap_or_else(|| {
            panic!(
                "{case}: the VM's agent never logs `failed to sign CSR: ...{why}...`:\n{}",
                self.logs()
            )
        });
        eprintln!("{case}: {line}");
        assert!(
            !self.disk.join("etc/certs/cert-chain.pem").exists(),
            "{case}: a certificate\n{}",
            self.logs()
        );
        self.no_proxy(case);
    }

    fn no_proxy(&self, case: &str) {
        assert!(
            connected_proxies()
                .iter()
                .all(|c| c["metadata"]["NAMESPACE"] != self.namespace),
            "{case}: istiod reports a proxy of {}",
            self.namespace
        );
    }
}

/// The agent's workload certificate lifetime in the rejoin test (`SECRET_TTL`, what the agent
/// asks istiod for): short, so the VM can be down longer than it within the test.
pub(crate) const SHORT_CERT_TTL: &str = "20s";

/// Whether the certificate at `path` has expired.
pub(crate) fn expired_cert(path: &Path) -> bool {
    !openssl(&[
        "x509",
        "-checkend",
        "0",
        "-noout",
        "-in",
        path.to_str().unwrap(),
    ])
    .0
}

/// Test 7, the failure users report (istio/istio#46923, #33146, #27691), recorded as today's
/// behaviour: a VM whose token is gone after its first join (a tmpfs, or a token that has
/// expired) rejoins only while its workload certificate is valid (the agent then authenticates
/// to istiod with it); down longer than the certificate, it cannot rejoin at all: no
/// certificate, no proxy, until someone gives it a new token. This stays true of `token`
/// groups; a broker-joined group's VM rejoins by itself: the passing counterpart is
/// rejoin.rs's `a_broker_joined_vm_down_longer_than_its_certificate_rejoins_on_the_next_boot`.
/// The agent runs in the VM network namespace.
#[test]
fn today_a_vm_down_longer_than_its_certificate_without_its_token_cannot_rejoin() {
    let _slot = vm_slot();
    let scratch = tempfile::tempdir().unwrap();
    let namespace = format!("join-rejoin-{}", std::process::id());
    let fleet = join_fleet(scratch.path(), &namespace);
    apply_fleet(&fleet, scratch.path());
    let istio = istio_module();
    let root = VmRoot::of(
        &vm_files(&fleet, "batch-1", &token(&namespace, "batch")),
        &istio,
    );
    let env = [("SECRET_TTL", SHORT_CERT_TTL)];
    let chain = root.path("etc/certs/cert-chain.pem");
    let connected = || {
        connected_proxies()
            .into_iter()
            .any(|c| c["metadata"]["NAMESPACE"] == namespace.as_str())
    };

    // The first join, with the token; then the VM goes down and its token with it.
    let mut agent = Agent::start_env(&root, &istio, &env);
    let first = poll(Duration::from_secs(60), || root.cert_chain());
    assert!(first.is_some(), "no first certificate:\n{}", agent.log());
    agent.stop();
    std::fs::remove_file(root.path("var/run/secrets/tokens/istio-token")).unwrap();
    // What the VM has when it comes back (the agent may have rotated the first one).
    let first = root.cert_chain().unwrap();
    assert!(
        !expired_cert(&chain),
        "the certificate expired before the VM came back"
    );

    // Back while the certificate is valid: istiod renews it on the strength of the old one.
    let mut agent = Agent::start_env(&root, &istio, &env);
    let renewed = poll(Duration::from_secs(30), || {
        root.cert_chain().filter(|c| *c != first)
    });
    assert!(
        renewed.is_some(),
        "no renewal with a valid certificate:\n{}",
        agent.log()
    );
    assert!(
        poll(Duration::from_secs(30), || connected().then_some(())).is_some(),
        "{}",
        agent.log()
    );
    agent.stop();

    // Down longer than the certificate: it cannot rejoin.
    let down = poll(Duration::from_secs(60), || {
        expired_cert(&chain).then_some(())
    });
    assert!(down.is_some(), "the certificate never expired");
    let stale = root.cert_chain().unwrap();
    let agent = Agent::start_env(&root, &istio, &env);
    let line = poll(Duration::from_secs(45), || {
        agent
            .log()
            .lines()
            .find(|l| l.contains("failed to sign CSR"))
            .map(str::to_owned)
    });
    let line = line.unwrap_or_else(|| panic!("no CSR failure logged:\n{}", agent.log()));
    eprintln!("rejoin after the certificate expired: {line}");
    // Why, in the agent's words: the old certificate has expired, and there is no token.
    let log = agent.log();
    for why in [
        "cert expired, using token instead",
        "failed to fetch token from file",
    ] {
        assert!(log.contains(why), "the agent's log lacks `{why}`:\n{log}");
    }
    assert_eq!(root.cert_chain().as_deref(), Some(stale.as_str()));
    assert!(expired_cert(&chain));
    assert!(!connected(), "istiod reports the proxy:\n{}", agent.log());
}

/// Test 5, a multi-network mesh: the cluster on `net1`, the group's VMs on `vm-net`, reaching
/// istiod through the east-west gateway. The VM gets its certificate, istiod reports its proxy
/// on the group's network, and the WorkloadEntry it registers is on that network (what lets
/// istiod route to the VM through the gateway). The agent runs in the VM network namespace.
#[test]
fn a_vm_on_its_own_network_joins_a_multi_network_mesh() {
    let _slot = vm_slot();
    let scratch = tempfile::tempdir().unwrap();
    let namespace = format!("join-net-{}", std::process::id());
    let fleet = harness_fleet(
        scratch.path(),
        "  network: net1\n",
        &format!(
            "  - name: ledger\n    namespace: {namespace}\n    serviceAccount: ledger\n    \
             network: vm-net\n    autoRegister: true\n    labels: {{app: ledger}}\n    \
             ports: {{tcp-db: 5432}}\n    instances:\n      - {{name: ledger-1, address: {}}}\n",
            var("MESH_VM_ADDRESS")
        ),
    );
    apply_fleet(&fleet, scratch.path());
    let files = vm_files(&fleet, "ledger-1", &token(&namespace, "ledger"));
    let (root, agent) = Agent::start_with(&files);
    let got = poll(Duration::from_secs(60), || root.cert_chain());
    assert!(got.is_some(), "no workload certificate:\n{}", agent.log());
    let (_, text) = openssl(&[
        "x509",
        "-noout",
        "-ext",
        "subjectAltName",
        "-in",
        root.path("etc/certs/cert-chain.pem").to_str().unwrap(),
    ]);
    assert!(
        text.contains(&format!(
            "URI:spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/ledger"
        )),
        "{text}"
    );
    let proxy = poll(Duration::from_secs(60), || {
        connected_proxies()
            .into_iter()
            .find(|c| c["metadata"]["NAMESPACE"] == namespace.as_str())
    });
    let proxy = proxy.unwrap_or_else(|| panic!("no proxy of {namespace}:\n{}", agent.log()));
    assert_eq!(proxy["metadata"]["NETWORK"], "vm-net", "{proxy:#}");
    let vm_ip = var("MESH_VM_ADDRESS");
    // istiod names an entry on a network of its own `<group>-<ip>-<network>`.
    let name = format!("ledger-{vm_ip}-vm-net");
    let entry = poll(Duration::from_secs(30), || {
        workload_entries(&namespace)
            .into_iter()
            .find(|e| e["metadata"]["name"] == name.as_str())
    });
    let entry = entry.unwrap_or_else(|| panic!("no WorkloadEntry:\n{}", agent.log()));
    assert_eq!(entry["spec"]["network"], "vm-net", "{entry:#}");
    assert_eq!(entry["spec"]["address"], vm_ip.as_str(), "{entry:#}");
}

/// Test 5, a revisioned mesh: a fleet with `revision: 1-28` joins the harness's istiod of that
/// revision (its own address plays the east-west gateway). meshvm's VM files name
/// `istiod-1-28.istio-system.svc` (a name only a revisioned istiod's serving certificate
/// has) at that address, so the VM gets its certificate, and its proxy connects to, and is
/// registered by, the revisioned istiod alone. The agent runs in the VM network namespace.
#[test]
fn a_vm_of_a_revisioned_mesh_joins_the_istiod_of_its_revision() {
    let _slot = vm_slot();
    let scratch = tempfile::tempdir().unwrap();
    let namespace = format!("join-rev-{}", std::process::id());
    let revision = var("MESH_REVISION");
    let gateway = var("MESH_REVISION_EASTWEST_ADDRESS");
    let fleet = harness_fleet_via(
        scratch.path(),
        &gateway,
        &format!("  revision: \"{revision}\"\n"),
        &format!(
            "  - name: batch\n    namespace: {namespace}\n    serviceAccount: batch\n    \
             autoRegister: true\n    labels: {{app: batch}}\n    ports: {{http: 8080}}\n    \
             instances:\n      - {{name: batch-1, address: {}}}\n",
            var("MESH_VM_ADDRESS")
        ),
    );
    apply_fleet(&fleet, scratch.path());
    let files = vm_files(&fleet, "batch-1", &token(&namespace, "batch"));
    let hosts = String::from_utf8(files.get("hosts").unwrap().bytes.clone()).unwrap();
    assert_eq!(
        hosts,
        format!("{gateway} istiod-{revision}.istio-system.svc\n")
    );
    let (root, agent) = Agent::start_with(&files);
    let got = poll(Duration::from_secs(60), || root.cert_chain());
    assert!(got.is_some(), "no workload certificate:\n{}", agent.log());
    let ours = |c: &Value| c["metadata"]["NAMESPACE"] == namespace.as_str();
    let proxy = poll(Duration::from_secs(60), || {
        connected_proxies_of("MESH_ISTIOD_REVISION_DEBUG")
            .into_iter()
            .find(ours)
    });
    assert!(
        proxy.is_some(),
        "istiod-{revision} reports no proxy of {namespace}:\n{}",
        agent.log()
    );
    assert!(
        !connected_proxies().iter().any(ours),
        "the default istiod reports the proxy"
    );
    let name = format!("batch-{}", var("MESH_VM_ADDRESS"));
    let entry = poll(Duration::from_secs(30), || {
        workload_entries(&namespace)
            .into_iter()
            .find(|e| e["metadata"]["name"] == name.as_str())
    });
    let entry = entry.unwrap_or_else(|| panic!("no WorkloadEntry {name}:\n{}", agent.log()));
    assert_eq!(
        entry["metadata"]["annotations"]["istio.io/workloadController"],
        format!("istiod-{revision}-meshvm-harness").as_str(),
        "{entry:#}"
    );
}
