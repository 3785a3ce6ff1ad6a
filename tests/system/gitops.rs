//! `meshvm gitops sync` and `gitops diff` against real servers on 127.0.0.1: git daemon,
//! smart HTTP through git http-backend, and OpenSSH's sshd.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use crate::servers::{GitDaemon, HttpGit, SshAgent, Sshd, new_key};
use crate::support::gitops::{OWNED, Scratch, files, human_push, ok};
use crate::support::{bare_repo, files_below, git, meshvm, run};

/// A bare `mesh.git` served by `git daemon`: its path, the daemon (serving until
/// dropped) and its git:// URL.
fn served_repo(s: &Scratch) -> (PathBuf, GitDaemon, String) {
    let server = bare_repo(&s.srv(), "mesh.git");
    let daemon = GitDaemon::start(&s.srv());
    let url = daemon.url("mesh.git");
    (server, daemon, url)
}

#[test]
fn git_daemon_first_sync_no_op_add_remove_and_a_human_commit_meanwhile() {
    let s = Scratch::new();
    let (server, _daemon, url) = served_repo(&s);

    // First sync: commit and push; the default identity (no git config in HOME).
    s.fleet(&[("tester-1", "10.0.0.11")]);
    let r = run(&mut s.meshvm(&["sync", "--push", "--repo", &url]));
    ok(&r);
    assert!(r.stdout.contains("committed "), "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!("pushed to {url} main")),
        "{}",
        r.stdout
    );
    let tree = files(&server, "main");
    assert!(
        tree.iter()
            .any(|p| p.starts_with(&format!("{OWNED}/workloads/vm-apps/tester/vms/tester-1/"))),
        "{tree:?}"
    );
    assert!(!tree.iter().any(|p| p.contains("istio-token")), "{tree:?}");
    let log = git(&server, &["log", "-1", "--format=%an <%ae>%n%B"]);
    assert!(log.starts_with("meshvm <meshvm@localhost>\n"), "{log}");
    assert!(log.contains("Meshvm-Fleet-Sha256: "), "{log}");
    let first = git(&server, &["rev-parse", "main"]);

    // The committed subtree is exactly what `meshvm render` writes.
    let rendered = s.path().join("rendered");
    let r = run(meshvm()
        .args(["render", "-f"])
        .arg(s.path().join("meshvm.yaml"))
        .arg("-o")
        .arg(&rendered));
    ok(&r);
    let mut want: Vec<String> = files_below(&rendered)
        .iter()
        // render -o's record of what it wrote is not part of the tree.
        .filter(|p| !p.ends_with(".meshvm-files"))
        .map(|p| format!("{OWNED}/{}", p.strip_prefix(&rendered).unwrap().display()))
        .collect();
    want.sort();
    assert_eq!(tree, want);
    for path in &want {
        let committed = git(&server, &["show", &format!("main:{path}")]);
        let on_disk = fs::read_to_string(rendered.join(&path[OWNED.len() + 1..])).unwrap();
        assert_eq!(committed, on_disk, "{path}");
    }

    // No-op: no commit, and says so.
    let r = run(&mut s.meshvm(&["sync", "--push", "--repo", &url]));
    ok(&r);
    assert!(r.stdout.contains("up to date"), "{}", r.stdout);
    assert!(r.stdout.contains("no commit"), "{}", r.stdout);
    assert_eq!(git(&server, &["rev-parse", "main"]), first);

    // Add a VM: the diff says so (exit 4), then sync adds exactly its files.
    s.fleet(&[("tester-1", "10.0.0.11"), ("tester-2", "10.0.0.12")]);
    let r = run(&mut s.meshvm(&["diff", "--repo", &url, "--output", "json"]));
    assert_eq!(r.code, 4, "{}", r.stderr);
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(plan["changes"], true);
    assert_eq!(plan["vms"]["added"][0]["name"], "tester-2");
    assert_eq!(plan["vms"]["removed"].as_array().unwrap().len(), 0);
    ok(&run(&mut s.meshvm(&["sync", "--push", "--repo", &url])));

    // A human pushes a change outside the owned subtree meanwhile (the cache is stale).
    human_push(&url, &s.path().join("human"), |dir| {
        fs::write(dir.join("NOTES.md"), "kept\n").unwrap();
    });
    let human_tip = git(&server, &["rev-parse", "main"]);

    // Remove a VM: its files go, the human's file stays, and meshvm's commit is on top.
    s.fleet(&[("tester-2", "10.0.0.12")]);
    let r = run(&mut s.meshvm(&["sync", "--push", "--repo", &url]));
    ok(&r);
    let tree = files(&server, "main");
    assert!(tree.contains(&"NOTES.md".to_owned()), "{tree:?}");
    assert!(!tree.iter().any(|p| p.contains("/tester-1/")), "{tree:?}");
    assert!(tree.iter().any(|p| p.contains("/tester-2/")), "{tree:?}");
    assert_eq!(git(&server, &["rev-parse", "main^"]), human_tip);
    let subject = git(&server, &["log", "-1", "--format=%s"]);
    assert_eq!(
        subject.trim(),
        "meshvm: sync clusters/cluster1: VMs 1 removed"
    );
}

