//! The Kubernetes Secret backend of the join-token book, for brokers with several replicas:
//! the book is the `book.json` key of one Secret, read and replaced with its
//! `resourceVersion` (optimistic concurrency: a replica that lost the race reads again), so
//! no use or revocation is lost between replicas and `meshvm join-token`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hyper::{Method, StatusCode};
use meshvm::join::tokens::TokenBook;
use serde_json::{Value, json};

use super::kube::Kube;

/// The Secret's key that holds the book.
pub const KEY: &str = "book.json";
const ATTEMPTS: usize = 8;

pub struct TokenSecret {
    pub namespace: String,
    pub name: String,
}

impl TokenSecret {
    /// From `NAMESPACE/NAME`.
    pub fn parse(text: &str) -> Result<TokenSecret, String> {
        match text.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(TokenSecret {
                    namespace: ns.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(format!("{text:?} is not NAMESPACE/NAME of a Secret")),
        }
    }

    fn path(&self) -> String {
        format!(
            "/api/v1/namespaces/{}/secrets/{}",
            self.namespace, self.name
        )
    }

    /// Runs `f` on the book; writes it back when `f` returns `(_, true)`, retrying from a
    /// fresh read when another writer got there first. A missing Secret is an empty book
    /// (created on the first write).
    pub async fn update<T>(
        &self,
        kube: &Kube,
        mut f: impl FnMut(&mut TokenBook) -> (T, bool),
    ) -> Result<T, String> {
        let at = format!("Secret {}/{}", self.namespace, self.name);
        for _ in 0..ATTEMPTS {
            let (status, secret) = kube.call(Method::GET, &self.path(), None).await?;
            let (mut book, version) = match status {
                StatusCode::NOT_FOUND => (TokenBook::default(), None),
                s if s.is_success() => {
                    let book = match secret["data"][KEY].as_str() {
                        None => TokenBook::default(),
                        Some(b64) => {
                            let bytes = STANDARD
                                .decode(b64)
                                .map_err(|_| format!("{at}: {KEY} is not base64"))?;
                            serde_json::from_slice(&bytes)
                                .map_err(|e| format!("{at}: not a join-token book: {e}"))?
                        }
                    };
                    let version = secret["metadata"]["resourceVersion"]
                        .as_str()
                        .map(str::to_owned);
                    (book, version)
                }
                s => return Err(format!("{at}: {s}: {}", message(&secret))),
            };
            let (out, changed) = f(&mut book);
            if !changed {
                return Ok(out);
            }
            let mut json = serde_json::to_vec_pretty(&book).expect("JSON");
            json.push(b'\n');
            let mut body = json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "type": "Opaque",
                "data": {KEY: STANDARD.encode(&json)},
            });
            let (method, path) = match &version {
                Some(v) => {
                    body["metadata"]["resourceVersion"] = Value::String(v.clone());
                    (Method::PUT, self.path())
                }
                None => (
                    Method::POST,
                    format!("/api/v1/namespaces/{}/secrets", self.namespace),
                ),
            };
            let (status, answer) = kube.call(method, &path, Some(&body)).await?;
            match status {
                s if s.is_success() => return Ok(out),
                // Another replica (or `meshvm join-token`) wrote first: read again.
                StatusCode::CONFLICT => continue,
                s => return Err(format!("{at}: {s}: {}", message(&answer))),
            }
        }
        Err(format!("{at}: still changing after {ATTEMPTS} attempts"))
    }
}

fn message(status: &Value) -> &str {
    status["message"].as_str().unwrap_or("no message")
}
