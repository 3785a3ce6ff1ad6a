//! Real Git servers on 127.0.0.1 for the tests: `git daemon` (git://), `git http-backend`
//! behind a small CGI bridge (smart HTTP, with optional basic auth), and OpenSSH's sshd with
//! throwaway keys. Each listens on a free port and is stopped on Drop.

#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::support::{checked, free_port, require_tool};

/// Waits until something accepts connections on `port`, failing if `child` exits first.
fn wait_listening(port: u16, child: &mut Child, what: &str, log: Option<&Path>) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = log
                .and_then(|l| fs::read_to_string(l).ok())
                .unwrap_or_default();
            panic!("{what} exited before listening ({status}):\n{log}");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// `git daemon --enable=receive-pack` serving every repository below `root`.
pub struct GitDaemon {
    child: Child,
    pub port: u16,
}

impl GitDaemon {
    pub fn start(root: &Path) -> GitDaemon {
        require_tool("git", "apt-get install git");
        let port = free_port();
        let log = root.join("daemon.log");
        let mut child = Command::new("git")
            .arg("daemon")
            .arg("--reuseaddr")
            .arg("--export-all")
            .arg("--enable=receive-pack")
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", root.display()))
            .arg(root)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("git daemon starts");
        wait_listening(port, &mut child, "git daemon", Some(&log));
        GitDaemon { child, port }
    }

    pub fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Smart HTTP: a minimal HTTP/1.1 server that hands each request to `git http-backend` (CGI).
/// It reads chunked request bodies (libgit2 sends pushes chunked) and keeps connections alive.
pub struct HttpGit {
    pub port: u16,
    stopping: Arc<AtomicBool>,
    /// Requests answered 401 (missing or wrong credentials).
    pub unauthorized: Arc<AtomicUsize>,
    /// Every request line and header seen, for checks that secrets stay out of URLs.
    pub seen: Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpGit {
    /// Serves `root`; with `token`, every request needs HTTP basic auth with that password.
    pub fn start(root: &Path, token: Option<&str>) -> HttpGit {
        require_tool("git", "apt-get install git");
        assert!(
            Path::new("/usr/lib/git-core/git-http-backend").exists(),
            "git http-backend is needed: apt-get install git"
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stopping = Arc::new(AtomicBool::new(false));
        let unauthorized = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let root = root.to_path_buf();
        let token = token.map(str::to_owned);
        let thread = {
            let (stopping, unauthorized, seen) =
                (stopping.clone(), unauthorized.clone(), seen.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (root, token, unauthorized, seen) = (
                        root.clone(),
                        token.clone(),
                        unauthorized.clone(),
                        seen.clone(),
                    );
                    std::thread::spawn(move || {
                        let _ = serve(conn, &root, token.as_deref(), &unauthorized, &seen);
                    });
                }
            })
        };
        HttpGit {
            port,
            stopping,
            unauthorized,
            seen,
            thread: Some(thread),
        }
    }

    pub fn url(&self, repo: &str) -> String {
        format!("http://127.0.0.1:{}/{repo}", self.port)
    }
}

impl Drop for HttpGit {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wake the accept loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    conn: TcpStream,
    root: &Path,
    token: Option<&str>,
    unauthorized: &AtomicUsize,
    seen: &std::sync::Mutex<Vec<String>>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut parts = request_line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or("").to_owned(),
            parts.next().unwrap_or("").to_owned(),
        );
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let line = line.trim_end().to_owned();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        seen.lock().unwrap().push(format!(
            "{} {}",
            request_line.trim_end(),
            headers
                .iter()
                .filter(|(k, _)| k != "authorization")
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("; ")
        ));
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        if header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
            out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            read_chunked(&mut reader)?
        } else {
            let len: usize = header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            reader.read_exact(&mut body)?;
            body
        };
        let user = match token {
            None => Some("anonymous".to_owned()),
            Some(token) => header("authorization")
                .and_then(|v| v.strip_prefix("Basic "))
                .and_then(|b| STANDARD.decode(b).ok())
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|up| {
                    let (user, pass) = up.split_once(':')?;
                    (pass == token).then(|| user.to_owned())
                }),
        };
        let Some(user) = user else {
            unauthorized.fetch_add(1, Ordering::SeqCst);
            out.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"meshvm-test\"\r\nContent-Length: 0\r\n\r\n",
            )?;
            continue;
        };
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let mut cgi = Command::new("/usr/lib/git-core/git-http-backend");
        cgi.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("GIT_PROJECT_ROOT", root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("REQUEST_METHOD", &method)
            .env("PATH_INFO", path)
            .env("QUERY_STRING", query)
            .env("REMOTE_USER", &user)
            .env("REMOTE_ADDR", "127.0.0.1")
            .env("CONTENT_LENGTH", body.len().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(ct) = header("content-type") {
            cgi.env("CONTENT_TYPE", ct);
        }
        if let Some(p) = header("git-protocol") {
            cgi.env("GIT_PROTOCOL", p);
        }
        if let Some(e) = header("content-encoding") {
            cgi.env("HTTP_CONTENT_ENCODING", e);
        }
        let mut child = cgi.spawn()?;
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(&body));
        let mut output = Vec::new();
        child.stdout.take().unwrap().read_to_end(&mut output)?;
        let _ = writer.join();
        child.wait()?;
        let split = output
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| (i, 4))
            .or_else(|| output.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)))
            .unwrap_or((output.len(), 0));
        let head = String::from_utf8_lossy(&output[..split.0]).into_owned();
        let payload = &output[(split.0 + split.1).min(output.len())..];
        let mut status = "200 OK".to_owned();
        let mut response_headers = String::new();
        for line in head.lines() {
            match line.split_once(':') {
                Some((k, v)) if k.eq_ignore_ascii_case("status") => status = v.trim().to_owned(),
                Some(_) => response_headers.push_str(&format!("{}\r\n", line.trim_end())),
                None => {}
            }
        }
        out.write_all(
            format!(
                "HTTP/1.1 {status}\r\n{response_headers}Content-Length: {}\r\n\r\n",
                payload.len()
            )
            .as_bytes(),
        )?;
        out.write_all(payload)?;
        out.flush()?;
    }
}

fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line)?;
        let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0; 2];
        reader.read_exact(&mut crlf)?;
    }
}

/// OpenSSH's sshd with its own config, host key and one authorized client key, running as
/// the current user (root here) in a temporary directory.
pub struct Sshd {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// The authorized client key (encrypted with the passphrase given to `start`).
    pub client_key: PathBuf,
    /// The host key's fingerprint, `SHA256:…`.
    pub host_fingerprint: String,
    /// A known_hosts line for the server.
    pub known_hosts_line: String,
    pub user: String,
}

fn keygen(path: &Path, passphrase: &str) {
    checked(
        Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-C",
                "meshvm-test",
                "-N",
                passphrase,
                "-f",
            ])
            .arg(path),
    );
}

/// A new ed25519 key pair in `dir` (for a key the server does not know).
pub fn new_key(dir: &Path, name: &str, passphrase: &str) -> PathBuf {
    require_tool("ssh-keygen", "apt-get install openssh-client");
    let path = dir.join(name);
    keygen(&path, passphrase);
    path
}

impl Sshd {
    pub fn start(client_passphrase: &str) -> Sshd {
        require_tool("ssh-keygen", "apt-get install openssh-client");
        assert!(
            Path::new("/usr/sbin/sshd").exists(),
            "sshd is needed: apt-get install openssh-server"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        keygen(&d.join("host_key"), "");
        keygen(&d.join("client_key"), client_passphrase);
        fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        // sshd insists on its privilege separation directory.
        fs::create_dir_all("/run/sshd").unwrap();
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_owned();
        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\nAllowUsers {user}\nLogLevel VERBOSE\n",
            d = d.display()
        );
        fs::write(d.join("sshd_config"), config).unwrap();
        let log = d.join("sshd.log");
        let mut child = Command::new("/usr/sbin/sshd")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .args(["-D", "-e"])
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("sshd starts");
        wait_listening(port, &mut child, "sshd", Some(&log));
        let fp = Command::new("ssh-keygen")
            .args(["-E", "sha256", "-lf"])
            .arg(d.join("host_key.pub"))
            .output()
            .unwrap();
        let host_fingerprint = String::from_utf8(fp.stdout)
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_owned();
        let pubkey = fs::read_to_string(d.join("host_key.pub")).unwrap();
        let mut fields = pubkey.split_whitespace();
        let known_hosts_line = format!(
            "[127.0.0.1]:{port} {} {}\n",
            fields.next().unwrap(),
            fields.next().unwrap()
        );
        Sshd {
            child,
            port,
            client_key: d.join("client_key"),
            host_fingerprint,
            known_hosts_line,
            user,
            dir,
        }
    }

    /// The ssh:// URL of a repository at an absolute path on this machine.
    pub fn url(&self, repo: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            repo.display()
        )
    }

    /// Lets the key pair at `key` (its `.pub` beside it) log in too.
    pub fn authorize(&self, key: &Path) {
        let public = fs::read_to_string(key.with_extension("pub")).unwrap();
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("authorized_keys"))
            .unwrap();
        file.write_all(public.as_bytes()).unwrap();
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// An ssh-agent on its own socket, holding the given keys; stopped on Drop.
pub struct SshAgent {
    child: Child,
    pub socket: PathBuf,
}

impl SshAgent {
    pub fn start(dir: &Path, keys: &[&Path]) -> SshAgent {
        require_tool("ssh-agent", "apt-get install openssh-client");
        let socket = dir.join("agent.sock");
        let mut child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(child.try_wait().unwrap().is_none(), "ssh-agent exited");
            assert!(
                Instant::now() < deadline,
                "ssh-agent did not create its socket"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        for key in keys {
            checked(
                Command::new("ssh-add")
                    .arg(key)
                    .env("SSH_AUTH_SOCK", &socket),
            );
        }
        SshAgent { child, socket }
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}