#[test]
fn hand_edits_are_refused_with_their_paths_until_forced() {
    let s = Scratch::new();
    let (server, _daemon, url) = served_repo(&s);
    s.fleet(&[("tester-1", "10.0.0.11")]);
    ok(&run(&mut s.meshvm(&["sync", "--push", "--repo", &url])));

    let edited = format!("{OWNED}/workloads/vm-apps/tester/vms/tester-1/workloadentry.yaml");
    human_push(&url, &s.path().join("human"), |dir| {
        fs::write(dir.join(&edited), "address: 10.9.9.9 # hotfix\n").unwrap();
    });
    let before = git(&server, &["rev-parse", "main"]);

    s.fleet(&[("tester-1", "10.0.0.11"), ("tester-2", "10.0.0.12")]);
    let r = run(&mut s.meshvm(&["sync", "--push", "--repo", &url]));
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains(&edited), "{}", r.stderr);
    assert!(r.stderr.contains("--force"), "{}", r.stderr);
    assert_eq!(
        git(&server, &["rev-parse", "main"]),
        before,
        "nothing pushed"
    );

    // The plan shows it too; the dry run refuses the same way.
    let r = run(&mut s.meshvm(&["diff", "--repo", &url]));
    assert_eq!(r.code, 4);
    assert!(r.stdout.contains(&format!("! {edited}")), "{}", r.stdout);
    let r = run(&mut s.meshvm(&["sync", "--dry-run", "--push", "--repo", &url]));
    assert_eq!(r.code, 1, "{}", r.stderr);

    let r = run(&mut s.meshvm(&["sync", "--push", "--force", "--repo", &url]));
    ok(&r);
    let content = git(&server, &["show", &format!("main:{edited}")]);
    assert!(!content.contains("hotfix"), "{content}");
}

