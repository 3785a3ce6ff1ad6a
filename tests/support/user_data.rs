//! Helpers of the `meshvm cloud-init` tests: test tokens (unsigned, not secrets), the command
//! line with its token file, and what the tests read back.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::{Run, fixture, meshvm, workspace};

pub const VM: &str = "tester-1";
pub const SUBJECT: &str = "system:serviceaccount:vm-apps:tester";
pub const HOSTS_LINE: &str = "203.0.113.10 istiod.istio-system.svc";

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An unsigned test token (not a secret) with these claims over the good defaults.
pub fn token_with(overrides: serde_json::Value) -> String {
    let mut claims =
        json!({"aud": ["istio-ca"], "sub": SUBJECT, "iat": now(), "exp": now() + 3600});
    for (k, v) in overrides.as_object().unwrap() {
        claims[k] = v.clone();
    }
    meshvm::cloudinit::token::unsigned_test_token(&claims)
}

pub fn good_token() -> String {
    token_with(json!({}))
}

pub fn seed_fleet() -> PathBuf {
    fixture("fleets/seed/meshvm.yaml")
}

pub fn root_cert() -> PathBuf {
    fixture("certs/test-root-cert.pem")
}

/// `meshvm cloud-init tester-1 -f FLEET --token-file DIR/token --root-cert CA …`.
pub fn cloud_init(dir: &Path, fleet: &Path, token: &str) -> Command {
    cloud_init_for(VM, dir, fleet, token)
}

pub fn cloud_init_for(vm: &str, dir: &Path, fleet: &Path, token: &str) -> Command {
    let mut cmd = cloud_init_without_cert(vm, dir, fleet, token);
    cmd.arg("--root-cert").arg(root_cert());
    cmd
}

pub fn cloud_init_without_cert(vm: &str, dir: &Path, fleet: &Path, token: &str) -> Command {
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let mut cmd = meshvm();
    cmd.args(["cloud-init", vm, "-f"])
        .arg(fleet)
        .arg("--token-file")
        .arg(token_file);
    cmd
}

pub fn schema_file() -> PathBuf {
    std::env::var_os("MESHVM_SCHEMAS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared/schemas"))
        .join("cloud-init/schema-cloud-config-v1.json")
}

pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

pub fn gunzip(bytes: &[u8]) -> String {
    let mut out = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(bytes), &mut out).unwrap();
    out
}

pub fn assert_ok(out: &Run) {
    assert_eq!(out.code, 0, "stderr:\n{}", out.stderr);
}
