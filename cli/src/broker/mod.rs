//! `meshvm join-server`: the join broker. TLS (rustls) in front of `POST /v1/join`; the
//! decision is the library's (`meshvm::join::authorize`), the token the API server's
//! (TokenRequest). Bounded everywhere: connections, handshake and header time, body size and
//! time, requests per source, the replay cache. One JSON audit line per decision on stderr,
//! never with a token.

pub mod kube;
pub mod token_file;
pub mod token_secret;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use meshvm::join::guard::{RateLimiter, ReplayCache};
use meshvm::join::tokens::TokenBook;
use meshvm::join::{
    self, Grant, JoinRequest, JoinResponse, Policy, Proof, Refusal, RefusalCode, Trust,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;

use token_file::TokenFile;

/// Everything the server is configured with.
pub struct Config {
    pub listen: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub kubeconfig: Option<PathBuf>,
    pub policy: PolicySource,
    pub join_tokens: Option<PathBuf>,
    /// The join-token book in a Secret instead (several replicas).
    pub join_tokens_secret: Option<token_secret::TokenSecret>,
    pub trust: Trust,
    pub token_seconds: u32,
    pub rate_per_second: f64,
    pub burst: u32,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
}

/// Where the policy comes from: the fleet file itself, or the policy JSON `meshvm render`
/// writes into the broker's ConfigMap. Re-read when the file changes (a ConfigMap update).
pub struct PolicySource {
    path: PathBuf,
    is_fleet: bool,
    current: Mutex<(Option<SystemTime>, Arc<Policy>)>,
}

impl PolicySource {
    pub fn new(path: &Path, is_fleet: bool) -> Result<PolicySource, String> {
        let source = PolicySource {
            path: path.to_owned(),
            is_fleet,
            current: Mutex::new((None, Arc::new(Policy::default()))),
        };
        let (mtime, policy) = source.read()?;
        *source.current.lock().unwrap() = (mtime, Arc::new(policy));
        Ok(source)
    }

    fn read(&self) -> Result<(Option<SystemTime>, Policy), String> {
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let policy = if self.is_fleet {
            let source = meshvm::spec::load_fleet(&self.path).map_err(|e| e.to_string())?;
            Policy::from_fleet(&source.fleet)
        } else {
            let bytes =
                std::fs::read(&self.path).map_err(|e| format!("{}: {e}", self.path.display()))?;
            serde_json::from_slice(&bytes)
                .map_err(|e| format!("{}: not a join policy: {e}", self.path.display()))?
        };
        Ok((mtime, policy))
    }

    /// The policy, re-read first when the file changed; a file that no longer reads keeps
    /// the last good policy (and says so).
    fn get(&self) -> Arc<Policy> {
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut current = self.current.lock().unwrap();
        if mtime != current.0 {
            match self.read() {
                Ok((mtime, policy)) => {
                    audit(
                        json!({"event": "policy", "file": self.path.display().to_string(), "groups": policy.groups.len()}),
                    );
                    *current = (mtime, Arc::new(policy));
                }
                Err(e) => {
                    audit(json!({"event": "policy", "error": e, "kept": "the last good policy"}));
                    current.0 = mtime;
                }
            }
        }
        current.1.clone()
    }
}

struct State {
    config: Config,
    kube: kube::Kube,
    replay: Mutex<ReplayCache>,
    limiter: Mutex<RateLimiter<IpAddr>>,
    started: std::time::Instant,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// One JSON line on stderr: the audit trail.
fn audit(mut line: serde_json::Value) {
    let ts = meshvm::timestamp::rfc3339(time::UtcDateTime::now());
    line.as_object_mut()
        .expect("an object")
        .insert("time".into(), ts.into());
    eprintln!("{line}");
}

fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: not a PEM certificate chain: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("{}: not a PEM private key: {e}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| format!("the serving certificate: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Runs the broker until the process is killed.
pub fn serve(config: Config) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(serve_async(config))
}

async fn serve_async(config: Config) -> Result<(), String> {
    let tls =
        tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(&config.tls_cert, &config.tls_key)?));
    let kube = kube::Kube::new(config.kubeconfig.as_deref())?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let connections = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
    let state = Arc::new(State {
        replay: Mutex::new(ReplayCache::new(1 << 20)),
        limiter: Mutex::new(RateLimiter::new(
            config.rate_per_second,
            config.burst,
            1 << 16,
        )),
        kube,
        started: std::time::Instant::now(),
        config,
    });
    audit(
        json!({"event": "listening", "address": address.to_string(), "groups": state.config.policy.get().groups.len()}),
    );
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(_) => continue,
        };
        // Too many open connections: refuse new ones rather than queue them.
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            drop(tcp);
            continue;
        };
        let (tls, state) = (tls.clone(), state.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let timeout = state.config.header_timeout;
            let Ok(Ok(stream)) = tokio::time::timeout(timeout, tls.accept(tcp)).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&state, peer.ip(), req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            // A connection lives at most a minute, however it behaves.
            let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
        });
    }
}

fn respond(status: u16, body: &serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a response")
}

fn refuse(refusal: &Refusal) -> Response<Full<Bytes>> {
    respond(
        refusal.code.http_status(),
        &serde_json::to_value(refusal).expect("JSON"),
    )
}

