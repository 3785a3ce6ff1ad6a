//! The istio-token never leaks: every command that takes a token (and the ones that must never
//! see one) runs with a distinctive fake token, in success and in failure; then its stdout and
//! stderr, every file under the test's root (HOME and TMPDIR point there too) and every Git
//! object there are scanned for the token, its base64 forms and its signature. Only the
//! token outputs may hold it, and they are 0600.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use crate::servers::{HttpGit, bare_repo};
use crate::support::{Run, fixture, meshvm, run};

/// A JWT-shaped token whose every part is distinctive.
fn token() -> String {
    const SIGNATURE: &str = "bWVzaHZtLXNlY3JldC1zY2FuLXNpZ25hdHVyZS0yOGY3YzE";
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"meshvm-secret-scan"}"#);
    let claims = URL_SAFE_NO_PAD.encode(
        r#"{"aud":["istio-ca"],"sub":"system:serviceaccount:vm-apps:tester","exp":4102444800}"#,
    );
    format!("{header}.{claims}.{SIGNATURE}")
}

/// The Git credential (MESHVM_GIT_TOKEN) of the sync runs: a secret that may appear nowhere.
const GIT_TOKEN: &str = "meshvm-git-credential-5c0ffee-do-not-leak";

/// What must not appear of a secret: itself, its last part (a JWT's signature), and its base64
/// encodings at each of the three alignments it can have inside a larger encoded text.
fn needles(name: &str, secret: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![(name.to_owned(), secret.as_bytes().to_vec())];
    if let Some((_, signature)) = secret.rsplit_once('.') {
        out.push((
            format!("the signature of {name}"),
            signature.as_bytes().to_vec(),
        ));
    }
    for shift in 0..3 {
        let mut bytes = vec![b'x'; shift];
        bytes.extend_from_slice(secret.as_bytes());
        let encoded = STANDARD.encode(&bytes);
        // Characters 4.. up to the last group depend on the secret's bytes alone.
        let inner = &encoded[4..encoded.len() - 4];
        out.push((
            format!("{name} in base64 (shift {shift})"),
            inner.as_bytes().to_vec(),
        ));
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A sandbox for runs of meshvm: HOME, TMPDIR and the XDG directories inside it, so that
/// anything meshvm writes anywhere it may write is scanned.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub token: String,
    pub token_file: PathBuf,
    /// Files that hold the token by design.
    allowed: Vec<PathBuf>,
    /// Every run's command line, stdout and stderr.
    runs: Vec<(String, Run)>,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["home", "tmp", "inputs"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let token = token();
        let token_file = dir.path().join("inputs/token");
        std::fs::write(&token_file, format!("{token}\n")).unwrap();
        Sandbox {
            dir,
            token,
            token_file,
            allowed: Vec::new(),
            runs: Vec::new(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn command(&self) -> Command {
        let mut cmd = meshvm();
        let home = self.path("home");
        cmd.env("HOME", &home)
            .env("TMPDIR", self.path("tmp"))
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("XDG_STATE_HOME", home.join(".local/state"))
            .env("RUST_BACKTRACE", "1");
        cmd
    }

    /// Runs meshvm with `args`, keeps its output for the scan, and checks the exit code.
    pub fn run(&mut self, args: &[OsString], code: i32) -> &Run {
        self.run_env(args, &[], code)
    }

    /// `run` with extra environment variables.
    pub fn run_env(&mut self, args: &[OsString], env: &[(&str, &str)], code: i32) -> &Run {
        let shown = args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = self.command();
        cmd.args(args).envs(env.iter().copied());
        let r = run(&mut cmd);
        assert_eq!(r.code, code, "meshvm {shown}\n{}{}", r.stdout, r.stderr);
        self.runs.push((shown, r));
        &self.runs.last().unwrap().1
    }

    /// Declares an output that holds the token by design; it must be 0600.
    pub fn allow(&mut self, path: PathBuf) {
        self.allowed.push(path);
    }

    /// Declares an `istio-token` output, which holds exactly the token.
    pub fn allow_token_file(&mut self, path: PathBuf) {
        let written = std::fs::read_to_string(&path).unwrap();
        assert_eq!(written, self.token, "{}", path.display());
        self.allow(path);
    }

    /// Scans everything; panics naming each leak.
    pub fn scan(&self) {
        let istio = needles("the istio-token", &self.token);
        let git = needles("the Git credential", GIT_TOKEN);
        let mut leaks = Vec::new();
        // The token outputs may hold the istio-token; nothing may hold the Git credential.
        let mut check = |place: &str, bytes: &[u8], token_output: bool| {
            let istio = if token_output { &[][..] } else { &istio[..] };
            for (what, needle) in git.iter().chain(istio) {
                if find(bytes, needle) {
                    leaks.push(format!("{what} in {place}"));
                }
            }
        };
        for (shown, r) in &self.runs {
            check(
                &format!("stdout of `meshvm {shown}`"),
                r.stdout.as_bytes(),
                false,
            );
            check(
                &format!("stderr of `meshvm {shown}`"),
                r.stderr.as_bytes(),
                false,
            );
        }
        let mut files = 0;
        let mut repos = Vec::new();
        for entry in walk(self.dir.path()) {
            let dir = entry.parent().unwrap();
            if entry.file_name().is_some_and(|n| n == "HEAD") && dir.join("objects").is_dir() {
                repos.push(dir.to_path_buf());
            }
            // inputs/ holds the secrets the test gave meshvm.
            if entry.starts_with(self.path("inputs")) {
                continue;
            }
            files += 1;
            let bytes = std::fs::read(&entry).unwrap();
            check(
                &entry.display().to_string(),
                &bytes,
                self.allowed.contains(&entry),
            );
        }
        assert!(files > 0, "the scan saw files");
        for repo in &repos {
            let objects = Command::new("git")
                .args(["cat-file", "--batch-all-objects", "--batch"])
                .env("GIT_DIR", repo)
                .output()
                .unwrap();
            assert!(
                objects.status.success(),
                "git cat-file in {}",
                repo.display()
            );
            check(
                &format!("a Git object in {}", repo.display()),
                &objects.stdout,
                false,
            );
        }
        for path in &self.allowed {
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} holds the token: 0600", path.display());
        }
        assert!(leaks.is_empty(), "a secret leaked:\n{}", leaks.join("\n"));
    }

    /// The Git repositories the scan found (for checks that it looked where it should).
    pub fn repositories(&self) -> Vec<PathBuf> {
        walk(self.dir.path())
            .into_iter()
            .filter(|e| e.file_name().is_some_and(|n| n == "HEAD"))
            .map(|e| e.parent().unwrap().to_path_buf())
            .filter(|d| d.join("objects").is_dir())
            .collect()
    }
}

/// Every regular file below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let t = entry.file_type().unwrap();
            if t.is_dir() {
                stack.push(entry.path());
            } else if t.is_file() {
                out.push(entry.path());
            }
        }
    }
    out
}

