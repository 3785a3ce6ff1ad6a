//! The istio-token never leaks: every command that takes a token (and the ones that must never
//! see one) runs with a distinctive fake token, in success and in failure; then its stdout and
//! stderr, every file under the test's root (HOME and TMPDIR point there too, gzip files are
//! looked into) and every Git object there are scanned for the token, its base64 forms and
//! its signature, and for the Git credential of the sync runs. Only the token outputs
//! (istio-token, user-data) may hold the token, and they are 0600.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use crate::servers::HttpGit;
use crate::support::{Run, bare_repo, checked, files_below, fixture, meshvm, run};

/// Every test token ends with this signature, so that the scan finds any of them.
const SIGNATURE: &str = "bWVzaHZtLXNlY3JldC1zY2FuLXNpZ25hdHVyZS0yOGY3YzE";

/// The Git credential (MESHVM_GIT_TOKEN) of the sync runs: a secret that may appear nowhere.
const GIT_TOKEN: &str = "meshvm-git-credential-5c0ffee-do-not-leak";

/// A JWT-shaped token of ServiceAccount `sa` in vm-apps, expiring at `exp`, with the
/// distinctive signature.
fn token_for(sa: &str, exp: i64) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"meshvm-secret-scan"}"#);
    let claims = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"aud":["istio-ca"],"sub":"system:serviceaccount:vm-apps:{sa}","exp":{exp}}}"#
    ));
    format!("{header}.{claims}.{SIGNATURE}")
}

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

/// `bytes` gunzipped when they are gzip.
fn gunzipped(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    (bytes.starts_with(&[0x1f, 0x8b])
        && flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .is_ok())
    .then_some(out)
}

/// What a text can carry a secret in: itself (gunzipped when gzip), and every base64 run in it
/// decoded (and gunzipped), as cloud-init's `gz+b64` and `b64` encodings carry files.
fn layers(bytes: &[u8]) -> Vec<Vec<u8>> {
    let bytes = gunzipped(bytes).unwrap_or_else(|| bytes.to_vec());
    let is_b64 = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
    let mut out = Vec::new();
    for run in bytes.split(|b| !is_b64(b)).filter(|r| r.len() >= 24) {
        let run = &run[..run.len() / 4 * 4];
        if let Ok(decoded) = STANDARD.decode(run) {
            out.push(gunzipped(&decoded).unwrap_or(decoded));
        }
    }
    out.insert(0, bytes);
    out
}

