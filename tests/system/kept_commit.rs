//! A commit made locally and not pushed yet (by a sync without --push, or one whose push
//! failed) is named, with how to push it, by every later failure to push it: here the
//! refusals only a real server gives, a wrong credential and a wrong host key.

use crate::servers::{HttpGit, Sshd};
use crate::support::gitops::Scratch;
use crate::support::{Run, bare_repo, run};

fn assert_kept(r: &Run, cause: &str) {
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains(cause), "{}", r.stderr);
    assert!(
        r.stderr.contains("is kept in")
            && r.stderr
                .contains("hint: fix the cause and run the same `meshvm gitops sync --push`"),
        "the kept commit and how to push it:\n{}",
        r.stderr
    );
}

fn assert_ok(r: &Run) {
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
}

#[test]
fn a_refused_credential_names_the_commit_kept_by_an_earlier_sync() {
    const TOKEN: &str = "s3cr3t-t0ken-value";
    let s = Scratch::new();
    bare_repo(&s.srv(), "mesh.git");
    let http = HttpGit::start(&s.srv(), Some(TOKEN));
    let url = http.url("mesh.git");
    let sync = |push: bool, token: &str| {
        let mut cmd = s.meshvm(&["sync", "--repo", &url]);
        if push {
            cmd.arg("--push");
        }
        run(cmd.env("MESHVM_GIT_TOKEN", token))
    };
    s.fleet(&[("tester-1", "10.0.0.11")]);
    assert_ok(&sync(true, TOKEN));
    s.fleet(&[("tester-1", "10.0.0.11"), ("tester-2", "10.0.0.12")]);
    assert_ok(&sync(false, TOKEN));
    let r = sync(true, "wrong-token-value");
    assert_kept(&r, "authentication");
    assert!(!r.stderr.contains("wrong-token-value"), "{}", r.stderr);
}

#[test]
fn a_wrong_host_key_names_the_commit_kept_by_an_earlier_sync() {
    let s = Scratch::new();
    let server = bare_repo(&s.srv(), "mesh.git");
    let sshd = Sshd::start("key passphrase");
    let url = sshd.url(&server);
    let key = sshd.client_key.to_str().unwrap().to_owned();
    let sync = |push: bool, pin: Option<&str>| {
        let mut cmd = s.meshvm(&["sync", "--repo", &url]);
        if push {
            cmd.arg("--push");
        }
        if let Some(pin) = pin {
            cmd.args(["--ssh-host-fingerprint", pin]);
        }
        run(cmd
            .env("MESHVM_SSH_KEY", &key)
            .env("MESHVM_SSH_KEY_PASSPHRASE", "key passphrase"))
    };
    let pin = Some(sshd.host_fingerprint.as_str());
    s.fleet(&[("tester-1", "10.0.0.11")]);
    assert_ok(&sync(true, pin));
    s.fleet(&[("tester-1", "10.0.0.11"), ("tester-2", "10.0.0.12")]);
    assert_ok(&sync(false, pin));

    let wrong = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    assert_kept(&sync(true, Some(wrong)), "not the pinned fingerprint");
    // Unknown (no pin, no known_hosts): the hint says how to pin the offered key.
    let r = sync(true, None);
    assert_kept(&r, "not in the known hosts");
    assert!(
        r.stderr.contains(&format!(
            "hint: once checked, pin it with --ssh-host-fingerprint {}",
            sshd.host_fingerprint
        )),
        "{}",
        r.stderr
    );
}
