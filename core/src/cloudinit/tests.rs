use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::spec::load_fleet_str;

const SEED: &str = include_str!("../../../fixtures/fleets/seed/meshvm.yaml");
const ROOT_CERT: &str = include_str!("../../../fixtures/certs/test-root-cert.pem");
const LEAF_CERT: &str = include_str!("../../../fixtures/certs/test-leaf-cert.pem");
/// 2030-01-01T00:00:00Z: inside the fixture CA's validity.
const NOW: u64 = 1_893_456_000;
const SUBJECT: &str = "system:serviceaccount:vm-apps:tester";

fn seed() -> CheckedFleet {
    load_fleet_str(SEED, "meshvm.yaml".as_ref()).unwrap()
}

/// The seed fleet with a change, as a checked fleet whether or not the change passes the checks.
fn seed_with(change: impl FnOnce(&mut crate::spec::Fleet)) -> CheckedFleet {
    let mut fleet = seed().fleet().clone();
    change(&mut fleet);
    CheckedFleet::assume_checked(fleet)
}

/// A fake token (unsigned, built here: not a secret) valid for an hour after NOW.
fn fake_token(subject: &str) -> String {
    token::unsigned_test_token(&json!({
        "aud": ["istio-ca"],
        "sub": subject,
        "iat": NOW,
        "exp": NOW + 3600,
    }))
}

/// The seed VM's files.
fn seed_files() -> FileTree {
    let mut files = crate::vmfiles::vm_files(&seed(), "tester-1").unwrap();
    files.insert(vmfiles::ROOT_CERT, ROOT_CERT);
    files
}

fn request<'a>(fleet: &'a CheckedFleet, files: &'a FileTree, token: &'a str) -> Request<'a> {
    Request {
        fleet,
        vm: "tester-1",
        files,
        token,
        now: UtcDateTime::from_unix_timestamp(NOW as i64).unwrap(),
        min_token_validity: Duration::from_secs(15 * 60),
    }
}

fn render_seed() -> UserData {
    let (fleet, files, token) = (seed(), seed_files(), fake_token(SUBJECT));
    render(&request(&fleet, &files, &token), &Templates::default()).unwrap()
}

fn parsed(document: &str) -> Value {
    parse_document(document).unwrap()
}

fn decode(file: &Value) -> Vec<u8> {
    let content = BASE64.decode(file["content"].as_str().unwrap()).unwrap();
    match file["encoding"].as_str().unwrap() {
        "b64" => content,
        "gz+b64" => {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&content[..]), &mut out)
                .unwrap();
            out
        }
        other => panic!("unexpected encoding {other}"),
    }
}

#[test]
fn seed_document() {
    let user_data = render_seed();
    insta::assert_snapshot!(user_data.document);
    assert_eq!(
        user_data.token_expires_at.unix_timestamp(),
        NOW as i64 + 3600
    );
}

#[test]
fn rendering_is_deterministic() {
    assert_eq!(render_seed().document, render_seed().document);
}

#[test]
fn files_land_at_istios_paths_with_their_contents_and_modes() {
    let doc = parsed(&render_seed().document);
    let files = seed_files();
    let token = fake_token(SUBJECT);
    let expected: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "/etc/certs/root-cert.pem",
            files.get("root-cert.pem").unwrap().bytes.clone(),
            "0644",
        ),
        (
            "/var/lib/istio/envoy/cluster.env",
            files.get("cluster.env").unwrap().bytes.clone(),
            "0644",
        ),
        (
            "/var/lib/istio/config/mesh",
            files.get("mesh.yaml").unwrap().bytes.clone(),
            "0644",
        ),
        (TOKEN_PATH, token.into_bytes(), "0600"),
    ];
    let written = doc["write_files"].as_array().unwrap();
    assert_eq!(written.len(), expected.len());
    for (file, (path, bytes, mode)) in written.iter().zip(expected) {
        assert_eq!(file["path"], path);
        assert_eq!(file["permissions"], mode, "a quoted string, never a number");
        assert_eq!(file["owner"], "root:root");
        assert!(
            file.get("defer").is_none(),
            "init stage: istio-proxy does not exist yet"
        );
        assert_eq!(decode(file), bytes, "{path}");
    }
}

#[test]
fn join_step_is_one_set_e_script_that_sh_accepts() {
    let doc = parsed(&render_seed().document);
    let runcmd = doc["runcmd"].as_array().unwrap();
    assert_eq!(runcmd.len(), 1, "one step");
    let step = runcmd[0].as_array().unwrap();
    assert_eq!(step[0], "sh");
    assert_eq!(step[1], "-c");
    assert_eq!(step[3], "meshvm-join");
    let script = step[2].as_str().unwrap();
    let first_command = script
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .unwrap();
    assert_eq!(first_command, "set -eu");
    let install = script.find("apt-get install").unwrap();
    for later in [
        "chown -R istio-proxy",
        "add_host '203.0.113.10 istiod.istio-system.svc'",
        "systemctl enable --now istio",
    ] {
        assert!(
            script.find(later).unwrap() > install,
            "{later} after install"
        );
    }
    assert!(script.find("sha256 mismatch").unwrap() < install);
    testkit::checked(std::process::Command::new("sh").args(["-n", "-c", script]));
}

