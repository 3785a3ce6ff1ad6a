//! `meshvm cloud-init`: the user-data document, its checks and its limits. (Checked by
//! cloud-init itself and booted in systemd-nspawn in the system tier.)

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::support::user_data::*;
use crate::support::{fixture, meshvm, require_tool, run};

#[test]
fn gzip_user_data_is_the_same_document_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let token = good_token();
    let plain = dir.path().join("plain");
    let packed = dir.path().join("packed");
    assert_ok(&run(cloud_init(dir.path(), &seed_fleet(), &token)
        .arg("-o")
        .arg(&plain)));
    let out = run(cloud_init(dir.path(), &seed_fleet(), &token)
        .args(["--gzip", "-o"])
        .arg(&packed));
    assert_ok(&out);
    assert!(out.stderr.contains(" bytes (gzip)"), "{}", out.stderr);
    let bytes = std::fs::read(&packed).unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
    assert_eq!(gunzip(&bytes), std::fs::read_to_string(&plain).unwrap());
    assert_eq!(mode(&packed), 0o600);
}

#[test]
fn token_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = meshvm()
        .args(["cloud-init", VM, "--token-stdin", "-f"])
        .arg(seed_fleet())
        .arg("--root-cert")
        .arg(root_cert())
        .arg("-o")
        .arg(dir.path().join("ud"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let token = good_token();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), token.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let document = std::fs::read_to_string(dir.path().join("ud")).unwrap();
    assert!(document.contains("write_files:"));
}

#[test]
fn refuses_bad_tokens_without_showing_them() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            token_with(json!({"aud": ["https://kubernetes.default.svc"]})),
            "audience is `https://kubernetes.default.svc`, not `istio-ca`",
        ),
        (
            token_with(json!({"sub": "system:serviceaccount:vm-apps:default"})),
            "not for the VM's ServiceAccount `system:serviceaccount:vm-apps:tester`",
        ),
        (
            token_with(json!({"exp": now() - 60})),
            "the token expired at ",
        ),
        (
            token_with(json!({"exp": now() + 300})),
            "sooner than the 15m a VM needs to boot and use it",
        ),
        ("not-a-token".to_owned(), "the token is not a JWT"),
    ];
    for (token, expected) in cases {
        let output = dir.path().join("ud");
        let out = run(cloud_init(dir.path(), &seed_fleet(), &token)
            .arg("-o")
            .arg(&output));
        assert_eq!(out.code, 1, "{expected}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{expected}:\n{}", out.stderr);
        assert!(
            out.stderr
                .contains("kubectl create token tester -n vm-apps --audience istio-ca"),
            "{}",
            out.stderr
        );
        assert!(
            !out.stderr.contains(&token),
            "the token leaks:\n{}",
            out.stderr
        );
        assert!(out.stdout.is_empty());
        assert!(!output.exists(), "nothing written");
    }
    // --min-token-validity lowers the bar.
    let short = token_with(json!({"exp": now() + 300}));
    assert_ok(&run(
        cloud_init(dir.path(), &seed_fleet(), &short).args(["--min-token-validity", "2m"])
    ));
}

#[test]
fn root_certificate_checks() {
    let dir = tempfile::tempdir().unwrap();
    let token = good_token();
    let out = run(
        cloud_init_without_cert(VM, dir.path(), &seed_fleet(), &token)
            .arg("--root-cert")
            .arg(fixture("certs/test-leaf-cert.pem")),
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("is not a CA certificate"),
        "{}",
        out.stderr
    );

    let out = run(&mut cloud_init_without_cert(
        VM,
        dir.path(),
        &seed_fleet(),
        &token,
    ));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("the VM needs the mesh's root certificate"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--root-cert"), "{}", out.stderr);
}

#[test]
fn refuses_to_write_into_a_git_work_tree() {
    require_tool("git", "apt-get install git");
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("vms")).unwrap();
    assert!(
        Command::new("git")
            .arg("init")
            .arg("-q")
            .arg(&repo)
            .status()
            .unwrap()
            .success()
    );
    let output = repo.join("vms/user-data");
    let out = run(cloud_init(dir.path(), &seed_fleet(), &good_token())
        .arg("-o")
        .arg(&output));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("inside the Git work tree"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--allow-in-repo"), "{}", out.stderr);
    assert!(!output.exists());
    let out = run(cloud_init(dir.path(), &seed_fleet(), &good_token())
        .args(["--allow-in-repo", "-o"])
        .arg(&output));
    assert_ok(&out);
    assert_eq!(mode(&output), 0o600);
}

#[test]
fn size_limits_per_provider_suggest_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let templates = dir.path().join("templates");
    std::fs::create_dir(&templates).unwrap();
    // A document over AWS's 16 KiB: the default one with 20 KB of comments.
    let padding =
        "# padding for the size test ..........................................\n".repeat(300);
    std::fs::write(
        templates.join("user-data.yaml.hbs"),
        format!("{}{padding}", meshvm::cloudinit::USER_DATA_TEMPLATE),
    )
    .unwrap();
    let token = good_token();
    let with_templates = |extra: &[&str]| {
        let mut cmd = cloud_init(dir.path(), &seed_fleet(), &token);
        cmd.arg("--template").arg(&templates).args(extra);
        run(cmd.arg("-o").arg(dir.path().join("ud")))
    };
    let out = with_templates(&["--provider", "aws"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("over aws's limit of 16384 bytes"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("add --gzip"), "{}", out.stderr);
    assert_ok(&with_templates(&["--provider", "aws", "--gzip"]));
    assert_ok(&with_templates(&["--provider", "azure"]));
    assert_ok(&with_templates(&[]));
}

#[test]
fn template_directory_overrides_and_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let templates = dir.path().join("templates");
    std::fs::create_dir(&templates).unwrap();
    let token = good_token();
    let render = |templates: &Path| {
        run(cloud_init(dir.path(), &seed_fleet(), &token)
            .arg("--template")
            .arg(templates))
    };
    std::fs::write(
        templates.join("user-data.yaml.hbs"),
        meshvm::cloudinit::USER_DATA_TEMPLATE
            .replace("runcmd:", "hostname: {{yaml vm.name}}\nruncmd:"),
    )
    .unwrap();
    let out = render(&templates);
    assert_ok(&out);
    assert!(
        out.stdout.contains("\nhostname: 'tester-1'\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("apt-get install"),
        "the embedded join.sh.hbs stays"
    );

    std::fs::write(templates.join("join.sh.hbs"), "echo {{vm.name}}\n").unwrap();
    let out = render(&templates);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("template join.sh.hbs:1:6: `{{vm.name}}` is not quoted"),
        "{}",
        out.stderr
    );

    std::fs::remove_file(templates.join("join.sh.hbs")).unwrap();
    std::fs::write(templates.join("user-data.hbs"), "").unwrap();
    let out = render(&templates);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("\"user-data.hbs\" is not a meshvm template"),
        "{}",
        out.stderr
    );
}

