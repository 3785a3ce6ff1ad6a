use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use meshvm::join::{DEFAULT_MAX_AGE, Trust, azure::AzureTrust, keys::KeySet};

use crate::broker::{self, PolicySource};
use crate::command_error::{CmdResult, CommandError};

/// Run the join broker: VMs prove who they are and get a short-lived istio-token.
///
/// Serves `POST /v1/join` over TLS. A VM sends the workload group it joins and a proof of
/// identity (a join token, an AWS instance identity document or its PKCS#7 `rsa2048`, a GCE
/// identity token, an Azure attested document); the
/// broker checks it against the fleet's `join` policy and answers with a token from the
/// Kubernetes TokenRequest API for the group's ServiceAccount (audience `istio-ca`). Each
/// decision is one JSON line on stderr (never the token).
///
/// In a cluster it uses in-cluster credentials: `meshvm render` puts its Deployment, policy
/// ConfigMap (`--policy`) and RBAC into the tree of a fleet with a broker-joined group (see
/// docs/join.md). Outside a cluster, pass `--kubeconfig` (its current
/// context; client certificate or bearer token) and `--fleet`: the tests run it that way.
/// docs/join.md has the protocol, the set-up per cloud and the threat model.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (`127.0.0.1:0` picks a free port; the first audit line says it).
    #[arg(long, default_value = "0.0.0.0:15443")]
    listen: SocketAddr,
    /// The serving certificate chain (PEM; `tls.crt` of a cert-manager Secret).
    #[arg(long, value_name = "FILE")]
    tls_cert: PathBuf,
    /// The serving certificate's key (PEM; `tls.key`).
    #[arg(long, value_name = "FILE")]
    tls_key: PathBuf,
    /// A kubeconfig; without it, the pod's own ServiceAccount (in-cluster).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The fleet file: its `join` policies decide who may join (re-read when it changes).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "policy",
        required_unless_present = "policy"
    )]
    fleet: Option<PathBuf>,
    /// A policy JSON file instead of the fleet (re-read when it changes).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// The join-token book (`meshvm join-token --book`) for `join-token` groups.
    #[arg(long, value_name = "FILE")]
    join_tokens: Option<PathBuf>,
    /// The join-token book in a Kubernetes Secret, `NAMESPACE/NAME` (key `book.json`): for
    /// several replicas (the file of --join-tokens serves one process).
    #[arg(long, value_name = "NAMESPACE/NAME", conflicts_with = "join_tokens")]
    join_tokens_secret: Option<String>,
    /// AWS's regional RSA certificates, as JSON `{"eu-west-1": "-----BEGIN CERTIFICATE-----…"}`.
    #[arg(long, value_name = "FILE")]
    aws_certs: Option<PathBuf>,
    /// AWS's regional RSA-2048 certificates for the PKCS#7 `rsa2048` proof, as JSON by region
    /// like --aws-certs (AWS publishes them apart from the `/signature` ones).
    #[arg(long, value_name = "FILE")]
    aws_rsa2048_certs: Option<PathBuf>,
    /// The root CAs (PEM) Azure's attested-document signer (`metadata.azure.com`) must chain
    /// to: Microsoft's and DigiCert's roots for Azure's public cloud.
    #[arg(long, value_name = "FILE")]
    azure_roots: Option<PathBuf>,
    /// The issuing CAs (PEM) between those roots and the signer, which the attested document
    /// leaves out (Microsoft publishes them).
    #[arg(long, value_name = "FILE", requires = "azure_roots")]
    azure_intermediates: Option<PathBuf>,
    /// Google's signing certificates, as `https://www.googleapis.com/oauth2/v1/certs` serves them.
    #[arg(long, value_name = "FILE")]
    gcp_certs: Option<PathBuf>,
    /// The audience GCE identity tokens must carry: the broker's URL as the VMs call it.
    #[arg(long, value_name = "URL", default_value = "")]
    gcp_audience: String,
    /// Lifetime of the istio-tokens, in seconds (the TokenRequest API's minimum is 600).
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u32).range(600..=3600))]
    token_seconds: u32,
    /// How far a request's timestamp may be from the broker's clock, in seconds.
    #[arg(long, default_value_t = DEFAULT_MAX_AGE)]
    max_age: i64,
    /// Refuse AWS instances whose last start (`pendingTime`) is more than this many seconds
    /// ago: bounds how long a copied identity document can be replayed (a stop and start
    /// gives the instance a new one). Unset: any age.
    #[arg(long, value_name = "SECONDS")]
    aws_max_instance_age: Option<i64>,
    /// Requests per second per source address (refill rate).
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// Requests a source may send at once before the rate applies.
    #[arg(long, default_value_t = 20)]
    burst: u32,
    /// Seconds for the TLS handshake and for the request headers.
    #[arg(long, default_value_t = 5)]
    header_timeout: u64,
    /// Seconds for the request body.
    #[arg(long, default_value_t = 10)]
    request_timeout: u64,
    /// Open connections at most; more are closed at once.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
}

fn keys(path: &Option<PathBuf>) -> Result<KeySet, CommandError> {
    match path {
        None => Ok(KeySet::default()),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CommandError::invalid(format!("{}: {e}", path.display())))?;
            KeySet::from_json(&text)
                .map_err(|e| CommandError::invalid(format!("{}: {e}", path.display())))
        }
    }
}

fn read(path: &PathBuf) -> Result<String, CommandError> {
    std::fs::read_to_string(path)
        .map_err(|e| CommandError::invalid(format!("{}: {e}", path.display())))
}

fn azure(
    roots: &Option<PathBuf>,
    intermediates: &Option<PathBuf>,
) -> Result<AzureTrust, CommandError> {
    let Some(roots) = roots else {
        return Ok(AzureTrust::default());
    };
    let issuing = intermediates
        .as_ref()
        .map(read)
        .transpose()?
        .unwrap_or_default();
    AzureTrust::from_pem(&read(roots)?, &issuing)
        .map_err(|e| CommandError::invalid(format!("{}: {e}", roots.display())))
}

pub fn run(args: Args) -> CmdResult {
    let policy = match (&args.fleet, &args.policy) {
        (Some(fleet), _) => PolicySource::new(fleet, true),
        (None, Some(policy)) => PolicySource::new(policy, false),
        (None, None) => unreachable!("clap requires one"),
    }
    .map_err(CommandError::invalid)?;
    let trust = Trust {
        aws: keys(&args.aws_certs)?,
        aws_rsa2048: keys(&args.aws_rsa2048_certs)?,
        azure: azure(&args.azure_roots, &args.azure_intermediates)?,
        gcp: keys(&args.gcp_certs)?,
        gcp_audience: args.gcp_audience,
        max_age: args.max_age,
        aws_max_instance_age: args.aws_max_instance_age,
    };
    let config = broker::Config {
        listen: args.listen,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        kubeconfig: args.kubeconfig,
        policy,
        join_tokens: args.join_tokens,
        join_tokens_secret: args
            .join_tokens_secret
            .as_deref()
            .map(broker::token_secret::TokenSecret::parse)
            .transpose()
            .map_err(CommandError::usage)?,
        trust,
        token_seconds: args.token_seconds,
        rate_per_second: args.rate,
        burst: args.burst,
        header_timeout: Duration::from_secs(args.header_timeout),
        request_timeout: Duration::from_secs(args.request_timeout),
        max_connections: args.max_connections,
    };
    broker::serve(config).map_err(CommandError::invalid)?;
    Ok(ExitCode::SUCCESS)
}
