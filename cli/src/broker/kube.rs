//! The broker's Kubernetes client: just the TokenRequest API, over rustls, with the
//! credentials of a kubeconfig (client certificate or bearer token) or of the pod
//! (in-cluster ServiceAccount). A small hand-written client rather than kube-rs: one POST
//! does not justify kube-rs's build (k8s-openapi alone is the largest crate of such a tree).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

/// The Kubernetes API as the broker uses it.
pub struct Kube {
    server: String,
    /// A bearer token file (in-cluster: the projected token, re-read as it rotates).
    token_file: Option<PathBuf>,
    token: Option<String>,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// A minted token.
pub struct Minted {
    pub token: String,
    pub expiration_timestamp: String,
}

#[derive(Deserialize)]
struct Kubeconfig {
    #[serde(default)]
    clusters: Vec<NamedCluster>,
    #[serde(default)]
    users: Vec<NamedUser>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
    #[serde(rename = "current-context", default)]
    current_context: String,
}

#[derive(Deserialize)]
struct NamedCluster {
    name: String,
    cluster: Cluster,
}
#[derive(Deserialize)]
struct NamedUser {
    name: String,
    user: User,
}
#[derive(Deserialize)]
struct NamedContext {
    name: String,
    context: Context,
}

#[derive(Deserialize, Default)]
struct Cluster {
    server: String,
    #[serde(rename = "certificate-authority", default)]
    ca_file: Option<PathBuf>,
    #[serde(rename = "certificate-authority-data", default)]
    ca_data: Option<String>,
}

#[derive(Deserialize, Default)]
struct User {
    #[serde(rename = "client-certificate", default)]
    cert_file: Option<PathBuf>,
    #[serde(rename = "client-certificate-data", default)]
    cert_data: Option<String>,
    #[serde(rename = "client-key", default)]
    key_file: Option<PathBuf>,
    #[serde(rename = "client-key-data", default)]
    key_data: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(rename = "tokenFile", default)]
    token_file: Option<PathBuf>,
}

#[derive(Deserialize)]
struct Context {
    cluster: String,
    user: String,
}

const IN_CLUSTER: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A file's bytes or inline base64 data, paths relative to the kubeconfig's directory.
fn file_or_data(
    dir: &Path,
    file: &Option<PathBuf>,
    data: &Option<String>,
) -> Result<Option<Vec<u8>>, String> {
    if let Some(data) = data {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|_| "kubeconfig data is not base64".to_owned())?;
        return Ok(Some(bytes));
    }
    file.as_ref().map(|f| read(&dir.join(f))).transpose()
}