#[test]
fn a_pre_receive_hook_rejection_is_an_error_and_keeps_the_local_commit() {
    let s = Scratch::new();
    let (server, _daemon, url) = served_repo(&s);
    let hook = server.join("hooks/pre-receive");
    fs::write(
        &hook,
        "#!/bin/sh\necho run >> \"$GIT_DIR/hook-runs\"\necho 'policy: changes need a ticket' >&2\nexit 1\n",
    )
    .unwrap();
    fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    s.fleet(&[("tester-1", "10.0.0.11")]);

    let r = run(&mut s.meshvm(&["sync", "--push", "--repo", &url]));
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("rejected refs/heads/main"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("pre-receive hook declined"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("policy: changes need a ticket"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("is kept in"), "{}", r.stderr);
    assert_eq!(
        fs::read_to_string(server.join("hook-runs"))
            .unwrap()
            .lines()
            .count(),
        1,
        "a rejection is not retried"
    );
    assert!(
        git(&server, &["branch", "--list"]).is_empty(),
        "nothing landed"
    );

    // Once the hook is gone, the same command pushes the kept commit.
    fs::remove_file(&hook).unwrap();
    let r = run(&mut s.meshvm(&["sync", "--push", "--repo", &url]));
    ok(&r);
    assert!(r.stdout.contains("pushed to"), "{}", r.stdout);
    assert!(
        files(&server, "main")
            .iter()
            .any(|p| p.contains("/tester-1/"))
    );
}

#[test]
fn a_push_that_loses_a_race_fetches_rebuilds_and_retries() {
    let s = Scratch::new();
    let (server, _daemon, url) = served_repo(&s);
    s.fleet(&[("tester-1", "10.0.0.11")]);
    ok(&run(&mut s.meshvm(&["sync", "--push", "--repo", &url])));

    // On the next push, a "human" lands a commit first (from inside the server, between the
    // advertisement meshvm saw and its ref update), so meshvm's update is refused once.
    let hook = server.join("hooks/pre-receive");
    fs::write(
        &hook,
        r#"#!/bin/sh
[ -e "$GIT_DIR/raced" ] && exit 0
touch "$GIT_DIR/raced"
unset GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES
tip=$(git rev-parse refs/heads/main)
blob=$(echo "from the race" | git hash-object -w --stdin)
tree=$( (git ls-tree "$tip"; printf '100644 blob %s\tRACE.md\n' "$blob") | git mktree)
new=$(GIT_AUTHOR_NAME=H GIT_AUTHOR_EMAIL=h@x GIT_COMMITTER_NAME=H GIT_COMMITTER_EMAIL=h@x git commit-tree "$tree" -p "$tip" -m race)
git update-ref refs/heads/main "$new" "$tip"
exit 0
"#,
    )
    .unwrap();
    fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    s.fleet(&[("tester-1", "10.0.0.11"), ("tester-2", "10.0.0.12")]);
    let r = run(&mut s.meshvm(&["sync", "--push", "--repo", &url]));
    ok(&r);
    assert!(r.stderr.contains("the remote branch moved"), "{}", r.stderr);
    assert!(r.stdout.contains("after 2 attempts"), "{}", r.stdout);
    let tree = files(&server, "main");
    assert!(
        tree.contains(&"RACE.md".to_owned()),
        "the racing commit survives: {tree:?}"
    );
    assert!(tree.iter().any(|p| p.contains("/tester-2/")), "{tree:?}");
    let parents = git(&server, &["log", "-1", "--format=%s", "main^"]);
    assert_eq!(
        parents.trim(),
        "race",
        "meshvm's commit sits on the racer's"
    );
}

#[test]
fn smart_http_with_a_token_and_wrong_credentials() {
    const TOKEN: &str = "s3cr3t-t0ken-value";
    let s = Scratch::new();
    let server = bare_repo(&s.srv(), "mesh.git");
    let http = HttpGit::start(&s.srv(), Some(TOKEN));
    let url = http.url("mesh.git");
    s.fleet(&[("tester-1", "10.0.0.11")]);

    let r = run(s
        .meshvm(&["sync", "--push", "--repo", &url])
        .env("MESHVM_GIT_TOKEN", TOKEN));
    ok(&r);
    assert!(
        files(&server, "main")
            .iter()
            .any(|p| p.contains("/tester-1/"))
    );

    // Wrong token: a clear error, exit 3, no retry loop, and the token is nowhere.
    http.unauthorized
        .store(0, std::sync::atomic::Ordering::SeqCst);
    s.fleet(&[("tester-1", "10.0.0.11"), ("tester-2", "10.0.0.12")]);
    let wrong = "wrong-token-value";
    let r = run(s
        .meshvm(&["sync", "--push", "--repo", &url])
        .env("MESHVM_GIT_TOKEN", wrong));
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("authentication"), "{}", r.stderr);
    assert!(r.stderr.contains("MESHVM_GIT_TOKEN"), "{}", r.stderr);
    assert!(!r.stderr.contains(wrong) && !r.stdout.contains(wrong));
    let refusals = http.unauthorized.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (1..=3).contains(&refusals),
        "{refusals} 401s: no retry loop"
    );

    // No credentials at all: says what to set.
    let r = run(&mut s.meshvm(&["sync", "--push", "--repo", &url]));
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("no credentials"), "{}", r.stderr);

    // A git credential helper (in the user's git config) can supply the token instead.
    let store = s.path().join("git-credentials");
    fs::write(
        &store,
        format!("http://meshvm:{TOKEN}@127.0.0.1:{}\n", http.port),
    )
    .unwrap();
    fs::write(
        s.home().join(".gitconfig"),
        format!(
            "[credential]\n\thelper = store --file={}\n",
            store.display()
        ),
    )
    .unwrap();
    let r = run(&mut s.meshvm(&["sync", "--push", "--repo", &url]));
    ok(&r);
    assert!(
        files(&server, "main")
            .iter()
            .any(|p| p.contains("/tester-2/"))
    );
    fs::remove_file(s.home().join(".gitconfig")).unwrap();

    // The token never reached a URL or a file.
    for line in http.seen.lock().unwrap().iter() {
        assert!(!line.contains(TOKEN), "{line}");
    }
    for entry in files_below(&s.cache()) {
        if let Ok(text) = fs::read_to_string(&entry) {
            assert!(!text.contains(TOKEN), "{}", entry.display());
        }
    }
    // A token in the URL is refused outright.
    let r = run(&mut s.meshvm(&[
        "sync",
        "--repo",
        &format!("http://u:{TOKEN}@127.0.0.1:{}/mesh.git", http.port),
    ]));
    assert_eq!(r.code, 1);
    assert!(!r.stderr.contains(TOKEN), "{}", r.stderr);
}

