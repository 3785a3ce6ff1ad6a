//! A VM of a broker-joined group rejoins by itself after being down longer than its workload
//! certificate: the passing counterpart of join.rs's
//! `today_a_vm_down_longer_than_its_certificate_without_its_token_cannot_rejoin`.
//!
//! Everything is real but the cloud: `meshvm join-server` on the host at the east-west address
//! (the address the group's user-data sends the VM to), with the harness's kubeconfig (a real
//! TokenRequest) and a serving certificate made here for the broker's host name; the VM is the
//! Debian root of join.rs's booted-VM test, booted twice by systemd-nspawn in the harness's VM
//! network namespace from ONE `meshvm cloud-init --group` user-data that holds no token. The
//! VM proves itself with a join token the operator placed on its disk before the first boot,
//! as on-premises operators do (`join: {method: join-token}`).

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use crate::cluster::{checked, meshvm};
use crate::join::{
    SHORT_CERT_TTL, TRUST_DOMAIN, apply_fleet, connected_proxies, expired_cert, istio_module,
    join_fleet, openssl, poll, sidecar_deb, unit_journal, var, vm_logs, vm_slot, with_package,
};
use crate::support::broker::{Broker, pki_for};

/// The broker's host name (the fleet's default `joinBroker.namespace`), which its serving
/// certificate names and the VM's join script asks for.
const BROKER_HOST: &str = "meshvm-join.meshvm-join.svc";

/// The `issued` audit lines among the broker's decisions so far.
fn grants(decisions: &[Value]) -> usize {
    decisions
        .iter()
        .filter(|d| d["decision"] == "issued")
        .count()
}