fn os(words: &[&str]) -> Vec<OsString> {
    words.iter().map(Into::into).collect()
}

fn with(mut args: Vec<OsString>, more: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    args.extend(more.iter().map(|a| a.as_ref().to_owned()));
    args
}

#[test]
fn the_token_appears_only_in_the_token_outputs() {
    let mut sb = Sandbox::new();
    let token = sb.token_file.clone();
    let fleet = fixture("fleets/single-network/meshvm.yaml");
    let wg = fixture("istioctl/ipv4/workloadgroup.yaml");
    let mesh = fixture("istioctl/ipv4/meshconfig.yaml");
    let two_tokens = sb.path("inputs/two-tokens");
    std::fs::write(&two_tokens, format!("{} {}\n", sb.token, sb.token)).unwrap();
    let control = sb.path("inputs/control");
    std::fs::write(&control, format!("{}\u{1b}[0m\n", sb.token)).unwrap();

    // Successes: the token goes to istio-token, 0600.
    let out = sb.path("vm-files");
    sb.run(
        &with(
            os(&["vm", "files", "billing-1", "--token-file"]),
            &[&token, &"-f", &fleet, &"-o", &out],
        ),
        0,
    );
    sb.allow_token_file(out.join("istio-token"));
    let out = sb.path("configure");
    sb.run(
        &with(
            os(&["workload", "entry", "configure", "--token-file"]),
            &[&token, &"-f", &wg, &"--mesh-config", &mesh, &"-o", &out],
        ),
        0,
    );
    sb.allow_token_file(out.join("istio-token"));

    // Failures with a token at hand: nothing written, nothing said about it.
    let failed = sb.path("failed");
    for (args, why) in [
        (os(&["vm", "files", "nobody", "--token-file"]), "unknown VM"),
        (
            os(&["vm", "files", "billing-1", "--token-file"]),
            "two tokens",
        ),
        (os(&["vm", "files", "billing-1", "--token-file"]), "control"),
    ] {
        let file = match why {
            "two tokens" => &two_tokens,
            "control" => &control,
            _ => &token,
        };
        sb.run(&with(args, &[file, &"-f", &fleet, &"-o", &failed]), 1);
        assert!(!failed.exists(), "{why}: nothing written");
    }
    sb.run(
        &with(
            os(&["vm", "files", "tester-1", "--token-file"]),
            &[
                &token,
                &"-f",
                &fixture("invalid/many-problems.yaml"),
                &"-o",
                &failed,
            ],
        ),
        1,
    );
    sb.run(
        &with(
            os(&["workload", "entry", "configure", "--token-file"]),
            &[
                &token,
                &"-f",
                &wg,
                &"--mesh-config",
                &two_tokens,
                &"-o",
                &failed,
            ],
        ),
        1,
    );
    // The token file named where a fleet or a WorkloadGroup belongs: its content is not quoted.
    sb.run(&with(os(&["validate", "-f"]), &[&token]), 1);
    sb.run(&with(os(&["render", "-f"]), &[&token, &"-o", &failed]), 1);
    sb.run(
        &with(
            os(&["workload", "entry", "configure", "-f"]),
            &[&token, &"--mesh-config", &mesh, &"-o", &failed],
        ),
        1,
    );
    sb.run(
        &with(
            os(&["workload", "entry", "configure", "--mesh-config"]),
            &[&token, &"-f", &wg, &"-o", &failed],
        ),
        1,
    );
    assert!(!failed.exists());

    // Commands that take no token must not pick one up from anywhere.
    sb.run(
        &with(os(&["render", "-f"]), &[&fleet, &"-o", &sb.path("tree")]),
        0,
    );

    // gitops sync, into a local repository and pushed over smart HTTP with a Git credential:
    // the scan covers every object of the local repository, the cache clone and the server.
    let srv = sb.path("srv");
    std::fs::create_dir(&srv).unwrap();
    bare_repo(&srv, "mesh.git");
    let http = HttpGit::start(&srv, Some(GIT_TOKEN));
    let url = http.url("mesh.git");
    let repo = sb.path("repo.git");
    let cache = sb.path("cache");
    let git_env = [("MESHVM_GIT_TOKEN", GIT_TOKEN)];
    let sync = |fleet: &Path, target: &dyn AsRef<std::ffi::OsStr>, extra: &[&str]| {
        let mut args = with(
            os(&["gitops", "sync", "-f"]),
            &[&fleet, &"--repo", target, &"--cache-dir", &cache],
        );
        args.extend(os(extra));
        args
    };
    sb.run_env(&sync(&fleet, &repo, &[]), &git_env, 0);
    sb.run_env(&sync(&fleet, &url, &["--push"]), &git_env, 0);
    // A wrong credential: refused, and neither secret is told.
    let changed = sb.path("inputs/changed.yaml");
    let text = std::fs::read_to_string(&fleet).unwrap();
    std::fs::write(&changed, text.replace("10.0.0.21", "10.0.0.29")).unwrap();
    std::fs::copy(
        fixture("fleets/single-network/root-cert.pem"),
        sb.path("inputs/root-cert.pem"),
    )
    .unwrap();
    let wrong = format!("{GIT_TOKEN}-wrong");
    sb.run_env(
        &sync(&changed, &url, &["--push"]),
        &[("MESHVM_GIT_TOKEN", &wrong)],
        3,
    );
    sb.run(
        &with(os(&["gitops", "diff", "-f"]), &[&changed, &"--repo", &repo]),
        4,
    );
    for line in http.seen.lock().unwrap().iter() {
        assert!(
            !line.contains(GIT_TOKEN),
            "the Git credential in a request: {line}"
        );
    }
    assert_eq!(
        sb.repositories().len(),
        3,
        "the local, cache and server repositories"
    );
    sb.scan();
}

/// The scan is not blind: a token hidden in base64 inside a larger file is found.
#[test]
#[should_panic(expected = "the istio-token in base64")]
fn the_scan_finds_a_planted_leak() {
    let sb = Sandbox::new();
    let mut doc = b"#cloud-config\nwrite_files:\n- content: x".to_vec();
    doc.extend_from_slice(sb.token.as_bytes());
    let planted = format!("note: {}\n", STANDARD.encode(&doc));
    std::fs::write(sb.path("home/notes"), planted).unwrap();
    sb.scan();
}