#[test]
fn values_reach_the_shell_as_they_are() {
    let url = "https://mirror.example.com/it's/$(reboot)/`id`/istio-sidecar.deb";
    let fleet = seed_with(|f| {
        f.sidecar.url = Some(url.into());
        f.sidecar.package = PackageFormat::Rpm;
    });
    let (files, token) = (seed_files(), fake_token(SUBJECT));
    let doc = render(&request(&fleet, &files, &token), &Templates::default()).unwrap();
    let script = parsed(&doc.document)["runcmd"][0][2]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(script.contains("rpm -U --replacepkgs") && !script.contains("apt-get"));
    let assignment = script.lines().find(|l| l.starts_with("url=")).unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{assignment}\nprintf %s \"$url\""))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), url);
}

#[test]
fn an_unpinned_package_is_checked_against_its_published_sha256() {
    let fleet = seed_with(|f| f.sidecar.sha256 = None);
    let (files, token) = (seed_files(), fake_token(SUBJECT));
    let doc = render(&request(&fleet, &files, &token), &Templates::default()).unwrap();
    assert_eq!(doc.warnings.len(), 1);
    assert!(
        doc.warnings[0].contains("pins no sidecar.sha256"),
        "{:?}",
        doc.warnings
    );
    let script = parsed(&doc.document)["runcmd"][0][2]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(script.contains(
        "sha256_url='https://storage.googleapis.com/istio-release/releases/1.28.0/deb/istio-sidecar.deb.sha256'"
    ));
    assert!(!script.contains("sha256='"));
    assert!(
        render_seed().warnings.is_empty(),
        "a pinned package: no warning"
    );
}

#[test]
fn download_url_follows_version_format_and_arch() {
    let fleet = seed_with(|f| {
        f.sidecar.arch = crate::spec::Arch::Arm64;
        f.sidecar.package = PackageFormat::Rpm;
    });
    let (files, token) = (seed_files(), fake_token(SUBJECT));
    let doc = render(&request(&fleet, &files, &token), &Templates::default()).unwrap();
    assert!(doc.document.contains(
        "url='https://storage.googleapis.com/istio-release/releases/1.28.0/rpm/istio-sidecar-arm64.rpm'"
    ));
}

/// The schemas directory beside the workspace (`$MESHVM_SCHEMAS` overrides it).
fn schemas_dir() -> PathBuf {
    std::env::var_os("MESHVM_SCHEMAS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/schemas"))
}