/// A sandbox for runs of meshvm: HOME, TMPDIR and the XDG directories inside it, so that
/// anything meshvm writes anywhere it may write is scanned.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub token: String,
    pub token_file: PathBuf,
    /// Files that hold the token by design.
    allowed: Vec<PathBuf>,
    /// Every run's command line, stdout and stderr, and whether its stdout is a token output.
    runs: Vec<(String, Run, bool)>,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["home", "tmp", "inputs"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let token = token_for("billing", 4_102_444_800);
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
        self.run_full(args, &[], None, code)
    }

    /// `run` with extra environment variables.
    pub fn run_env(&mut self, args: &[OsString], env: &[(&str, &str)], code: i32) -> &Run {
        self.run_full(args, env, None, code)
    }

    /// `run` with `stdin` on standard input. With `stdout_holds_token`, standard output is a
    /// token output (the user-data printed): it is not scanned, but must hold the token.
    pub fn run_stdin(
        &mut self,
        args: &[OsString],
        stdin: &[u8],
        stdout_holds_token: bool,
        code: i32,
    ) -> &Run {
        self.run_full(args, &[], Some((stdin, stdout_holds_token)), code)
    }

    fn run_full(
        &mut self,
        args: &[OsString],
        env: &[(&str, &str)],
        stdin: Option<(&[u8], bool)>,
        code: i32,
    ) -> &Run {
        let shown = args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = self.command();
        cmd.args(args).envs(env.iter().copied());
        let (r, token_output) = match stdin {
            None => (run(&mut cmd), false),
            Some((input, token_output)) => {
                let mut child = cmd
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                child.stdin.take().unwrap().write_all(input).unwrap();
                let out = child.wait_with_output().unwrap();
                let r = Run {
                    code: out.status.code().unwrap_or(-1),
                    stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                };
                (r, token_output)
            }
        };
        assert_eq!(r.code, code, "meshvm {shown}\n{}{}", r.stdout, r.stderr);
        if token_output {
            assert!(self.holds_token(r.stdout.as_bytes()), "{shown}: the token");
        }
        self.runs.push((shown, r, token_output));
        &self.runs.last().unwrap().1
    }

    /// True when `bytes` hold the token in a form the scan sees.
    fn holds_token(&self, bytes: &[u8]) -> bool {
        let needles = needles("the istio-token", &self.token);
        layers(bytes)
            .iter()
            .any(|layer| needles.iter().any(|(_, needle)| find(layer, needle)))
    }

    /// Declares an output that holds the token by design: it must hold it (the scan would see
    /// it anywhere else) and be 0600.
    pub fn allow(&mut self, path: PathBuf) {
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            self.holds_token(&bytes),
            "{} holds the token",
            path.display()
        );
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
            for (depth, layer) in layers(bytes).iter().enumerate() {
                let how = if depth == 0 { "" } else { " (decoded)" };
                for (what, needle) in git.iter().chain(istio) {
                    if find(layer, needle) {
                        leaks.push(format!("{what} in {place}{how}"));
                    }
                }
            }
        };
        for (shown, r, token_output) in &self.runs {
            let stdout = format!("stdout of `meshvm {shown}`");
            check(&stdout, r.stdout.as_bytes(), *token_output);
            let stderr = format!("stderr of `meshvm {shown}`");
            check(&stderr, r.stderr.as_bytes(), false);
        }
        let mut files = 0;
        for entry in files_below(self.dir.path()) {
            // inputs/ holds the secrets the test gave meshvm.
            if entry.starts_with(self.path("inputs")) {
                continue;
            }
            files += 1;
            let bytes = std::fs::read(&entry).unwrap();
            let allowed = self.allowed.contains(&entry);
            check(&entry.display().to_string(), &bytes, allowed);
        }
        assert!(files > 0, "the scan saw files");
        for repo in self.repositories() {
            let objects = checked(
                Command::new("git")
                    .args(["cat-file", "--batch-all-objects", "--batch"])
                    .env("GIT_DIR", &repo),
            );
            let place = format!("a Git object in {}", repo.display());
            check(&place, &objects, false);
        }
        for path in &self.allowed {
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} holds the token: 0600", path.display());
        }
        assert!(leaks.is_empty(), "a secret leaked:\n{}", leaks.join("\n"));
    }

    /// The Git repositories below the sandbox (bare ones, and the .git of work trees).
    pub fn repositories(&self) -> Vec<PathBuf> {
        files_below(self.dir.path())
            .into_iter()
            .filter(|e| e.file_name().is_some_and(|n| n == "HEAD"))
            .map(|e| e.parent().unwrap().to_path_buf())
            .filter(|d| d.join("objects").is_dir())
            .collect()
    }
}

fn os(words: &[&str]) -> Vec<OsString> {
    words.iter().map(Into::into).collect()
}

fn with(mut args: Vec<OsString>, more: &[&dyn AsRef<OsStr>]) -> Vec<OsString> {
    args.extend(more.iter().map(|a| a.as_ref().to_owned()));
    args
}