#[test]
fn ssh_with_an_encrypted_key_a_pinned_host_key_and_known_hosts() {
    let s = Scratch::new();
    let server = bare_repo(&s.srv(), "mesh.git");
    let sshd = Sshd::start("key passphrase");
    let url = sshd.url(&server);
    s.fleet(&[("tester-1", "10.0.0.11")]);
    let key = sshd.client_key.to_str().unwrap().to_owned();
    let with_key = |cmd: &mut Command| {
        cmd.env("MESHVM_SSH_KEY", &key)
            .env("MESHVM_SSH_KEY_PASSPHRASE", "key passphrase");
    };

    // Pinned fingerprint: works.
    let mut cmd = s.meshvm(&[
        "sync",
        "--push",
        "--repo",
        &url,
        "--ssh-host-fingerprint",
        &sshd.host_fingerprint,
    ]);
    with_key(&mut cmd);
    let r = run(&mut cmd);
    assert_eq!(
        r.code,
        0,
        "{}\n{}\nsshd:\n{}",
        r.stdout,
        r.stderr,
        sshd.log()
    );
    assert!(
        files(&server, "main")
            .iter()
            .any(|p| p.contains("/tester-1/"))
    );

    // Unknown host (HOME has no known_hosts): refused, with the fingerprint to check.
    s.fleet(&[("tester-1", "10.0.0.11"), ("tester-2", "10.0.0.12")]);
    let mut cmd = s.meshvm(&["sync", "--push", "--repo", &url]);
    with_key(&mut cmd);
    let r = run(&mut cmd);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("not in the known hosts"), "{}", r.stderr);
    assert!(r.stderr.contains(&sshd.host_fingerprint), "{}", r.stderr);

    // A wrong pin: refused.
    let mut cmd = s.meshvm(&[
        "sync",
        "--push",
        "--repo",
        &url,
        "--ssh-host-fingerprint",
        "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ]);
    with_key(&mut cmd);
    let r = run(&mut cmd);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("not the pinned fingerprint"),
        "{}",
        r.stderr
    );

    // known_hosts: works.
    let kh = s.path().join("known_hosts");
    fs::write(&kh, &sshd.known_hosts_line).unwrap();
    let push = || {
        let known_hosts = kh.to_str().unwrap();
        s.meshvm(&[
            "sync",
            "--push",
            "--repo",
            &url,
            "--known-hosts",
            known_hosts,
            // Each step below replaces the fleet's VMs: not a mistake here.
            "--allow-mass-removal",
        ])
    };
    let mut cmd = push();
    with_key(&mut cmd);
    let r = run(&mut cmd);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, sshd.log());
    assert!(
        files(&server, "main")
            .iter()
            .any(|p| p.contains("/tester-2/"))
    );

    // An ssh-agent holding an authorized key, and no key file.
    let agent_key = new_key(s.path(), "agent_key", "");
    sshd.authorize(&agent_key);
    let agent = SshAgent::start(s.path(), &[&agent_key]);
    s.fleet(&[("tester-3", "10.0.0.13")]);
    let r = run(push().env("SSH_AUTH_SOCK", &agent.socket));
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, sshd.log());
    assert!(
        files(&server, "main")
            .iter()
            .any(|p| p.contains("/tester-3/"))
    );

    // A key the server does not know: an authentication error, not retried.
    let stranger = new_key(s.path(), "stranger", "");
    s.fleet(&[("tester-2", "10.0.0.12")]);
    let r = run(push().env("MESHVM_SSH_KEY", &stranger));
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("authentication"), "{}", r.stderr);
    assert!(r.stderr.contains("MESHVM_SSH_KEY"), "{}", r.stderr);
}

