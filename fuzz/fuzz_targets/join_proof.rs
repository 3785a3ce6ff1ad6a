//! The join broker's parsers of untrusted input never panic: the request body, the AWS
//! instance identity document and signature, its PKCS#7 `rsa2048`, Azure's attested document
//! (CMS SignedData, raw DER or base64), the GCE identity token, the join token. The trusted
//! keys are the test fixtures', so valid-looking inputs reach the signature checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshvm::join::{self, Trust, azure::AzureTrust, keys::KeySet, tokens::TokenBook};

const AWS: &str = include_str!("../../fixtures/join/aws-test.crt");
const GCP: &str = include_str!("../../fixtures/join/gcp-test.crt");
const AZURE_ROOT: &str = include_str!("../../fixtures/join/azure-test-root.crt");
const AZURE_ISSUING: &str = include_str!("../../fixtures/join/azure-test-intermediate.crt");
const FLEET: &str = include_str!("../../fixtures/join/meshvm.yaml");

fuzz_target!(|data: &[u8]| {
    let keys = |pem: &str| {
        KeySet::from_json(&serde_json::json!({"eu-west-1": pem, "k1": pem}).to_string()).unwrap()
    };
    let trust = Trust {
        aws: keys(AWS),
        aws_rsa2048: keys(AWS),
        azure: AzureTrust::from_pem(AZURE_ROOT, AZURE_ISSUING).unwrap(),
        gcp: keys(GCP),
        gcp_audience: "https://broker".into(),
        max_age: join::DEFAULT_MAX_AGE,
        aws_max_instance_age: Some(86_400),
    };
    let fleet = meshvm::spec::load_fleet_str(FLEET, "meshvm.yaml".as_ref()).unwrap();
    let policy = join::Policy::from_fleet(&fleet);
    if let Ok(request) = join::protocol::parse_request(data) {
        let now = request.timestamp;
        let _ = join::authorize(&policy, &trust, &mut TokenBook::default(), &request, now);
    }
    // Raw DER (the seeds' .der files): the CMS parser, then each proof's whole check.
    let _ = join::cms::parse(data, "fuzz input");
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, data);
    let _ = join::aws::verify_rsa2048(&b64, &trust.aws_rsa2048);
    let _ = join::azure::verify(&b64, &trust.azure, 1_800_000_000);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = join::azure::timestamp_seconds(text);
        let _ = join::azure::verify(text, &trust.azure, 1_800_000_000);
        let (a, b) = text.split_once('\n').unwrap_or((text, ""));
        let _ = join::aws::verify(a, b, &trust.aws);
        let _ = join::aws::pending_time_seconds(text);
        let _ = join::gcp::verify(text, &trust.gcp, "https://broker", 0);
        let _ = TokenBook::default().check(text, 0);
        let _ = KeySet::from_json(text);
    }
});

