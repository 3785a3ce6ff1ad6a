//! istiod (pilot-discovery) out of cluster against the harness's API server, and the network a
//! test VM reaches it through.
//!
//! - The network: a network namespace (`ip netns`) joined to the host by a veth pair. The host
//!   side's address plays the east-west gateway: istiod's CA and xDS port (15012, the port
//!   meshvm's VM files name) listens there, so several harnesses never share a port. A VM —
//!   systemd-nspawn with `--network-namespace-path`, or a program under `ip netns exec` —
//!   reaches it as a real VM reaches the gateway, by the address meshvm's hosts line names.
//! - The CA: a root made here with openssl and plugged in (`ROOT_CA_DIR`), so the root a fleet
//!   names (`MESH_ROOT_CERT`) is the one istiod signs with and publishes as
//!   `istio-ca-root-cert`.
//! - Two istiods, as a mesh with a canary revision has: the default one and `istiod-1-28`
//!   (`REVISION`, its serving certificate names `istiod-1-28.istio-system.svc`), on a second
//!   host address of the veth pair, signing with the same root.
//! - Everything else on 127.0.0.1 at free ports; the working directory is the harness's own
//!   (istiod reads `./etc/...` paths relative to it, never the host's).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::Paths;
use super::cluster::{
    ISTIOD, ISTIOD_REVISION, Process, curl, free_ports, kubectl, openssl, spawn_in, wait_for,
};
use crate::ci::run_quietly;

/// istiod's identity and the settings the join tests rely on.
pub const NAMESPACE: &str = "istio-system";
pub const CLUSTER_ID: &str = "cluster1";
pub const TRUST_DOMAIN: &str = "cluster.local";
/// The revision of the harness's second istiod (`istiod-1-28`), for fleets with `revision:`.
pub const REVISION: &str = "1-28";
/// How long istiod keeps an auto-registered WorkloadEntry after its proxy disconnects.
pub const GRACE_PERIOD: &str = "10s";
/// The port meshvm's VM files dial (CA and xDS).
const XDS_PORT: u16 = 15012;

/// The harness's network namespace and veth pair: names and /30 addresses derived from the
/// state directory, so two harnesses (two target directories) differ.
pub struct Network {
    pub netns: String,
    host_if: String,
    vm_if: String,
    pub host_addr: String,
    pub vm_addr: String,
    /// A second address of the host side, where the revisioned istiod listens (the VM reaches
    /// it by its default route, through `host_addr`).
    pub revision_addr: String,
}

impl Network {
    pub fn of(paths: &Paths) -> Network {
        let mut hasher = DefaultHasher::new();
        paths.state.hash(&mut hasher);
        let n = hasher.finish() % 16_384;
        let tag = format!("mvm{n:05}");
        let (third, fourth) = (n / 64, (n % 64) * 4);
        Network {
            netns: tag.clone(),
            host_if: format!("{tag}h"),
            vm_if: format!("{tag}v"),
            host_addr: format!("10.{}.{}.{}", 200 + third / 256, third % 256, fourth + 1),
            vm_addr: format!("10.{}.{}.{}", 200 + third / 256, third % 256, fourth + 2),
            revision_addr: format!("10.{}.{}.{}", 216 + third / 256, third % 256, fourth + 1),
        }
    }