fn cloud_init_schema() -> Value {
    let path = schemas_dir().join("cloud-init/schema-cloud-config-v1.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cloud-init's schema is needed at {} ({e}); set MESHVM_SCHEMAS to the schemas directory",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

#[test]
fn validates_against_the_newest_cloud_init_schema() {
    let schema = cloud_init_schema();
    assert_eq!(
        schema_problems(&render_seed().document, &schema).unwrap(),
        Vec::<String>::new()
    );
    // The check has teeth: an unquoted mode and an unknown key are rejected.
    let bad = "#cloud-config\nwrite_files:\n  - path: /x\n    permissions: 0644\nfrobnicate: 1\n";
    let problems = schema_problems(bad, &schema).unwrap();
    assert!(problems.len() >= 2, "{problems:?}");
}

#[test]
fn refuses_what_would_break_the_vm() {
    let fleet = seed();
    let good_token = fake_token(SUBJECT);
    let wrong_sa = fake_token("system:serviceaccount:vm-apps:default");
    let with = |path: &str, bytes: Option<&str>| {
        let mut files = FileTree::new();
        for (p, f) in seed_files().iter() {
            if p != path {
                files.insert(p, f.bytes.clone());
            }
        }
        if let Some(bytes) = bytes {
            files.insert(path, bytes);
        }
        files
    };
    let seed_files = seed_files();
    let no_cert = with("root-cert.pem", None);
    let leaf = with("root-cert.pem", Some(LEAF_CERT));
    let extra = with("notes.txt", Some("hi"));
    let no_hosts = with("hosts", None);
    let cases: Vec<(Request<'_>, &str)> = vec![
        (
            request(&fleet, &seed_files, &wrong_sa),
            "the token is for `system:serviceaccount:vm-apps:default`, not for the VM's ServiceAccount `system:serviceaccount:vm-apps:tester`\n  hint: create one with `kubectl create token tester -n vm-apps --audience istio-ca",
        ),
        (
            request(&fleet, &no_cert, &good_token),
            "the VM's files lack root-cert.pem",
        ),
        (
            request(&fleet, &leaf, &good_token),
            "is not a CA certificate",
        ),
        (
            request(&fleet, &extra, &good_token),
            "notes.txt, which the user-data has no place for",
        ),
        (request(&fleet, &no_hosts, &good_token), "lack hosts"),
        (
            Request {
                vm: "nope",
                ..request(&fleet, &seed_files, &good_token)
            },
            "no VM named `nope`",
        ),
        (
            Request {
                min_token_validity: Duration::from_secs(2 * 3600),
                ..request(&fleet, &seed_files, &good_token)
            },
            "(in 1h), sooner than the 2h a VM needs",
        ),
    ];
    for (req, expected) in cases {
        let err = render(&req, &Templates::default()).unwrap_err().to_string();
        assert!(err.contains(expected), "expected {expected:?} in:\n{err}");
        assert!(!err.contains(&good_token) && !err.contains(&wrong_sa));
    }
}

#[test]
fn templates_must_quote_every_value() {
    let (fleet, files, token) = (seed(), seed_files(), fake_token(SUBJECT));
    let req = request(&fleet, &files, &token);
    let user_data = |text: &str| Templates {
        user_data: text.to_owned(),
        ..Templates::default()
    };
    let cases: Vec<(Templates, &str)> = vec![
        (
            user_data("#cloud-config\nhostname: {{vm.name}}\n"),
            "template user-data.yaml.hbs:2:11: `{{vm.name}}` is not quoted",
        ),
        (
            user_data("#cloud-config\nhostname: {{{vm.name}}}\n"),
            "`{{vm.name}}` is not quoted",
        ),
        (
            user_data("#cloud-config\n{{#each files}}x: {{this}}\n{{/each}}"),
            "`{{this}}` is not quoted",
        ),
        (
            user_data("#cloud-config\nx: {{lookup vm 'name'}}\n"),
            "`{{lookup vm …}}` is not quoted",
        ),
        (
            user_data("#cloud-config\n{{> other}}\n"),
            "partials and decorators are not supported",
        ),
        (
            user_data("#cloud-config\nhostname: {{yaml vm.nmae}}\n"),
            "`yaml`: no value at `vm.nmae`",
        ),
        (
            user_data("#cloud-config\nx: {{yaml files}}\n"),
            "not a list",
        ),
        (
            user_data("#cloud-config\nx: {{yaml vm.name\n"),
            "template user-data.yaml.hbs",
        ),
        (
            user_data("hostname: {{yaml vm.name}}\n"),
            "must begin with the line `#cloud-config`",
        ),
        (
            user_data("#cloud-config\nhostname: {{yaml vm.name}} {{yaml vm.group}}: x\n"),
            "renders no #cloud-config document: invalid YAML",
        ),
        (
            Templates {
                join: "echo {{sidecar.url}}\n".into(),
                ..Templates::default()
            },
            "template join.sh.hbs:1:6: `{{sidecar.url}}` is not quoted",
        ),
    ];
    for (templates, expected) in cases {
        let err = render(&req, &templates).unwrap_err().to_string();
        assert!(err.contains(expected), "expected {expected:?} in:\n{err}");
    }
}

#[test]
fn a_user_template_can_add_to_the_document() {
    let (fleet, files, token) = (seed(), seed_files(), fake_token(SUBJECT));
    let templates = Templates {
        user_data: USER_DATA_TEMPLATE.replace(
            "runcmd:",
            "hostname: {{yaml vm.name}}\npackage_update: {{yaml sidecar.deb}}\nruncmd:",
        ),
        ..Templates::default()
    };
    let doc = render(&request(&fleet, &files, &token), &templates).unwrap();
    let doc = parsed(&doc.document);
    assert_eq!(doc["hostname"], "tester-1");
    assert_eq!(doc["package_update"], true);
}

#[test]
fn size_limits_per_provider() {
    let size = render_seed().document.len();
    assert!(size < 16_384, "the seed document fits AWS: {size}");
    for (provider, limit) in [
        (Provider::Aws, Some(16_384)),
        (Provider::Azure, Some(65_535)),
        (Provider::Gcp, Some(262_144)),
        (Provider::Openstack, Some(65_535)),
        (Provider::None, None),
    ] {
        assert_eq!(provider.limit(), limit, "{}", provider.name());
        if let Some(limit) = limit {
            assert!(check_size(provider, limit, false).is_ok());
            let err = check_size(provider, limit + 1, false).unwrap_err();
            // Whether gzip is the way out is a field; the flag is the command line's to name.
            assert!(!err.compressed && !err.to_string().contains("--"), "{err}");
            assert!(
                check_size(provider, limit + 1, true)
                    .unwrap_err()
                    .compressed
            );
        }
    }
}

#[test]
fn gzip_is_deterministic_and_round_trips() {
    let doc = render_seed().document;
    let packed = encode(&doc, true);
    assert_eq!(packed, encode(&doc, true));
    assert_eq!(
        &packed[..2],
        &[0x1f, 0x8b],
        "gzip magic: cloud-init detects it"
    );
    assert!(packed.len() < doc.len());
    let mut out = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&packed[..]), &mut out)
        .unwrap();
    assert_eq!(out, doc);
    assert_eq!(encode(&doc, false), doc.as_bytes());
}