/// Whether `text` holds something shaped like a JWT: a base64url segment starting `eyJ`
/// (`{"`), a dot, and another starting `eyJ`. A bare `eyJ` turns up by chance in base64 text
/// (the user-data's random CA certificate made this test flaky).
fn holds_a_jwt(text: &str) -> bool {
    text.match_indices("eyJ").any(|(at, _)| {
        let rest = &text[at..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(rest.len());
        rest[end..].starts_with(".eyJ")
    })
}

/// First boot from the group's user-data with no token in it: the join unit trades the placed
/// join token for an istio-token at the broker, and the agent (Istio's package and unit, as
/// istio-proxy) gets a certificate of the group's identity from istiod. Then the VM is powered
/// off until that certificate has expired (`SECRET_TTL` short, as test 7) and its token is gone
/// (/run is a tmpfs). The second boot: the join unit sees the expired certificate, fetches a
/// new token, the agent gets a new valid certificate, and istiod reports the proxy again. The
/// broker's audit shows exactly two grants, and no line holds a token.
#[test]
fn a_broker_joined_vm_down_longer_than_its_certificate_rejoins_on_the_next_boot() {
    let _slot = vm_slot();
    let started = Instant::now();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let namespace = format!("rejoin-vm-{}", std::process::id());
    let eastwest = var("MESH_EASTWEST_ADDRESS");
    // A free port on the east-west address for the broker (the fleet's joinBroker.port).
    let port = crate::support::free_port_on(&eastwest);

    // The fleet: join.rs's auto-registered group, joined through the broker by join token.
    let fleet = join_fleet(dir, &namespace);
    let text = std::fs::read_to_string(&fleet).unwrap();
    let text = text
        .replace(
            "    autoRegister: true\n",
            "    autoRegister: true\n    join: {method: join-token}\n",
        )
        .replace(
            "workloads:\n",
            &format!("joinBroker: {{port: {port}}}\nworkloads:\n"),
        );
    assert!(text.contains("method: join-token"), "{text}");
    std::fs::write(&fleet, text).unwrap();
    let istio = istio_module();
    let deb = sidecar_deb(&istio, "1.28.0");
    let base = crate::nspawn::serve_on(&eastwest, vec![("istio-sidecar.deb", deb.clone())]);
    with_package(
        &fleet,
        &format!("{base}/istio-sidecar.deb"),
        &crate::nspawn::sha256_hex(&deb),
    );
    apply_fleet(&fleet, dir);

    // The broker, on the host at the east-west address, with the harness's real TokenRequest.
    let pki = pki_for(&[BROKER_HOST]);
    let book = dir.join("join-tokens.json");
    let kubeconfig = std::env::var_os("MESH_KUBECONFIG").expect("MESH_KUBECONFIG: run the harness");
    let broker = Broker::start_on(
        dir,
        &pki,
        &format!("{eastwest}:{port}"),
        &[
            "--kubeconfig".as_ref(),
            kubeconfig.as_os_str(),
            "--fleet".as_ref(),
            fleet.as_os_str(),
            "--join-tokens".as_ref(),
            book.as_os_str(),
            "--token-seconds".as_ref(),
            "600".as_ref(),
        ],
    );
    // One join token, good for the two boots.
    let join_token = checked(
        meshvm()
            .args(["join-token", "create", "--group", "batch", "--uses", "2"])
            .args(["--ttl", "1h", "--book"])
            .arg(&book)
            .arg("-f")
            .arg(&fleet),
    )
    .trim()
    .to_owned();
    assert!(!join_token.is_empty());

    // ONE user-data for the group: no istio-token, no join token, no JWT anywhere in it.
    let ca = dir.join("broker-ca.crt");
    std::fs::write(&ca, &pki.ca).unwrap();
    let user_data = dir.join("user-data");
    checked(
        meshvm()
            .args(["cloud-init", "--group", "batch", "-f"])
            .arg(&fleet)
            .arg("--broker-ca")
            .arg(&ca)
            .arg("-o")
            .arg(&user_data),
    );
    let document = std::fs::read_to_string(&user_data).unwrap();
    let parsed: Value = serde_saphyr::from_str(&document).unwrap();
    let paths: Vec<&str> = parsed["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert!(
        paths.contains(&"/etc/meshvm-join/ca.crt") && !paths.iter().any(|p| p.contains("token")),
        "the user-data writes {paths:?}"
    );
    assert!(
        !document.contains(&join_token),
        "the join token in the user-data"
    );
    let contents = parsed["write_files"].as_array().unwrap().iter().map(|f| {
        let content = f["content"].as_str().unwrap_or_default();
        match f["encoding"].as_str() {
            Some("b64") => String::from_utf8_lossy(
                &base64::engine::general_purpose::STANDARD
                    .decode(content)
                    .unwrap(),
            )
            .into_owned(),
            _ => content.to_owned(),
        }
    });
    for text in std::iter::once(document.clone()).chain(contents) {
        assert!(!holds_a_jwt(&text), "something like a JWT in the user-data");
    }
    assert!(document.contains("meshvm-join.service"), "no join unit");

    // The VM: the join token placed on its disk by the operator (0600, root's), and the
    // agent's certificate lifetime made short for the test (a drop-in for Istio's unit;
    // istio-start.sh runs the agent with `sudo -E`, which keeps it).
    let image = crate::nspawn::debian_root_with(&["sudo", "iptables"]);
    let vm = crate::nspawn::Vm::persistent_of(&image);
    let disk = vm.disk().to_path_buf();
    std::fs::remove_file(
        disk.join("etc/systemd/system/cloud-init.target.wants/meshvm-test-report.service"),
    )
    .unwrap();
    let placed = disk.join("etc/meshvm-join/join-token");
    std::fs::create_dir_all(placed.parent().unwrap()).unwrap();
    std::fs::write(&placed, format!("{join_token}\n")).unwrap();
    std::fs::set_permissions(&placed, std::fs::Permissions::from_mode(0o600)).unwrap();
    let dropin = disk.join("etc/systemd/system/istio.service.d/meshvm-test-ttl.conf");
    std::fs::create_dir_all(dropin.parent().unwrap()).unwrap();
    std::fs::write(
        &dropin,
        format!("[Service]\nEnvironment=SECRET_TTL={SHORT_CERT_TTL}\n"),
    )
    .unwrap();
    vm.seed(document.as_bytes(), "iid-rejoin-1");
    let boot = || {
        vm.start(&[
            format!(
                "--network-namespace-path=/run/netns/{}",
                var("MESH_VM_NETNS")
            ),
            "--capability=CAP_NET_ADMIN".into(),
        ])
    };
    let logs = |running: &crate::nspawn::Running| {
        format!(
            "{}\n--- journalctl -u meshvm-join ---\n{}",
            vm_logs(&disk, running),
            unit_journal(&disk, "meshvm-join")
        )
    };
    let chain = disk.join("etc/certs/cert-chain.pem");
    let chain_text = || {
        std::fs::read_to_string(&chain)
            .ok()
            .filter(|t| t.contains("END CERTIFICATE"))
    };
    let fleet_root = dir.join("root-cert.pem");
    let spiffe = format!("URI:spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/batch");
    // The certificate on the VM's disk: the group's identity, chaining to the mesh's root.
    let check_cert = |running: &crate::nspawn::Running| {
        let path = chain.to_str().unwrap();
        let (_, text) = openssl(&["x509", "-in", path, "-noout", "-ext", "subjectAltName"]);
        assert!(text.contains(&spiffe), "{text}\n{}", logs(running));
        let (ok, text) = openssl(&["verify", "-CAfile", fleet_root.to_str().unwrap(), path]);
        assert!(ok, "{text}");
    };
    let connected = || {
        connected_proxies()
            .into_iter()
            .any(|c| c["metadata"]["NAMESPACE"] == namespace.as_str())
    };

    // The first boot.
    let mut running = boot();
    let first = poll(Duration::from_secs(300), chain_text);
    assert!(
        first.is_some(),
        "the first boot got no workload certificate\n{}",
        logs(&running)
    );
    check_cert(&running);
    assert!(
        poll(Duration::from_secs(60), || connected().then_some(())).is_some(),
        "istiod reports no proxy of {namespace} after the first boot\n{}",
        logs(&running)
    );
    assert_eq!(
        grants(&broker.decisions(1)),
        1,
        "one grant for the first boot"
    );
    eprintln!("rejoin: first boot joined at {:.1?}", started.elapsed());

    // Off, longer than the certificate: the token went with /run, the certificate expires.
    assert!(
        running.stop(),
        "the VM did not power off\n{}",
        running.console()
    );
    assert!(
        !disk.join("run/secrets/tokens/istio-token").exists(),
        "the istio-token outlived the boot"
    );
    let expired = poll(Duration::from_secs(120), || {
        expired_cert(&chain).then_some(())
    });
    assert!(expired.is_some(), "the certificate never expired");
    let stale = chain_text().unwrap();
    assert!(
        poll(Duration::from_secs(60), || (!connected()).then_some(())).is_some(),
        "istiod still reports the powered-off VM's proxy"
    );
    eprintln!("rejoin: certificate expired at {:.1?}", started.elapsed());

    // The second boot: a new token from the broker, a new valid certificate, connected again.
    let running = boot();
    let renewed = poll(Duration::from_secs(180), || {
        chain_text().filter(|c| *c != stale && !expired_cert(&chain))
    });
    assert!(
        renewed.is_some(),
        "the second boot got no new certificate\n{}",
        logs(&running)
    );
    check_cert(&running);
    assert!(
        poll(Duration::from_secs(60), || connected().then_some(())).is_some(),
        "istiod reports no proxy of {namespace} after the second boot\n{}",
        logs(&running)
    );
    let journal = unit_journal(&disk, "meshvm-join");
    assert!(
        journal.contains("got an istio-token"),
        "the join unit did not fetch a token at the second boot:\n{journal}"
    );
    let decisions = broker.decisions(2);
    assert_eq!(grants(&decisions), 2, "{decisions:#?}");
    for d in &decisions {
        let line = d.to_string();
        assert!(
            !line.contains("eyJ") && !line.contains(&join_token),
            "an audit line holds a token: {line}"
        );
        assert_eq!(d["group"], "batch", "{line}");
        assert_eq!(d["source"], var("MESH_VM_ADDRESS").as_str(), "{line}");
    }
    eprintln!("rejoin: second boot rejoined at {:.1?}", started.elapsed());
    drop(running);
}

#[test]
fn a_jwt_is_told_from_base64_that_happens_to_hold_eyj() {
    assert!(holds_a_jwt("token: eyJhbGci.eyJzdWIi.c2ln\n"));
    assert!(!holds_a_jwt("MIIBeyJ0Ab+c/eyJQ.x\n"));
}
