//! The join broker under test (`meshvm join-server` on 127.0.0.1 with a test PKI from rcgen),
//! a TLS client that speaks its protocol as a VM does, and — for the hermetic tier only, where
//! no API server can run — a stand-in for the Kubernetes TokenRequest API. The stand-in exists
//! because `cargo test` may not start kube-apiserver; tests/mesh runs the broker against the
//! real one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};

/// A CA and a serving certificate for `127.0.0.1` and `localhost`, all PEM.
pub struct Pki {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

pub fn pki() -> Pki {
    pki_for(&["127.0.0.1", "localhost"])
}

/// A CA and a serving certificate for these names.
pub fn pki_for(names: &[&str]) -> Pki {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "meshvm test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
    Pki {
        ca: ca.pem(),
        cert: leaf.pem(),
        key: leaf_key.serialize_pem(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(ca: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn server_config(pki: &Pki) -> Arc<rustls::ServerConfig> {
    let chain = CertificateDer::pem_slice_iter(pki.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(pki.key.as_bytes()).unwrap();
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
    )
}

/// A fresh nonce per request.
pub fn nonce() -> String {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    format!(
        "n{nanos:016x}{:08x}{:06x}",
        COUNT.fetch_add(1, Ordering::Relaxed),
        std::process::id()
    )
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A join request as a VM makes one.
pub fn join_request(namespace: &str, group: &str, proof: Value) -> Value {
    json!({
        "namespace": namespace,
        "group": group,
        "nonce": nonce(),
        "timestamp": unix_now(),
        "proof": proof,
    })
}

/// A running `meshvm join-server`; killed when dropped.
pub struct Broker {
    child: Child,
    pub addr: SocketAddr,
    pub ca: String,
    audit: Arc<Mutex<Vec<Value>>>,
}

impl Broker {
    /// Starts the broker with the test PKI in `dir` and `args` (a policy, a kubeconfig, …);
    /// returns once it listens.
    pub fn start(dir: &Path, pki: &Pki, args: &[&std::ffi::OsStr]) -> Broker {
        Broker::start_on(dir, pki, "127.0.0.1:0", args)
    }

    /// [`Broker::start`] listening on `listen` (an address a VM reaches).
    pub fn start_on(dir: &Path, pki: &Pki, listen: &str, args: &[&std::ffi::OsStr]) -> Broker {
        let cert = dir.join("broker.crt");
        let key = dir.join("broker.key");
        std::fs::write(&cert, &pki.cert).unwrap();
        std::fs::write(&key, &pki.key).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_meshvm"))
            .args(["join-server", "--listen", listen, "--tls-cert"])
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("meshvm join-server starts");
        let stderr = child.stderr.take().unwrap();
        let audit = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let lines = audit.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) if v["event"] == "listening" => {
                        let _ = tx.send(Ok(v["address"].as_str().unwrap().parse().unwrap()));
                    }
                    Ok(v) => lines.lock().unwrap().push(v),
                    Err(_) => {
                        let _ = tx.send(Err(line));
                    }
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(addr)) => addr,
            Ok(Err(line)) => {
                let _ = child.kill();
                panic!("join-server said: {line}")
            }
            Err(_) => {
                let _ = child.kill();
                panic!("join-server did not start listening within 30s")
            }
        };
        Broker {
            child,
            addr,
            ca: pki.ca.clone(),
            audit,
        }
    }

    /// A TLS connection to the broker, verified against the test CA.
    pub fn connect(&self) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
        let tcp = TcpStream::connect(self.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let conn = rustls::ClientConnection::new(
            client_config(&self.ca),
            ServerName::try_from("127.0.0.1").unwrap().to_owned(),
        )
        .unwrap();
        rustls::StreamOwned::new(conn, tcp)
    }

    /// `POST /v1/join` with `body`; the status and the JSON answer.
    pub fn post(&self, body: &[u8]) -> (u16, Value) {
        let mut stream = self.connect();
        write!(
            stream,
            "POST /v1/join HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .unwrap();
        stream.write_all(body).unwrap();
        stream.flush().unwrap();
        read_response(&mut stream)
    }

    pub fn join(&self, request: &Value) -> (u16, Value) {
        self.post(request.to_string().as_bytes())
    }

    /// The audit lines of decisions so far (waits up to 10 s for at least `n`).
    pub fn decisions(&self, n: usize) -> Vec<Value> {
        for _ in 0..200 {
            let lines: Vec<Value> = self
                .audit
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l["event"] == "join")
                .cloned()
                .collect();
            if lines.len() >= n {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "fewer than {n} audit lines: {:?}",
            self.audit.lock().unwrap()
        )
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads an HTTP/1.1 response with a Content-Length: status and JSON body.
fn read_response(stream: &mut impl Read) -> (u16, Value) {
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {status_line:?}"));
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// The hermetic stand-in for the TokenRequest API: TLS on 127.0.0.1, one bearer token, and
/// a made-up token per ServiceAccount. It records each request's path and body.
pub struct FakeKube {
    pub kubeconfig: PathBuf,
    pub requests: Arc<Mutex<Vec<(String, Value)>>>,
}

pub const FAKE_BEARER: &str = "fake-admin-bearer";

impl FakeKube {
    pub fn start(dir: &Path) -> FakeKube {
        let pki = pki();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let config = server_config(&pki);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let (config, recorded) = (config.clone(), recorded.clone());
                std::thread::spawn(move || {
                    let conn = rustls::ServerConnection::new(config).unwrap();
                    let mut stream = rustls::StreamOwned::new(conn, tcp);
                    let _ = serve_token_request(&mut stream, &recorded);
                    stream.conn.send_close_notify();
                    let _ = stream.flush();
                });
            }
        });
        let kubeconfig = dir.join("fake-kubeconfig");
        let ca = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &pki.ca);
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: https://{addr}\n    certificate-authority-data: {ca}\nusers:\n- name: fake\n  user:\n    token: {FAKE_BEARER}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: fake}}\ncurrent-context: fake\n"
            ),
        )
        .unwrap();
        FakeKube {
            kubeconfig,
            requests,
        }
    }
}

fn serve_token_request(
    stream: &mut (impl Read + Write),
    recorded: &Mutex<Vec<(String, Value)>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(&mut *stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_owned();
    let (mut length, mut authorized) = (0, false);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
            if name.eq_ignore_ascii_case("authorization") {
                authorized = value.trim() == format!("Bearer {FAKE_BEARER}");
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    drop(reader);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    recorded.lock().unwrap().push((path.clone(), body));
    let parts: Vec<&str> = path.split('/').collect();
    let (status, answer) = match parts.as_slice() {
        [
            "",
            "api",
            "v1",
            "namespaces",
            ns,
            "serviceaccounts",
            sa,
            "token",
        ] if authorized => (
            "201 Created",
            json!({"kind": "TokenRequest", "status": {"token": format!("fake-token.{ns}.{sa}"), "expirationTimestamp": "2030-01-01T00:00:00Z"}}),
        ),
        _ if !authorized => (
            "401 Unauthorized",
            json!({"kind": "Status", "message": "Unauthorized"}),
        ),
        _ => (
            "404 Not Found",
            json!({"kind": "Status", "message": "not found"}),
        ),
    };
    let answer = answer.to_string();
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    )?;
    stream.flush()
}

/// The files `write_files` puts on the VM, by path: (permissions, bytes).
pub fn written_files(document: &str) -> Vec<(String, String, Vec<u8>)> {
    use base64::Engine as _;
    let doc: Value = serde_saphyr::from_str(document).unwrap();
    doc["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(f["content"].as_str().unwrap())
                .unwrap();
            let bytes = match f["encoding"].as_str().unwrap() {
                "gz+b64" => {
                    let mut out = Vec::new();
                    std::io::Read::read_to_end(
                        &mut flate2::read::GzDecoder::new(&raw[..]),
                        &mut out,
                    )
                    .unwrap();
                    out
                }
                _ => raw,
            };
            (
                f["path"].as_str().unwrap().to_owned(),
                f["permissions"].as_str().unwrap().to_owned(),
                bytes,
            )
        })
        .collect()
}

/// Writes `files` (of [`written_files`]) below `root` with their permissions.
pub fn place_files(root: &Path, files: &[(String, String, Vec<u8>)]) {
    use std::os::unix::fs::PermissionsExt;
    for (path, mode, bytes) in files {
        let dest = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::write(&dest, bytes).unwrap();
        let mode = u32::from_str_radix(mode, 8).unwrap();
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}