#[test]
fn token_source_is_required_and_single() {
    let out = run(meshvm().args(["cloud-init", VM, "-f"]).arg(seed_fleet()));
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = run(meshvm()
        .args(["cloud-init", VM, "--token-stdin", "--token-file", "x", "-f"])
        .arg(seed_fleet()));
    assert_eq!(out.code, 2, "{}", out.stderr);
}

#[test]
fn all_and_group_write_one_private_user_data_per_vm_with_tokens_from_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = fixture("fleets/single-network/meshvm.yaml");
    let source = meshvm::spec::load_fleet(&fleet).unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    for (group, _) in source.fleet.vms() {
        let subject = format!(
            "system:serviceaccount:{}:{}",
            group.namespace, group.service_account
        );
        std::fs::write(
            tokens.join(format!("{}.{}", group.namespace, group.service_account)),
            token_with(json!({ "sub": subject })),
        )
        .unwrap();
    }
    let many = |extra: &[&str], out: &Path| {
        run(meshvm()
            .arg("cloud-init")
            .args(extra)
            .arg("-f")
            .arg(&fleet)
            .arg("--token-dir")
            .arg(&tokens)
            .arg("-o")
            .arg(out))
    };
    let out = dir.path().join("all");
    let r = many(&["--all"], &out);
    assert_ok(&r);
    let names: Vec<&str> = source.fleet.vms().map(|(_, vm)| vm.name.as_str()).collect();
    assert!(names.len() >= 2, "{names:?}");
    for name in &names {
        let file = out.join(format!("{name}.user-data"));
        assert_eq!(mode(&file), 0o600, "{name}");
        assert!(
            std::fs::read_to_string(&file)
                .unwrap()
                .starts_with("#cloud-config")
        );
    }

    let (first_group, _) = source.fleet.vms().next().unwrap();
    let out = dir.path().join("group");
    assert_ok(&many(&["--group", &first_group.name], &out));
    let written = std::fs::read_dir(&out).unwrap().count();
    let in_group = source
        .fleet
        .vms()
        .filter(|(g, _)| g.name == first_group.name)
        .count();
    assert_eq!(written, in_group);

    // A missing token: all or nothing.
    let first = std::fs::read_dir(&tokens)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::remove_file(&first).unwrap();
    let out = dir.path().join("partial");
    let r = many(&["--all"], &out);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("nothing written"), "{}", r.stderr);
    assert!(!out.exists());

    // Inside a Git work tree: refused.
    std::fs::create_dir_all(dir.path().join("repo/.git")).unwrap();
    let r = many(&["--all"], &dir.path().join("repo/user-data"));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("Git work tree"), "{}", r.stderr);
}

#[test]
fn print_template_prints_the_embedded_templates() {
    for (name, file) in [
        ("user-data.yaml.hbs", "user-data.yaml.hbs"),
        ("join.sh.hbs", "join.sh.hbs"),
    ] {
        let r = run(meshvm().args(["cloud-init", "--print-template", name]));
        assert_eq!(r.code, 0, "{}", r.stderr);
        let embedded = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../core/src/cloudinit/templates")
                .join(file),
        )
        .unwrap();
        assert_eq!(r.stdout, embedded, "{name}");
    }
}
