//! The join broker's parsers of untrusted input never panic: the request body, the AWS
//! instance identity document and signature, the GCE identity token, the join token. The
//! trusted keys are the test fixtures', so valid-looking inputs reach the signature checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshvm::join::{self, Trust, keys::KeySet, tokens::TokenBook};

const AWS: &str = include_str!("../../fixtures/join/aws-test.crt");
const GCP: &str = include_str!("../../fixtures/join/gcp-test.crt");
const FLEET: &str = include_str!("../../fixtures/join/meshvm.yaml");

fuzz_target!(|data: &[u8]| {
    let keys = |pem: &str| {
        KeySet::from_json(&serde_json::json!({"eu-west-1": pem, "k1": pem}).to_string()).unwrap()
    };
    let trust = Trust {
        aws: keys(AWS),
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
    if let Ok(text) = std::str::from_utf8(data) {
        let (a, b) = text.split_once('\n').unwrap_or((text, ""));
        let _ = join::aws::verify(a, b, &trust.aws);
        let _ = join::aws::pending_time_seconds(text);
        let _ = join::gcp::verify(text, &trust.gcp, "https://broker", 0);
        let _ = TokenBook::default().check(text, 0);
        let _ = KeySet::from_json(text);
    }
});