#[test]
fn large_fleets_show_progress_on_a_terminal_only_and_never_when_quiet() {
    let s = Scratch::new();
    let vms: Vec<(String, String)> = (0..1200)
        .map(|i| (format!("vm-{i}"), format!("10.3.{}.{}", i / 250, i % 250)))
        .collect();
    let refs: Vec<(&str, &str)> = vms.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    s.fleet(&refs);
    let r = run(&mut s.meshvm(&["sync", "-q", "--repo", "quiet.git"]));
    ok(&r);
    assert_eq!(r.stderr, "", "-q prints nothing but errors");
    let r = run(&mut s.meshvm(&["sync", "--repo", "loud.git"]));
    ok(&r);
    // stderr is not a terminal here (a log, a CI job): no progress at all.
    assert!(!r.stderr.contains("writing files"), "{}", r.stderr);
    assert!(!r.stderr.contains('\r'), "{}", r.stderr);
    assert!(r.stdout.contains("1200 VMs added"), "{}", r.stdout);

    // On a terminal (a pseudo-terminal from util-linux's `script`): a bar redrawn in place.
    let r = crate::support::on_a_terminal(&s.meshvm(&["sync", "--repo", "tty.git"]), s.path());
    ok(&r);
    assert!(r.stdout.contains("writing files ["), "{}", r.stdout);
    // The pack's compression, after the files are listed, has a bar of its own.
    assert!(r.stdout.contains("packing ["), "{}", r.stdout);
    assert!(
        r.stdout.contains('\r') && r.stdout.contains('#'),
        "{}",
        r.stdout
    );

    // `render -o DIR` of the same fleet: the same bar on a terminal, nothing in a log.
    let render = |dir: &str| {
        let mut cmd = meshvm();
        cmd.current_dir(s.path())
            .args(["render", "-f", "meshvm.yaml", "-o", dir]);
        cmd
    };
    let r = run(&mut render("out-log"));
    ok(&r);
    // Off a terminal: the fleet's warnings, no bar.
    assert!(!r.stderr.contains("writing files"), "{}", r.stderr);
    assert!(!r.stderr.contains('\r'), "{}", r.stderr);
    assert!(r.stdout.contains("rendered "), "{}", r.stdout);
    let r = crate::support::on_a_terminal(&render("out-tty"), s.path());
    ok(&r);
    let bar = r.stdout.find("writing files [").expect(&r.stdout);
    assert!(
        r.stdout[bar..].contains('\r') || r.stdout[..bar].contains('\r'),
        "redrawn in place: {}",
        r.stdout
    );
    let total: usize = r.stdout[r.stdout.find("rendered ").expect(&r.stdout) + 9..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect(&r.stdout);
    assert!(
        r.stdout.contains(&format!("] {total}/{total}")),
        "the bar ends at every file ({total}): {}",
        r.stdout
    );
}

/// Source Hydrator with GitOps Promoter (`gitops.hydrator.promoter`): the sync pushes to
/// `main-next` over git daemon and never to `main`, which Promoter moves (here a human merge);
/// a new dry commit is pushed to `main-next` again, an unchanged one is not.
#[test]
fn promoter_mode_pushes_the_next_branch_over_git_daemon_and_leaves_the_active_one() {
    let s = Scratch::new();
    let (server, _daemon, url) = served_repo(&s);
    let dry = s.path().join("dry");
    fs::create_dir_all(&dry).unwrap();
    git(&dry, &["init", "-q", "-b", "main"]);
    let fleet = dry.join("meshvm.yaml");
    fs::copy(crate::support::fixture("hydrator/meshvm.yaml"), &fleet).unwrap();
    git(&dry, &["add", "-A"]);
    git(&dry, &["commit", "-q", "-m", "fleet: first"]);
    let sync = || {
        run(meshvm()
            .current_dir(s.path())
            .env("HOME", s.home())
            .env("MESHVM_CACHE_DIR", s.cache())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .args(["gitops", "sync", "-q", "--push", "--repo", &url, "-f"])
            .arg(&fleet))
    };
    let dry_sha = |rev: &str| {
        let text = git(
            &server,
            &["show", &format!("{rev}:{OWNED}/hydrator.metadata")],
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["drySha"].as_str().unwrap().to_owned()
    };
    ok(&sync());
    let first = git(&server, &["rev-parse", "main-next"]).trim().to_owned();
    assert_eq!(
        dry_sha("main-next"),
        git(&dry, &["rev-parse", "HEAD"]).trim()
    );
    assert!(
        git(&server, &["branch", "--list", "main"])
            .trim()
            .is_empty()
    );

    // Promoter merges the proposed branch into the active one.
    git(&server, &["branch", "main", "main-next"]);
    ok(&sync());
    assert_eq!(
        git(&server, &["rev-parse", "main-next"]).trim(),
        first,
        "unchanged: no push"
    );

    git(
        &dry,
        &["commit", "-q", "--allow-empty", "-m", "fleet: next"],
    );
    ok(&sync());
    let second = git(&server, &["rev-parse", "main-next"]).trim().to_owned();
    assert_ne!(second, first);
    assert_eq!(
        dry_sha("main-next"),
        git(&dry, &["rev-parse", "HEAD"]).trim()
    );
    assert_eq!(
        git(&server, &["rev-parse", "main"]).trim(),
        first,
        "main is Promoter's"
    );
}
