//! A stand-in for Azure's Instance Metadata Service and the GCE metadata server, serving the
//! two identity proofs the join script fetches, signed by the test keys of fixtures/join/, on
//! 169.254.169.254:80 inside a network namespace. It exists because no upstream emulator of
//! Azure IMDS's attested document or of the GCE metadata server's identity token can be built
//! here (AWS has one, amazon-ec2-metadata-mock, which tests/mesh/imds.rs runs instead). It
//! serves only these two endpoints, and refuses a request without the header the real services
//! demand (`Metadata: true`, `Metadata-Flavor: Google`) as they do, so that the script's
//! headers are tested too. The proofs are made per request, as the real services make them:
//! Azure's document carries the request's nonce, GCE's token the request's audience.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Who the VM is, as its metadata service says.
#[derive(Debug, Clone)]
pub struct Identity {
    pub azure_subscription: String,
    pub azure_vm_id: String,
    pub gcp_project: String,
    pub gcp_zone: String,
    pub gcp_instance: String,
}

/// The stand-in, listening in a network namespace until dropped.
pub struct MetadataServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetadataServer {
    /// Serves on `addr` (`169.254.169.254:80`) in the network namespace `netns` (`ip netns`).
    pub fn start(netns: &str, addr: &str, identity: Identity) -> MetadataServer {
        let ns = std::fs::File::open(format!("/run/netns/{netns}")).expect("the namespace");
        let (ready, bound) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let addr = addr.to_owned();
        let thread = std::thread::spawn(move || {
            // setns moves this thread only: the listener is made in the VM's namespace.
            // SAFETY: a valid namespace file descriptor and a constant flag.
            let moved = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(moved, 0, "setns: {}", std::io::Error::last_os_error());
            let listener = TcpListener::bind(&addr).expect("the metadata address");
            listener.set_nonblocking(true).unwrap();
            ready.send(()).unwrap();
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let _ = serve(stream, &identity);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        bound
            .recv_timeout(Duration::from_secs(10))
            .expect("the metadata stand-in listens");
        MetadataServer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for MetadataServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A request's target and headers (these endpoints take no body).
fn read_head(stream: &TcpStream) -> std::io::Result<(String, Vec<(String, String)>)> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("").to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    Ok((target, headers))
}

/// The decoded query parameters of a target.
fn query(target: &str) -> Vec<(String, String)> {
    let query = target.split_once('?').map_or("", |(_, q)| q);
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

fn serve(mut stream: TcpStream, identity: &Identity) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let (target, headers) = read_head(&stream)?;
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let params = query(&target);
    let param = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let path = target.split('?').next().unwrap_or("");
    let now = crate::support::broker::unix_now();
    // Statuses and messages as the real services answer.
    let (status, kind, body) = match path {
        "/metadata/attested/document" if header("metadata") != Some("true") => (
            "400 Bad Request",
            "application/json",
            r#"{"error":"Bad request. Required metadata header not specified"}"#.to_owned(),
        ),
        "/metadata/attested/document" if param("api-version").is_none() => (
            "400 Bad Request",
            "application/json",
            r#"{"error":"Bad request. api-version was not specified in the request"}"#.to_owned(),
        ),
        "/metadata/attested/document" => {
            // Without a nonce Azure uses the time, as digits.
            let nonce = param("nonce").map_or_else(|| now.to_string(), str::to_owned);
            let document = testkit::join::azure_document(
                &nonce,
                &identity.azure_subscription,
                &identity.azure_vm_id,
                now,
            );
            let signature = testkit::join::azure_signature(&document);
            (
                "200 OK",
                "application/json",
                format!(r#"{{"encoding":"pkcs7","signature":"{signature}"}}"#),
            )
        }
        "/computeMetadata/v1/instance/service-accounts/default/identity"
            if header("metadata-flavor") != Some("Google") =>
        {
            (
                "403 Forbidden",
                "text/html",
                "Missing Metadata-Flavor:Google header.".to_owned(),
            )
        }
        "/computeMetadata/v1/instance/service-accounts/default/identity" => {
            match (param("audience"), param("format")) {
                (None | Some(""), _) => (
                    "400 Bad Request",
                    "text/plain",
                    "non-empty audience parameter required".to_owned(),
                ),
                // The stand-in makes only the `full` token, the one that names the project.
                (Some(audience), Some("full")) => (
                    "200 OK",
                    "text/plain",
                    testkit::join::gcp_token(
                        "k1",
                        &testkit::join::gcp_claims(
                            audience,
                            now,
                            now + 3600,
                            &identity.gcp_project,
                            &identity.gcp_zone,
                            &identity.gcp_instance,
                        ),
                    ),
                ),
                _ => (
                    "400 Bad Request",
                    "text/plain",
                    "this stand-in serves format=full only".to_owned(),
                ),
            }
        }
        _ => ("404 Not Found", "text/plain", "not found".to_owned()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