    /// Files `ip netns exec` binds over /etc inside the namespace (`hosts`, …).
    pub fn etc_dir(&self) -> PathBuf {
        PathBuf::from("/etc/netns").join(&self.netns)
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    run_quietly(Command::new("ip").args(args))
}

fn create_network(net: &Network) -> Result<(), String> {
    if xtask::on_path("ip").is_none() {
        return Err(
            "`ip` is not on PATH: the harness joins its test VM by a veth pair \
                    (apt-get install iproute2)"
                .into(),
        );
    }
    // A harness of this target that died left them: replaced.
    let _ = ip(&["netns", "delete", &net.netns]);
    let _ = ip(&["link", "delete", &net.host_if]);
    let ns = net.netns.as_str();
    let exec = |args: &[&str]| {
        let mut all = vec!["netns", "exec", ns, "ip"];
        all.extend(args);
        ip(&all)
    };
    ip(&["netns", "add", ns]).map_err(|e| format!("{e} (the harness's VM network needs root)"))?;
    ip(&[
        "link",
        "add",
        &net.host_if,
        "type",
        "veth",
        "peer",
        "name",
        &net.vm_if,
        "netns",
        ns,
    ])?;
    ip(&[
        "addr",
        "add",
        &format!("{}/30", net.host_addr),
        "dev",
        &net.host_if,
    ])?;
    ip(&[
        "addr",
        "add",
        &format!("{}/32", net.revision_addr),
        "dev",
        &net.host_if,
    ])?;
    ip(&["link", "set", &net.host_if, "up"])?;
    exec(&[
        "addr",
        "add",
        &format!("{}/30", net.vm_addr),
        "dev",
        &net.vm_if,
    ])?;
    exec(&["link", "set", &net.vm_if, "up"])?;
    exec(&["link", "set", "lo", "up"])?;
    exec(&["route", "add", "default", "via", &net.host_addr])?;
    let etc = net.etc_dir();
    std::fs::create_dir_all(&etc).map_err(|e| format!("{}: {e}", etc.display()))?;
    let hosts = etc.join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n").map_err(|e| format!("{}: {e}", hosts.display()))
}

/// Removes the namespace (its end of the veth pair, and so the pair) and its /etc files.
pub fn remove_network(paths: &Paths) -> Result<(), String> {
    let net = Network::of(paths);
    if Path::new("/run/netns").join(&net.netns).exists() {
        ip(&["netns", "delete", &net.netns])?;
    }
    match std::fs::remove_dir_all(net.etc_dir()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", net.etc_dir().display())),
    }
}

/// The plugged-in CA: a self-signed root (P-256, a week) that is also istiod's signing
/// certificate.
fn root_ca(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "7",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca-cert.pem",
            "-subj",
            "/O=meshvm harness/CN=meshvm mesh root",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        ],
    )?;
    for copy in ["root-cert.pem", "cert-chain.pem"] {
        std::fs::copy(dir.join("ca-cert.pem"), dir.join(copy))
            .map_err(|e| format!("{}: {e}", dir.join(copy).display()))?;
    }
    Ok(())
}

fn env_file(paths: &Paths) -> PathBuf {
    paths.state.join("istiod.env")
}