const JOIN_FLEET: &str = include_str!("../../../fixtures/join/meshvm.yaml");

fn group_request<'a>(fleet: &'a CheckedFleet, group: &'a str) -> group::GroupRequest<'a> {
    group::GroupRequest {
        fleet,
        group,
        namespace: None,
        root_cert: Some(ROOT_CERT),
        broker_ca: ROOT_CERT,
        now: UtcDateTime::from_unix_timestamp(NOW as i64).unwrap(),
    }
}

/// One static document per broker-joined group: the same for every VM, no token in it; the
/// join script (snapshot) proves the VM by the group's method; token-joined groups and
/// unknown groups are refused.
#[test]
fn a_broker_joined_groups_user_data_is_static_and_holds_no_token() {
    let fleet = load_fleet_str(JOIN_FLEET, "meshvm.yaml".as_ref()).unwrap();
    for (group, proof) in [
        ("onprem", "/etc/meshvm-join/join-token"),
        ("web", "instance-identity/signature"),
        ("gce", "service-accounts/default/identity"),
        (
            "vmss",
            "attested/document?api-version=2020-09-01&nonce=$nonce",
        ),
    ] {
        let made = group::render_group(&group_request(&fleet, group), &Templates::default())
            .unwrap_or_else(|e| panic!("{group}: {e}"));
        let doc = parsed(&made.document);
        let files = doc["write_files"].as_array().unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
        assert!(!paths.contains(&TOKEN_PATH), "{group}: {paths:?}");
        for path in [
            group::JOIN_SCRIPT_PATH,
            group::JOIN_UNIT_PATH,
            group::BROKER_CA_PATH,
            "/var/lib/istio/envoy/cluster.env",
        ] {
            assert!(paths.contains(&path), "{group}: no {path}");
        }
        assert!(
            made.document
                .contains("systemctl enable meshvm-join.service")
        );
        // The script as the VM gets it.
        let script = files
            .iter()
            .find(|f| f["path"] == group::JOIN_SCRIPT_PATH)
            .unwrap();
        let script = decode_file(script);
        assert!(script.starts_with("#!/bin/sh\n"), "{group}");
        assert!(script.contains(proof), "{group}: {proof}");
        let syntax = std::process::Command::new("sh")
            .args(["-n", "-c", &script])
            .output()
            .unwrap();
        assert!(syntax.status.success(), "{group}: sh -n: {syntax:?}");
        if group == "gce" {
            insta::assert_snapshot!("broker_join_script_gce", script);
        }
        if group == "vmss" {
            // Azure's part, the smallest: one IMDS call with the nonce, the signature out of
            // its JSON.
            let azure: String = script
                .lines()
                .skip_while(|l| l.trim() != "azure)")
                .take_while(|l| l.trim() != ";;")
                .collect::<Vec<_>>()
                .join("\n");
            insta::assert_snapshot!("broker_join_script_azure_part", azure);
        }
        // Same fleet, same bytes.
        let again =
            group::render_group(&group_request(&fleet, group), &Templates::default()).unwrap();
        assert_eq!(again.document, made.document);
    }
    let refused = |group| {
        group::render_group(&group_request(&fleet, group), &Templates::default())
            .unwrap_err()
            .to_string()
    };
    assert!(refused("classic").contains("joins by `token`"));
    assert!(refused("nope").contains("no workload group named `nope`"));
    let mut bad = group_request(&fleet, "onprem");
    bad.broker_ca = "not a certificate";
    assert!(
        group::render_group(&bad, &Templates::default())
            .unwrap_err()
            .to_string()
            .contains("join broker's CA")
    );
}

fn decode_file(f: &Value) -> String {
    let raw = BASE64.decode(f["content"].as_str().unwrap()).unwrap();
    let bytes = if f["encoding"] == "gz+b64" {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&raw[..]), &mut out).unwrap();
        out
    } else {
        raw
    };
    String::from_utf8(bytes).unwrap()
}
