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

use crate::support::{Run, fixture, meshvm, run};

/// A JWT-shaped token whose every part is distinctive.
const SIGNATURE: &str = "bWVzaHZtLXNlY3JldC1zY2FuLXNpZ25hdHVyZS0yOGY3YzE";
fn token() -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"meshvm-secret-scan"}"#);
    let claims = URL_SAFE_NO_PAD.encode(
        r#"{"aud":["istio-ca"],"sub":"system:serviceaccount:vm-apps:tester","exp":4102444800}"#,
    );
    format!("{header}.{claims}.{SIGNATURE}")
}

/// What must not appear: the token, its signature, and its base64 encodings at each of the
/// three alignments it can have inside a larger encoded text.
fn needles(token: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![
        ("the token".to_owned(), token.as_bytes().to_vec()),
        ("its signature".to_owned(), SIGNATURE.as_bytes().to_vec()),
    ];
    for shift in 0..3 {
        let mut bytes = vec![b'x'; shift];
        bytes.extend_from_slice(token.as_bytes());
        let encoded = STANDARD.encode(&bytes);
        // Characters 4.. up to the last group depend on the token's bytes alone.
        let inner = &encoded[4..encoded.len() - 4];
        out.push((
            format!("its base64 (shift {shift})"),
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
        let shown = args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let r = run(self.command().args(args));
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
        let needles = needles(&self.token);
        let mut leaks = Vec::new();
        let mut check = |place: &str, bytes: &[u8]| {
            for (what, needle) in &needles {
                if find(bytes, needle) {
                    leaks.push(format!("{what} in {place}"));
                }
            }
        };
        for (shown, r) in &self.runs {
            check(&format!("stdout of `meshvm {shown}`"), r.stdout.as_bytes());
            check(&format!("stderr of `meshvm {shown}`"), r.stderr.as_bytes());
        }
        let mut files = 0;
        let mut repos = Vec::new();
        for entry in walk(self.dir.path()) {
            if entry.file_name().is_some_and(|n| n == "HEAD") {
                repos.push(entry.parent().unwrap().to_path_buf());
            }
            // inputs/ holds the token files the test gave meshvm.
            if entry.starts_with(self.path("inputs")) || self.allowed.contains(&entry) {
                continue;
            }
            files += 1;
            check(
                &entry.display().to_string(),
                &std::fs::read(&entry).unwrap(),
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
            );
        }
        for path in &self.allowed {
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} holds the token: 0600", path.display());
        }
        assert!(leaks.is_empty(), "the token leaked:\n{}", leaks.join("\n"));
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
    sb.scan();
}