impl Kube {
    /// From a kubeconfig (its current context), or in-cluster when `path` is `None`.
    pub fn new(path: Option<&Path>) -> Result<Kube, String> {
        let (server, ca, identity, token, token_file) = match path {
            Some(path) => {
                let text = String::from_utf8(read(path)?)
                    .map_err(|_| format!("{}: not UTF-8", path.display()))?;
                let config: Kubeconfig = serde_saphyr::from_str(&text)
                    .map_err(|e| format!("{}: not a kubeconfig: {e}", path.display()))?;
                let dir = path.parent().unwrap_or(Path::new("."));
                let context = config
                    .contexts
                    .iter()
                    .find(|c| c.name == config.current_context)
                    .ok_or_else(|| format!("{}: no current context", path.display()))?;
                let cluster = &config
                    .clusters
                    .iter()
                    .find(|c| c.name == context.context.cluster)
                    .ok_or_else(|| {
                        format!(
                            "{}: no cluster {:?}",
                            path.display(),
                            context.context.cluster
                        )
                    })?
                    .cluster;
                let user = &config
                    .users
                    .iter()
                    .find(|u| u.name == context.context.user)
                    .ok_or_else(|| {
                        format!("{}: no user {:?}", path.display(), context.context.user)
                    })?
                    .user;
                let ca = file_or_data(dir, &cluster.ca_file, &cluster.ca_data)?;
                let cert = file_or_data(dir, &user.cert_file, &user.cert_data)?;
                let key = file_or_data(dir, &user.key_file, &user.key_data)?;
                let identity = match (cert, key) {
                    (Some(c), Some(k)) => Some((c, k)),
                    (None, None) => None,
                    _ => {
                        return Err(format!(
                            "{}: a client certificate needs its key",
                            path.display()
                        ));
                    }
                };
                (
                    cluster.server.trim_end_matches('/').to_owned(),
                    ca,
                    identity,
                    user.token.clone(),
                    user.token_file.as_ref().map(|f| dir.join(f)),
                )
            }
            None => {
                let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
                    "not in a cluster (KUBERNETES_SERVICE_HOST is not set): pass --kubeconfig"
                        .to_owned()
                })?;
                let port =
                    std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host
                };
                let dir = Path::new(IN_CLUSTER);
                (
                    format!("https://{host}:{port}"),
                    Some(read(&dir.join("ca.crt"))?),
                    None,
                    None,
                    Some(dir.join("token")),
                )
            }
        };
        let mut roots = rustls::RootCertStore::empty();
        if let Some(ca) = &ca {
            for cert in CertificateDer::pem_slice_iter(ca) {
                let cert = cert.map_err(|e| format!("the API server's CA is not PEM: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("the API server's CA: {e}"))?;
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
        let tls = match identity {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(&cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("the client certificate is not PEM: {e}"))?;
                let key = PrivateKeyDer::from_pem_slice(&key)
                    .map_err(|e| format!("the client key is not PEM: {e}"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("the client certificate: {e}"))?
            }
            None => builder.with_no_client_auth(),
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build(connector);
        Ok(Kube {
            server,
            token_file,
            token,
            client,
        })
    }

    /// One request to the API server: its status and JSON answer (`null` when none).
    pub async fn call(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(hyper::StatusCode, serde_json::Value), String> {
        let uri = format!("{}{path}", self.server);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(&uri)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .header("user-agent", "meshvm-join-server");
        let bearer = match (&self.token_file, &self.token) {
            (Some(file), _) => Some(String::from_utf8_lossy(&read(file)?).trim().to_owned()),
            (None, Some(token)) => Some(token.clone()),
            (None, None) => None,
        };
        if let Some(bearer) = bearer {
            req = req.header("authorization", format!("Bearer {bearer}"));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("the API server cannot be reached: {}", causes(&e)))?;
        let status = resp.status();
        let bytes = http_body_util::Limited::new(resp.into_body(), 1 << 20)
            .collect()
            .await
            .map_err(|e| format!("the API server's answer cannot be read: {e}"))?
            .to_bytes();
        Ok((status, serde_json::from_slice(&bytes).unwrap_or_default()))
    }

    /// A TokenRequest for `namespace/sa`: audience `istio-ca`, `seconds` long.
    pub async fn token_request(
        &self,
        namespace: &str,
        sa: &str,
        seconds: u32,
    ) -> Result<Minted, String> {
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": ["istio-ca"], "expirationSeconds": seconds},
        });
        let (status, value) = self
            .call(
                hyper::Method::POST,
                &format!("/api/v1/namespaces/{namespace}/serviceaccounts/{sa}/token"),
                Some(&body),
            )
            .await?;
        if !status.is_success() {
            // A Status object: its message says what RBAC or validation refused.
            return Err(format!(
                "TokenRequest for {namespace}/{sa}: {status}: {}",
                value["message"].as_str().unwrap_or("no message")
            ));
        }
        match (
            value["status"]["token"].as_str(),
            value["status"]["expirationTimestamp"].as_str(),
        ) {
            (Some(token), Some(exp)) => Ok(Minted {
                token: token.to_owned(),
                expiration_timestamp: exp.to_owned(),
            }),
            _ => Err(format!(
                "TokenRequest for {namespace}/{sa}: the answer has no token"
            )),
        }
    }
}

/// An error and its sources, `: `-separated (hyper's own text is only "client error (Connect)").
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