#[test]
fn the_token_appears_only_in_the_token_outputs() {
    let mut sb = Sandbox::new();
    let token = sb.token_file.clone();
    let fleet = fixture("fleets/single-network/meshvm.yaml");
    let ca = fixture("certs/test-root-cert.pem");
    let wg = fixture("istioctl/ipv4/workloadgroup.yaml");
    let mesh = fixture("istioctl/ipv4/meshconfig.yaml");
    let inputs = sb.path("inputs");
    let write = |name: &str, text: String| {
        let path = inputs.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    // The token's ServiceAccount (vm-apps/billing): `workload entry configure` checks it.
    let wg = write(
        "workloadgroup.yaml",
        std::fs::read_to_string(&wg)
            .unwrap()
            .replace("namespace: bar", "namespace: vm-apps")
            .replace(
                "serviceAccount: vm-serviceaccount",
                "serviceAccount: billing",
            ),
    );
    let two_tokens = write("two-tokens", format!("{} {}\n", sb.token, sb.token));
    let control = write("control", format!("{}\u{1b}[0m\n", sb.token));
    let expired = write("expired", token_for("billing", 1_000_000_000));
    let other_sa = write("other-sa", token_for("payments", 4_102_444_800));

    // Successes: the token goes to istio-token and the user-data, 0600.
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
    let cloud_init = |extra: &[&dyn AsRef<OsStr>]| {
        let args = with(
            os(&["cloud-init", "billing-1", "-f"]),
            &[&fleet, &"--root-cert", &ca],
        );
        with(args, extra)
    };
    for (name, gzip) in [("user-data", false), ("user-data.gz", true)] {
        let out = sb.path(name);
        let mut args = cloud_init(&[&"--token-file", &token, &"-o", &out]);
        if gzip {
            args.push("--gzip".into());
        }
        sb.run(&args, 0);
        sb.allow(out);
    }
    let from_stdin = sb.path("user-data-stdin");
    let stdin = format!("{}\n", sb.token);
    sb.run_stdin(
        &cloud_init(&[&"--token-stdin", &"-o", &from_stdin]),
        stdin.as_bytes(),
        false,
        0,
    );
    sb.allow(from_stdin);
    // No -o: the user-data is standard output, a token output.
    sb.run_stdin(&cloud_init(&[&"--token-stdin"]), stdin.as_bytes(), true, 0);

    // Failures with a token at hand: nothing written, nothing said about it.
    let failed = sb.path("failed");
    let vm_files = |vm: &str, token: &Path| {
        with(
            os(&["vm", "files", vm, "--token-file"]),
            &[&token, &"-f", &fleet, &"-o", &failed],
        )
    };
    sb.run(&vm_files("nobody", &token), 1);
    sb.run(&vm_files("billing-1", &two_tokens), 1);
    sb.run(&vm_files("billing-1", &control), 1);
    let invalid = fixture("invalid/many-problems.yaml");
    sb.run(
        &with(
            os(&["vm", "files", "tester-1", "--token-file"]),
            &[&token, &"-f", &invalid, &"-o", &failed],
        ),
        1,
    );
    let configure = |wg: &Path, mesh: &Path| {
        with(
            os(&["workload", "entry", "configure", "--token-file"]),
            &[&token, &"-f", &wg, &"--mesh-config", &mesh, &"-o", &failed],
        )
    };
    sb.run(&configure(&wg, &two_tokens), 1);
    // A token file where a fleet, a WorkloadGroup or a mesh config belongs: not quoted.
    sb.run(&configure(&token, &mesh), 1);
    sb.run(&configure(&wg, &token), 1);
    sb.run(&with(os(&["validate", "-f"]), &[&token]), 1);
    sb.run(&with(os(&["render", "-f"]), &[&token, &"-o", &failed]), 1);
    // cloud-init: an expired token, another ServiceAccount's, two tokens, control characters,
    // an unknown VM, an invalid fleet, a token on stdin that is not one.
    for bad in [&expired, &other_sa, &two_tokens, &control] {
        sb.run(&cloud_init(&[&"--token-file", bad, &"-o", &failed]), 1);
    }
    sb.run_stdin(
        &cloud_init(&[&"--token-stdin", &"-o", &failed]),
        format!("{} trailing", sb.token).as_bytes(),
        false,
        1,
    );
    sb.run(
        &with(
            os(&["cloud-init", "nobody", "-f"]),
            &[&fleet, &"--root-cert", &ca, &"--token-file", &token],
        ),
        1,
    );
    sb.run(
        &with(
            os(&["cloud-init", "tester-1", "-f"]),
            &[&invalid, &"--root-cert", &ca, &"--token-file", &token],
        ),
        1,
    );
    // The output inside a Git work tree is refused before the token is read.
    let work_tree = sb.path("checkout");
    std::fs::create_dir(&work_tree).unwrap();
    let init = Command::new("git")
        .args(["init", "-q"])
        .arg(&work_tree)
        .status()
        .unwrap();
    assert!(init.success());
    let in_repo = work_tree.join("user-data");
    sb.run(&cloud_init(&[&"--token-file", &token, &"-o", &in_repo]), 1);
    assert!(!in_repo.exists() && !failed.exists(), "nothing written");

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
    let sync = |fleet: &Path, target: &dyn AsRef<OsStr>, extra: &[&str]| {
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
    let changed = write(
        "changed.yaml",
        std::fs::read_to_string(&fleet)
            .unwrap()
            .replace("10.0.0.21", "10.0.0.29"),
    );
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
        4,
        "the local, cache, server and checkout repositories: {:?}",
        sb.repositories()
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

/// Nor blind to gzip: a token in a gzip file, or gzip-compressed and base64-encoded inside a
/// text (cloud-init's `gz+b64`), is found.
#[test]
#[should_panic(expected = "the istio-token in /")]
fn the_scan_looks_into_gzip_files() {
    let sb = Sandbox::new();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(sb.token.as_bytes()).unwrap();
    std::fs::write(sb.path("tmp/copy.gz"), gz.finish().unwrap()).unwrap();
    sb.scan();
}

#[test]
#[should_panic(expected = "the istio-token in /")]
fn the_scan_decodes_gz_b64_content() {
    let sb = Sandbox::new();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(sb.token.as_bytes()).unwrap();
    let content = STANDARD.encode(gz.finish().unwrap());
    let doc = format!("write_files:\n  - encoding: 'gz+b64'\n    content: '{content}'\n");
    std::fs::write(sb.path("home/user-data-copy"), doc).unwrap();
    sb.scan();
}
