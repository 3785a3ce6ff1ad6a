//! `meshvm gitops sync` on bad days: killed with SIGKILL at random points, two at once, a full
//! disk, a read-only repository, and a remote that drops the connection in the middle of a
//! push. Each time the repository stays valid (`git fsck --full`), the error says what
//! happened, and the next sync completes with the tree `meshvm render` writes.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::servers::GitDaemon;
use crate::support::{Run, bare_repo, git, meshvm, require_tool, run, snapshot};

const OWNED: &str = "clusters/cluster1";

/// A scratch area with a HOME of its own (no git config, no credentials) and a cache dir.
struct Scratch {
    tmp: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        require_tool("git", "apt-get install git");
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("home")).unwrap();
        Scratch { tmp }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// Writes a synthetic fleet of `vms` VMs in mesh `mesh_id` as `name`: a new mesh ID
    /// changes every VM's files, so a sync between two of them rewrites the whole tree.
    fn fleet(&self, name: &str, vms: usize, mesh_id: &str) -> PathBuf {
        let mut fleet = meshvm::synthetic::fleet(vms);
        fleet.mesh.mesh_id = mesh_id.to_owned();
        let path = self.path(name);
        std::fs::write(&path, meshvm::k8s::yaml::to_string(&fleet)).unwrap();
        path
    }

    /// `meshvm gitops sync -f FLEET --repo REPO <extra>`, quiet, with this scratch's HOME.
    fn sync(&self, fleet: &Path, repo: &str, extra: &[&str]) -> Command {
        let mut cmd = meshvm();
        cmd.current_dir(self.tmp.path())
            .env("HOME", self.path("home"))
            .env("MESHVM_CACHE_DIR", self.path("cache"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("XDG_CACHE_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("MESHVM_GIT_TOKEN")
            .env_remove("MESHVM_REPO")
            .args(["gitops", "sync", "--quiet", "-f"])
            .arg(fleet)
            .args(["--repo", repo])
            .args(extra);
        cmd
    }
}

/// The git CLI on `repo`, whatever its outcome.
fn git_output(repo: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(args)
        .output()
        .expect("git runs")
}

fn ok(what: &str, r: &Run) {
    assert_eq!(
        r.code, 0,
        "{what}\nstdout:\n{}\nstderr:\n{}",
        r.stdout, r.stderr
    );
}

/// `git fsck --full` finds nothing wrong (dangling objects from an interrupted sync are not
/// wrong: they are what a crash between writing objects and moving the branch leaves).
fn assert_fsck_clean(repo: &Path, when: &str) {
    let out = git_output(repo, &["fsck", "--full", "--no-progress"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("dangling ") && !l.trim().is_empty())
        .collect();
    assert!(
        out.status.success() && problems.is_empty(),
        "git fsck --full {when}: {}\n{text}",
        out.status
    );
}

/// Lock files other than meshvm's own flock file: a crash must not leave any that blocks Git.
fn stale_locks(repo: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![repo.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "lock")
                && path
                    .file_name()
                    .is_some_and(|n| n != meshvm::git::LOCK_FILE)
            {
                out.push(path);
            }
        }
    }
    out
}

/// The files of `gitops.path` on `rev` are exactly the files `meshvm render` writes.
fn assert_tree_is_render(repo: &Path, rev: &str, fleet: &Path, scratch: &Scratch) {
    let rendered = scratch.path("rendered");
    let _ = std::fs::remove_dir_all(&rendered);
    ok(
        "render",
        &run(meshvm()
            .args(["render", "-f"])
            .arg(fleet)
            .arg("-o")
            .arg(&rendered)),
    );
    let committed = scratch.path("committed");
    let _ = std::fs::remove_dir_all(&committed);
    std::fs::create_dir(&committed).unwrap();
    let archive = git_output(repo, &["archive", "--format=tar", rev, OWNED]);
    assert!(archive.status.success(), "git archive {rev}");
    let mut tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(&committed)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    tar.stdin
        .take()
        .unwrap()
        .write_all(&archive.stdout)
        .unwrap();
    assert!(tar.wait().unwrap().success());
    let contents = |dir: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        snapshot(dir)
            .into_iter()
            .filter(|(p, (mode, _))| *mode & 0o170000 != 0o040000 && !p.as_os_str().is_empty())
            // render -o's record of what it wrote is not part of the tree.
            .filter(|(p, _)| p.as_os_str() != ".meshvm-files")
            .map(|(p, (_, bytes))| (p, bytes))
            .collect()
    };
    let want = contents(&rendered);
    let got = contents(&committed.join(OWNED));
    assert!(!want.is_empty());
    assert_eq!(
        got.len(),
        want.len(),
        "{rev}: as many files as render writes"
    );
    for ((gp, gb), (wp, wb)) in got.iter().zip(&want) {
        assert_eq!(gp, wp, "{rev}: the same paths");
        assert!(gb == wb, "{rev}: {} differs from render's", gp.display());
    }
}

