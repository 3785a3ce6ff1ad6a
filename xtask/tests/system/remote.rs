//! Schemas over http: fetched with curl from a small server on 127.0.0.1, kept in the cache,
//! and served from the cache (404s included) once the server is gone.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use xtask::schemas::SchemaLocations;
use xtask::validate::{Status, Validator};

/// A one-thread HTTP/1.0-style server: GET of a known path is 200, anything else 404.
struct Server {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(files: BTreeMap<String, String>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, stopped) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let mut line = String::new();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                reader.read_line(&mut line).unwrap();
                // Read the headers up to the blank line.
                let mut header = String::new();
                while reader.read_line(&mut header).unwrap() > 2 {
                    header.clear();
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                log.lock().unwrap().push(path.clone());
                let (status, body) = match files.get(&path) {
                    Some(body) => ("200 OK", body.as_str()),
                    None => ("404 Not Found", "404: Not Found"),
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.shutdown(Shutdown::Both);
            }
        });
        Server {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wake the accept loop
        self.thread.take().unwrap().join().unwrap();
    }
}

const THING: &str = r#"{"type": "object", "additionalProperties": false,
  "properties": {"apiVersion": {}, "kind": {}, "metadata": {},
    "spec": {"type": "object", "properties": {"port": {"type": "integer"}}}}}"#;

const MANIFEST: &str = "apiVersion: v1\nkind: Thing\nmetadata: {name: a}\nspec: {port: 1}\n---\n\
    apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: b}\nspec: {port: x}\n";

fn require_curl() {
    assert!(
        xtask::on_path("curl").is_some(),
        "`curl` fetches http(s) schemas and is not on PATH: apt-get install curl"
    );
}

#[test]
fn fetches_once_then_serves_from_the_cache() {
    require_curl();
    let files = BTreeMap::from([
        (
            "/k8s/master-standalone-strict/thing-v1.json".to_string(),
            THING.to_string(),
        ),
        (
            "/crds/example.com/gadget_v1.json".to_string(),
            THING.to_string(),
        ),
    ]);
    let server = Server::start(files);
    let base = format!("http://127.0.0.1:{}", server.port);
    let cache = tempfile::tempdir().unwrap();
    let locations = SchemaLocations::new(&[
        format!("{base}/k8s"),
        format!("{base}/crds/{{{{ .Group }}}}/{{{{ .ResourceKind }}}}_{{{{ .ResourceAPIVersion }}}}.json"),
    ])
    .unwrap()
    .with_cache_dir(cache.path());

    let statuses = |validator: &Validator| -> Vec<(Status, Vec<String>)> {
        validator
            .validate_stream("m.yaml", MANIFEST)
            .into_iter()
            .map(|v| (v.status, v.problems.into_iter().map(|p| p.path).collect()))
            .collect()
    };
    let want = vec![
        (Status::Valid, vec![]),
        (Status::Invalid, vec!["/spec/port".to_string()]),
    ];

    assert_eq!(statuses(&Validator::new(locations.clone())), want);
    assert_eq!(
        server.requests(),
        [
            "/k8s/master-standalone-strict/thing-v1.json",
            "/k8s/master-standalone-strict/gadget-example-v1.json", // 404: next location
            "/crds/example.com/gadget_v1.json",
        ]
    );
    // A second validator in the same process goes to the cache, not to the server.
    assert_eq!(statuses(&Validator::new(locations.clone())), want);
    assert_eq!(server.requests().len(), 3);

    // With the server gone, the cache still answers, the 404 included.
    server.stop();
    assert_eq!(statuses(&Validator::new(locations.clone())), want);

    // Without the cache, the same lookup fails, saying how to point at schemas.
    let uncached = SchemaLocations {
        cache_dir: None,
        ..locations
    };
    let verdicts = Validator::new(uncached).validate_stream("m.yaml", MANIFEST);
    assert_eq!(verdicts[0].status, Status::Error);
    assert!(
        verdicts[0].message.contains("fetching http://127.0.0.1:")
            && verdicts[0].message.contains("MESHVM_SCHEMAS=DIR"),
        "{}",
        verdicts[0].message
    );
}

#[test]
fn a_server_error_stops_the_lookup() {
    require_curl();
    // 500 is neither a schema nor "not here": kubeconform stops there, and so does xtask.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let thread = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut line = String::new();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        while reader.read_line(&mut line).unwrap() > 2 {
            line.clear();
        }
        let _ = stream
            .write_all(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    });
    let locations = SchemaLocations::new(&[format!("http://127.0.0.1:{port}/k8s")]).unwrap();
    let verdict = &Validator::new(locations).validate_stream("m.yaml", MANIFEST)[0];
    thread.join().unwrap();
    assert_eq!(verdict.status, Status::Error);
    assert!(
        verdict.message.contains("HTTP status 500"),
        "{}",
        verdict.message
    );
}