/// What `mesh env` adds for istiod: `(name, value)` pairs written by [`start`].
pub fn env(paths: &Paths) -> Result<Vec<(String, String)>, String> {
    let file = env_file(paths);
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// One istiod of the harness: the default revision or [`REVISION`].
struct Instance {
    process: Process,
    revision: Option<&'static str>,
    /// Where its CA and xDS port listens.
    address: String,
}

impl Instance {
    /// `istiod` or `istiod-<rev>`: its service name, the host VMs dial.
    fn service(&self) -> String {
        match self.revision {
            Some(rev) => format!("istiod-{rev}"),
            None => "istiod".into(),
        }
    }

    /// Starts it (not waiting) in its own working directory with the plugged-in root in
    /// `cacerts`; its debug address.
    fn spawn(&self, paths: &Paths, cacerts: &Path) -> Result<String, String> {
        let cwd = paths.state.join(self.service());
        std::fs::create_dir_all(&cwd).map_err(|e| format!("{}: {e}", cwd.display()))?;
        let mesh = cwd.join("mesh.yaml");
        std::fs::write(
            &mesh,
            format!(
                "trustDomain: {TRUST_DOMAIN}\ndefaultConfig:\n  discoveryAddress: {}.{NAMESPACE}.svc:{XDS_PORT}\n",
                self.service()
            ),
        )
        .map_err(|e| format!("{}: {e}", mesh.display()))?;
        let [http, grpc, monitoring, https, ctrlz] = free_ports::<5>()?;
        let args = vec![
            "discovery".to_string(),
            format!("--kubeconfig={}", paths.kubeconfig().display()),
            format!("--meshConfig={}", mesh.display()),
            format!(
                "--networksConfig={}",
                cwd.join("meshNetworks.yaml").display()
            ),
            format!("--clusterID={CLUSTER_ID}"),
            format!("--httpAddr=127.0.0.1:{http}"),
            format!("--grpcAddr=127.0.0.1:{grpc}"),
            format!("--secureGRPCAddr={}:{XDS_PORT}", self.address),
            format!("--monitoringAddr=127.0.0.1:{monitoring}"),
            format!("--httpsAddr=127.0.0.1:{https}"),
            format!("--ctrlz_port={ctrlz}"),
            "--ctrlz_address=127.0.0.1".into(),
            "--keepaliveMaxServerConnectionAge=30m".into(),
        ];
        let mut envs = vec![
            ("POD_NAMESPACE", NAMESPACE.to_string()),
            ("POD_NAME", format!("{}-meshvm-harness", self.service())),
            ("CLUSTER_ID", CLUSTER_ID.into()),
            // Both revisions sign with the mesh's one root, as revisions of one mesh do.
            ("ROOT_CA_DIR", cacerts.display().to_string()),
            // No injector, no webhooks: nothing in the harness would call them.
            ("INJECT_ENABLED", "false".into()),
            ("INJECTION_WEBHOOK_CONFIG_NAME", String::new()),
            ("VALIDATION_WEBHOOK_CONFIG_NAME", String::new()),
            // It leads at once, and a killed one leaves no lock behind.
            ("ENABLE_LEADER_ELECTION", "false".into()),
            (
                "PILOT_ENABLE_WORKLOAD_ENTRY_AUTOREGISTRATION",
                "true".into(),
            ),
            ("PILOT_ENABLE_WORKLOAD_ENTRY_HEALTHCHECKS", "true".into()),
            ("PILOT_WORKLOAD_ENTRY_GRACE_PERIOD", GRACE_PERIOD.into()),
            ("ENABLE_DEBUG_ON_HTTP", "true".into()),
            // Out of cluster: never the in-cluster configuration.
            ("KUBERNETES_SERVICE_HOST", String::new()),
            ("KUBECONFIG", paths.kubeconfig().display().to_string()),
        ];
        if let Some(rev) = self.revision {
            envs.push(("REVISION", rev.into()));
        }
        spawn_in(paths, self.process, &args, &cwd, &envs)?;
        Ok(format!("http://127.0.0.1:{http}"))
    }
}

/// Starts the two istiods (the default revision and [`REVISION`]) after the CRDs are in, waits
/// for their `/ready` and for the root they publish in their own namespace; returns the
/// default one's CA/xDS address.
pub fn start(paths: &Paths) -> Result<String, String> {
    let net = Network::of(paths);
    create_network(&net)?;
    let cacerts = paths.state.join("istiod/cacerts");
    root_ca(&cacerts)?;
    kubectl(paths, &["create", "namespace", NAMESPACE])?;

    let default = Instance {
        process: ISTIOD,
        revision: None,
        address: net.host_addr.clone(),
    };
    let revisioned = Instance {
        process: ISTIOD_REVISION,
        revision: Some(REVISION),
        address: net.revision_addr.clone(),
    };
    // Both start at once; each takes seconds to become ready.
    let debug = default.spawn(paths, &cacerts)?;
    let revision_debug = revisioned.spawn(paths, &cacerts)?;
    for (instance, debug) in [(&default, &debug), (&revisioned, &revision_debug)] {
        wait_for(
            paths,
            instance.process,
            &format!("{} /ready", instance.service()),
            || curl(&format!("{debug}/ready")).is_some(),
        )?;
    }
    wait_for(paths, ISTIOD, "istiod's istio-ca-root-cert", || {
        kubectl(
            paths,
            &["get", "configmap", "-n", NAMESPACE, "istio-ca-root-cert"],
        )
        .is_ok()
    })?;
    let xds = format!("{}:{XDS_PORT}", net.host_addr);
    let vars = [
        ("MESH_ISTIOD", xds.clone()),
        ("MESH_ISTIOD_DEBUG", debug),
        (
            "MESH_ROOT_CERT",
            cacerts.join("root-cert.pem").display().to_string(),
        ),
        ("MESH_EASTWEST_ADDRESS", net.host_addr.clone()),
        ("MESH_VM_NETNS", net.netns.clone()),
        ("MESH_VM_ADDRESS", net.vm_addr.clone()),
        ("MESH_CLUSTER_ID", CLUSTER_ID.into()),
        ("MESH_GRACE_PERIOD", GRACE_PERIOD.into()),
        // The revisioned istiod: its revision, CA/xDS address (the east-west address of a
        // fleet with `revision:`), debug endpoint and log.
        ("MESH_REVISION", REVISION.into()),
        (
            "MESH_ISTIOD_REVISION",
            format!("{}:{XDS_PORT}", net.revision_addr),
        ),
        ("MESH_REVISION_EASTWEST_ADDRESS", net.revision_addr.clone()),
        ("MESH_ISTIOD_REVISION_DEBUG", revision_debug),
    ];
    let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    let file = env_file(paths);
    std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(xds)
}