/// No merge commit on `rev`: the history is one line.
fn assert_linear(repo: &Path, rev: &str) {
    let merges = git(repo, &["rev-list", "--min-parents=2", rev]);
    assert!(merges.is_empty(), "merge commits on {rev}: {merges}");
}

/// The `Meshvm-Fleet-Sha256` trailers of the commits on `rev`, newest first.
fn fleet_trailers(repo: &Path, rev: &str) -> Vec<String> {
    git(repo, &["log", "--format=%B%x00", rev])
        .split('\0')
        .filter_map(|msg| {
            msg.lines()
                .find_map(|l| l.strip_prefix(&format!("{}: ", meshvm::git::TRAILER_FLEET)))
                .map(str::to_owned)
        })
        .collect()
}

fn sha256_of(path: &Path) -> String {
    meshvm::spec::load_fleet(path).unwrap().sha256
}

/// A fixed-seed generator for kill delays (reproducible runs without a dependency).
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn a_sync_killed_at_random_points_leaves_a_valid_repository_and_the_next_completes() {
    const VMS: usize = 600;
    const ROUNDS: usize = 14;
    let s = Scratch::new();
    let repo = s.path("repo.git");
    let repo_arg = repo.to_str().unwrap();

    // The first sync, uninterrupted; then changing ones, also uninterrupted, set the pace the
    // kills are spread over (a changing sync is much faster than the first). The shortest of
    // three: on a loaded machine one sync can take twice another's time, and a pace set by a
    // slow one leaves most kills landing after the sync finished.
    let first = s.fleet("fleet-0.yaml", VMS, "mesh0");
    ok("first sync", &run(&mut s.sync(&first, repo_arg, &[])));
    let pace = (0..3)
        .map(|i| {
            let paced = s.fleet(
                &format!("fleet-pace-{i}.yaml"),
                VMS,
                &format!("meshpace{i}"),
            );
            let started = Instant::now();
            ok("pace sync", &run(&mut s.sync(&paced, repo_arg, &[])));
            started.elapsed()
        })
        .min()
        .expect("three runs");
    assert_fsck_clean(&repo, "after the first syncs");

    let mut rng = XorShift(0x6d65_7368_766d);
    let mut killed = 0;
    for round in 1..=ROUNDS {
        let fleet = s.fleet(&format!("fleet-{round}.yaml"), VMS, &format!("mesh{round}"));
        let before = git(&repo, &["rev-parse", "main"]);
        let delay = Duration::from_micros(rng.next() % (pace.as_micros() as u64 * 5 / 4 + 1));
        let mut child = s
            .sync(&fleet, repo_arg, &[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let finished = child.try_wait().unwrap();
        child.kill().unwrap_or(()); // SIGKILL; a no-op when it already exited
        let status = child.wait().unwrap();
        if finished.is_none() && status.code().is_none() {
            killed += 1;
        }
        let when = format!("after round {round} (killed after {delay:?}: {status})");
        assert_fsck_clean(&repo, &when);
        let locks = stale_locks(&repo);
        assert!(locks.is_empty(), "{when}: stale lock files {locks:?}");
        // The branch is the old commit or the new one, never anything else.
        let after = git(&repo, &["rev-parse", "main"]);
        if after != before {
            assert_eq!(
                git(&repo, &["rev-parse", "main^"]),
                before,
                "{when}: the new commit sits on the old one"
            );
            assert_tree_is_render(&repo, "main", &fleet, &s);
        }
    }
    assert!(
        killed >= ROUNDS / 2,
        "only {killed} of {ROUNDS} syncs were killed before finishing: the delays are off"
    );

    let last = s.fleet("fleet-last.yaml", VMS, "mesh-last");
    ok(
        "the sync after the kills",
        &run(&mut s.sync(&last, repo_arg, &[])),
    );
    assert_fsck_clean(&repo, "after the last sync");
    assert_tree_is_render(&repo, "main", &last, &s);
    assert_linear(&repo, "main");
    assert_eq!(fleet_trailers(&repo, "main")[0], sha256_of(&last));
}

/// Two syncs of different fleets started at once: both commit, one after the other, on a
/// line; or one says clearly that the other holds the repository.
fn two_at_once(
    s: &Scratch,
    repo: &str,
    extra: &[&str],
    extra_b: &[&str],
    round: usize,
) -> [PathBuf; 2] {
    let a = s.fleet(&format!("a-{round}.yaml"), 150, &format!("mesh-a{round}"));
    let b = s.fleet(&format!("b-{round}.yaml"), 150, &format!("mesh-b{round}"));
    let spawn = |fleet: &Path, extra: &[&str]| {
        s.sync(fleet, repo, extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (ca, cb) = (spawn(&a, extra), spawn(&b, extra_b));
    for (name, child) in [("a", ca), ("b", cb)] {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "round {round}: sync {name} failed ({}): {stderr}",
            out.status
        );
    }
    [a, b]
}

#[test]
fn two_syncs_started_together_neither_lose_nor_interleave_commits() {
    let s = Scratch::new();

    // One repository, two processes: the lock makes them take turns.
    let repo = s.path("repo.git");
    let repo_arg = repo.to_str().unwrap().to_owned();
    let seed = s.fleet("seed.yaml", 10, "mesh-seed");
    ok("seed sync", &run(&mut s.sync(&seed, &repo_arg, &[])));
    for round in 0..3 {
        let fleets = two_at_once(&s, &repo_arg, &[], &[], round);
        assert_fsck_clean(&repo, "after two syncs at once");
        assert_linear(&repo, "main");
        let trailers = fleet_trailers(&repo, "main");
        let (a, b) = (sha256_of(&fleets[0]), sha256_of(&fleets[1]));
        let newest_two: Vec<&String> = trailers.iter().take(2).collect();
        assert!(
            newest_two == [&a, &b] || newest_two == [&b, &a],
            "round {round}: both commits, one on the other: {trailers:?}"
        );
        let tip = if trailers[0] == a {
            &fleets[0]
        } else {
            &fleets[1]
        };
        let second = if trailers[0] == a {
            &fleets[1]
        } else {
            &fleets[0]
        };
        assert_tree_is_render(&repo, "main", tip, &s);
        assert_tree_is_render(&repo, "main^", second, &s);
    }

    // Two machines (two cache clones) pushing to one server at once: the loser of the race
    // fetches, rebuilds on the winner's commit and pushes again.
    let srv = s.path("srv");
    std::fs::create_dir(&srv).unwrap();
    let server = bare_repo(&srv, "mesh.git");
    let daemon = GitDaemon::start(&srv);
    let url = daemon.url("mesh.git");
    let cache_b = s.path("cache-b");
    let cache_b = cache_b.to_str().unwrap();
    for round in 10..12 {
        let fleets = two_at_once(
            &s,
            &url,
            &["--push"],
            &["--push", "--cache-dir", cache_b],
            round,
        );
        assert_fsck_clean(&server, "on the server after two pushes at once");
        assert_linear(&server, "main");
        let trailers = fleet_trailers(&server, "main");
        let (a, b) = (sha256_of(&fleets[0]), sha256_of(&fleets[1]));
        let newest_two: Vec<&String> = trailers.iter().take(2).collect();
        assert!(
            newest_two == [&a, &b] || newest_two == [&b, &a],
            "round {round}: both pushes, one on the other: {trailers:?}"
        );
        let tip = if trailers[0] == a {
            &fleets[0]
        } else {
            &fleets[1]
        };
        assert_tree_is_render(&server, "main", tip, &s);
    }
}

/// Unmounts on drop, also when the test fails.
struct Mount(PathBuf);

impl Mount {
    fn new(args: &[&str], at: &Path) -> Mount {
        require_tool("mount", "apt-get install mount");
        let out = Command::new("mount").args(args).arg(at).output().unwrap();
        assert!(
            out.status.success(),
            "mount {args:?} {} (these tests run as root): {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_gives_a_clear_error_and_the_repository_stays_valid() {
    let s = Scratch::new();
    let disk = s.path("disk");
    std::fs::create_dir(&disk).unwrap();
    let _mount = Mount::new(&["-t", "tmpfs", "-o", "size=2m", "tmpfs"], &disk);
    let repo = disk.join("repo.git");
    let repo_arg = repo.to_str().unwrap();
    let small = s.fleet("small.yaml", 5, "mesh1");
    ok("first sync", &run(&mut s.sync(&small, repo_arg, &[])));
    let before = git(&repo, &["rev-parse", "main"]);

    // Fill the disk to the last byte.
    let mut filler = std::fs::File::create(disk.join("filler")).unwrap();
    let chunk = vec![0u8; 4096];
    while filler.write_all(&chunk).is_ok() {}
    let _ = filler.write_all(&[0u8; 1]);
    drop(filler);

    let big = s.fleet("big.yaml", 400, "mesh2");
    let r = run(&mut s.sync(&big, repo_arg, &[]));
    assert_eq!(
        r.code, 3,
        "a full disk is a Git failure (exit 3):\n{}",
        r.stderr
    );
    assert!(
        r.stderr.starts_with("error: ") && r.stderr.contains("No space left on device"),
        "the error says the disk is full:\n{}",
        r.stderr
    );
    assert_eq!(
        git(&repo, &["rev-parse", "main"]),
        before,
        "the branch did not move"
    );
    assert_fsck_clean(&repo, "after the full disk");

    std::fs::remove_file(disk.join("filler")).unwrap();
    ok(
        "the sync with space again",
        &run(&mut s.sync(&big, repo_arg, &[])),
    );
    assert_fsck_clean(&repo, "after the retry");
    assert_tree_is_render(&repo, "main", &big, &s);
    assert_eq!(git(&repo, &["rev-parse", "main^"]), before);
}

#[test]
fn a_read_only_repository_gives_a_clear_error_and_stays_valid() {
    let s = Scratch::new();
    let repo = s.path("repo.git");
    let repo_arg = repo.to_str().unwrap();
    let first = s.fleet("first.yaml", 5, "mesh1");
    ok("first sync", &run(&mut s.sync(&first, repo_arg, &[])));
    let before = snapshot(&repo);
    let second = s.fleet("second.yaml", 6, "mesh1");
    {
        // Root writes through file modes: a read-only bind mount is what stops it.
        let _bind = Mount::new(&["--bind", repo_arg], &repo);
        let ro = Command::new("mount")
            .args(["-o", "remount,ro,bind"])
            .arg(&repo)
            .status()
            .unwrap();
        assert!(ro.success(), "remount read-only");
        assert!(
            std::fs::write(repo.join("probe"), "x").is_err(),
            "the mount is read-only"
        );

        let r = run(&mut s.sync(&second, repo_arg, &[]));
        assert_eq!(
            r.code, 3,
            "a read-only repository is a Git failure:\n{}",
            r.stderr
        );
        assert!(
            r.stderr.contains("Read-only file system"),
            "the error says why:\n{}",
            r.stderr
        );
        assert_fsck_clean(&repo, "while read-only");
        // Reading needs no write access: diff shows the change (exit 4).
        let mut diff = s.sync(&second, repo_arg, &[]);
        let diff = run(diff.args(["--dry-run"]));
        assert_eq!(
            diff.code, 4,
            "sync --dry-run on a read-only repository:\n{}",
            diff.stderr
        );
        assert!(diff.stdout.contains("1 VM added"), "{}", diff.stdout);
    }
    assert_eq!(snapshot(&repo), before, "nothing in the repository changed");
    ok(
        "the sync once writable",
        &run(&mut s.sync(&second, repo_arg, &[])),
    );
    assert_fsck_clean(&repo, "after the retry");
    assert_tree_is_render(&repo, "main", &second, &s);
}

/// A TCP proxy in front of a server that cuts `git-receive-pack` (push) connections after
/// `cut_after` bytes from the client, while `cutting` is set; everything else passes.
struct CuttingProxy {
    port: u16,
    cutting: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
}

impl CuttingProxy {
    fn start(upstream: u16, cut_after: usize) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cutting = Arc::new(AtomicBool::new(true));
        let cuts = Arc::new(AtomicUsize::new(0));
        let (c, n) = (cutting.clone(), cuts.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let (c, n) = (c.clone(), n.clone());
                std::thread::spawn(move || relay(client, upstream, cut_after, &c, &n));
            }
        });
        CuttingProxy {
            port,
            cutting,
            cuts,
        }
    }

    fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }
}

fn relay(
    client: TcpStream,
    upstream: u16,
    cut_after: usize,
    cutting: &AtomicBool,
    cuts: &AtomicUsize,
) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let (mut from_server, mut to_client) =
        (server.try_clone().unwrap(), client.try_clone().unwrap());
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_server, &mut to_client);
        let _ = to_client.shutdown(Shutdown::Write);
    });
    let (mut from_client, mut to_server) = (client, server);
    let mut buf = [0u8; 4096];
    let mut sent = 0;
    let mut push = None;
    loop {
        let n = match from_client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // The first pkt-line names the service: `git-receive-pack /repo` for a push.
        let is_push = *push
            .get_or_insert_with(|| String::from_utf8_lossy(&buf[..n]).contains("git-receive-pack"));
        if is_push && cutting.load(Ordering::SeqCst) && sent + n > cut_after {
            let keep = cut_after.saturating_sub(sent);
            let _ = to_server.write_all(&buf[..keep]);
            cuts.fetch_add(1, Ordering::SeqCst);
            // Drop the connection both ways, as a broken network does.
            let _ = from_client.shutdown(Shutdown::Both);
            let _ = to_server.shutdown(Shutdown::Both);
            return;
        }
        if to_server.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n;
    }
    let _ = to_server.shutdown(Shutdown::Write);
}