async fn handle(state: &State, source: IpAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => respond(
            200,
            &json!({"ok": true, "uptimeSeconds": state.started.elapsed().as_secs()}),
        ),
        (&Method::POST, "/v1/join") => {
            let mut seen = Seen::default();
            let outcome = join(state, source, req, &mut seen).await;
            let mut line = json!({
                "event": "join",
                "source": source.to_string(),
                "namespace": seen.namespace,
                "group": seen.group,
                "method": seen.method,
            });
            let fields = line.as_object_mut().expect("an object");
            match &outcome {
                Ok((grant, minted)) => {
                    fields.insert("decision".into(), "issued".into());
                    fields.insert("identity".into(), grant.identity.clone().into());
                    fields.insert("instance".into(), grant.instance.clone().into());
                    fields.insert(
                        "serviceAccount".into(),
                        grant.service_account.clone().into(),
                    );
                    fields.insert("expires".into(), minted.expiration_timestamp.clone().into());
                }
                Err(refusal) => {
                    fields.insert("decision".into(), "refused".into());
                    fields.insert("code".into(), refusal.code.as_str().into());
                    fields.insert("reason".into(), refusal.reason.clone().into());
                }
            }
            audit(line);
            match outcome {
                Ok((grant, minted)) => {
                    let body = JoinResponse {
                        token: minted.token,
                        expiration_timestamp: minted.expiration_timestamp,
                        namespace: grant.namespace,
                        group: grant.group,
                        service_account: grant.service_account,
                        instance: grant.instance,
                    };
                    respond(200, &serde_json::to_value(&body).expect("JSON"))
                }
                Err(refusal) => refuse(&refusal),
            }
        }
        _ => refuse(&Refusal::new(
            RefusalCode::BadRequest,
            "the broker serves POST /v1/join (and GET /healthz)",
        )),
    }
}

/// What the audit line says about a request, as far as it was read.
#[derive(Default)]
struct Seen {
    namespace: Option<String>,
    group: Option<String>,
    method: Option<&'static str>,
}

async fn join(
    state: &State,
    source: IpAddr,
    req: Request<Incoming>,
    seen: &mut Seen,
) -> Result<(Grant, kube::Minted), Refusal> {
    let config = &state.config;
    let clock = state.started.elapsed().as_secs_f64();
    state.limiter.lock().unwrap().allow(&source, clock)?;
    let limited = http_body_util::Limited::new(req.into_body(), join::protocol::MAX_BODY);
    let body = match tokio::time::timeout(config.request_timeout, limited.collect()).await {
        Err(_) => {
            return Err(Refusal::new(
                RefusalCode::BadRequest,
                format!(
                    "the request body did not arrive within {}s",
                    config.request_timeout.as_secs()
                ),
            ));
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(Refusal::new(
                RefusalCode::TooLarge,
                format!(
                    "the request is larger than {} bytes",
                    join::protocol::MAX_BODY
                ),
            ));
        }
        Ok(Err(_)) => {
            return Err(Refusal::new(
                RefusalCode::BadRequest,
                "the request body could not be read",
            ));
        }
        Ok(Ok(body)) => body.to_bytes(),
    };
    let request: JoinRequest = join::protocol::parse_request(&body)?;
    seen.namespace = Some(request.namespace.clone());
    seen.group = Some(request.group.clone());
    seen.method = Some(request.proof.method().as_str());
    let now = now();
    join::protocol::check_request(&request, now, config.trust.max_age)?;
    state.replay.lock().unwrap().check_and_insert(
        &format!("nonce:{}", request.nonce),
        now + 2 * config.trust.max_age,
        now,
    )?;
    let policy = config.policy.get();
    let grant = match (&request.proof, &config.join_tokens) {
        (Proof::JoinToken { .. }, Some(path)) => {
            let file = TokenFile::new(path);
            let trust = config.trust.clone();
            let request = request.clone();
            tokio::task::spawn_blocking(move || {
                file.update(|book| {
                    let result = join::authorize(&policy, &trust, book, &request, now);
                    let changed = result.is_ok();
                    (result, changed)
                })
            })
            .await
            .map_err(|_| {
                Refusal::new(
                    RefusalCode::Upstream,
                    "the join-token book could not be read",
                )
            })?
            .map_err(|e| {
                Refusal::new(RefusalCode::Upstream, format!("the join-token book: {e}"))
            })??
        }
        (Proof::JoinToken { .. }, None) if config.join_tokens_secret.is_some() => {
            let secret = config.join_tokens_secret.as_ref().expect("matched");
            secret
                .update(&state.kube, |book| {
                    let result = join::authorize(&policy, &config.trust, book, &request, now);
                    let changed = result.is_ok();
                    (result, changed)
                })
                .await
                .map_err(|e| {
                    Refusal::new(RefusalCode::Upstream, format!("the join-token book: {e}"))
                })??
        }
        _ => join::authorize(
            &policy,
            &config.trust,
            &mut TokenBook::default(),
            &request,
            now,
        )?,
    };
    if let Proof::Gcp { jwt } = &request.proof {
        // A GCE identity token is a one-time proof here: replayed, it is refused until it
        // expires anyway.
        let key = format!("gcp:{}", join::tokens::sha256_hex(jwt));
        state
            .replay
            .lock()
            .unwrap()
            .check_and_insert(&key, now + 3600, now)?;
    }
    let minted = state
        .kube
        .token_request(
            &grant.namespace,
            &grant.service_account,
            config.token_seconds,
        )
        .await
        .map_err(|e| Refusal::new(RefusalCode::Upstream, e))?;
    Ok((grant, minted))
}