#[test]
fn a_remote_that_drops_the_connection_mid_push_keeps_the_local_commit_and_a_retry_succeeds() {
    let s = Scratch::new();
    let srv = s.path("srv");
    std::fs::create_dir(&srv).unwrap();
    let server = bare_repo(&srv, "mesh.git");
    let daemon = GitDaemon::start(&srv);
    let proxy = CuttingProxy::start(daemon.port, 20_000);
    let url = proxy.url("mesh.git");

    let first = s.fleet("first.yaml", 5, "mesh1");
    proxy.cutting.store(false, Ordering::SeqCst);
    ok("first push", &run(&mut s.sync(&first, &url, &["--push"])));
    let on_server = git(&server, &["rev-parse", "main"]);

    // A big change: its pack is far over the cut.
    let big = s.fleet("big.yaml", 400, "mesh2");
    proxy.cutting.store(true, Ordering::SeqCst);
    let r = run(&mut s.sync(&big, &url, &["--push"]));
    assert!(
        proxy.cuts.load(Ordering::SeqCst) >= 1,
        "the proxy cut a push"
    );
    assert_eq!(
        r.code, 3,
        "a dropped push is a remote failure:\n{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("is kept in") && r.stderr.contains("gitops sync --push"),
        "the error says the commit is kept and how to retry:\n{}",
        r.stderr
    );
    assert_eq!(
        git(&server, &["rev-parse", "main"]),
        on_server,
        "the server did not move"
    );
    assert_fsck_clean(&server, "on the server after the cut");
    // The local commit: in the cache clone, on the branch, holding the new tree.
    let cache = s.path("cache");
    let clones: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(clones.len(), 1, "one cache clone: {clones:?}");
    let clone = &clones[0];
    let local = git(clone, &["rev-parse", "main"]);
    assert_ne!(local, on_server, "the local commit is kept");
    assert_fsck_clean(clone, "in the cache clone after the cut");
    assert_tree_is_render(clone, "main", &big, &s);

    proxy.cutting.store(false, Ordering::SeqCst);
    ok("the retry", &run(&mut s.sync(&big, &url, &["--push"])));
    assert_eq!(
        git(&server, &["rev-parse", "main"]),
        local,
        "the kept commit was pushed"
    );
    assert_fsck_clean(&server, "on the server after the retry");
    assert_tree_is_render(&server, "main", &big, &s);
    assert_linear(&server, "main");
}
