//! Checks of a cloud-init user-data document: the newest cloud-config JSON schema, and
//! `cloud-init schema -c` when cloud-init is installed (Debian 12 has 22.4, which accepts
//! unknown top-level keys that the newest schema rejects, so both are run).
//!
//! Architecture invariant: the document is read as cloud-init reads it (PyYAML, YAML 1.1), so
//! an unquoted `0644` or `yes` is checked as the number or boolean cloud-init would see.

use std::io::Read as _;
use std::process::Command;

use serde_json::Value;

use crate::kube;
use crate::schemas::{self, Fetched, SchemaLocations};

/// The header line cloud-init requires of a cloud-config document.
pub const HEADER: &str = "#cloud-config";

/// Checks user-data (plain or gzip-compressed) against the schemas of
/// [`SchemaLocations::from_env_or_default`]. Each error is one line, `path: message`.
pub fn validate_user_data(user_data: impl AsRef<[u8]>) -> Result<(), Vec<String>> {
    validate_user_data_with(&SchemaLocations::from_env_or_default(), user_data)
}

/// As [`validate_user_data`], with the schema at `locations.cloud_init`.
pub fn validate_user_data_with(
    locations: &SchemaLocations,
    user_data: impl AsRef<[u8]>,
) -> Result<(), Vec<String>> {
    let text = decode(user_data.as_ref()).map_err(|e| vec![e])?;
    let mut errors = check_schema(locations, &text);
    if let Some(problem) = check_with_cloud_init(&text) {
        errors.push(problem);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The document as text; cloud-init gunzips user-data itself, so gzip is accepted here too.
fn decode(bytes: &[u8]) -> Result<String, String> {
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map_err(|e| format!("gzip-compressed user-data does not decompress: {e}"))?;
        out
    } else {
        bytes.to_vec()
    };
    String::from_utf8(bytes).map_err(|e| format!("user-data is not UTF-8: {e}"))
}

/// The header, the YAML, and the JSON schema.
pub fn check_schema(locations: &SchemaLocations, text: &str) -> Vec<String> {
    if text.lines().next().map(str::trim_end) != Some(HEADER) {
        return vec![format!(
            "the first line must be `{HEADER}`; without it cloud-init does not read the document \
             as cloud-config"
        )];
    }
    // Duplicate keys are an error although PyYAML keeps the last one: a generated document
    // with two `runcmd:` keys silently loses one.
    let config = match kube::parse_document(text, 1, true) {
        Ok(Some(config @ Value::Object(_))) => config,
        Ok(_) => return vec!["cloud-config must be a mapping".to_string()],
        Err(e) => return vec![e.replace("error unmarshalling resource", "YAML")],
    };
    let validator = match load_schema(locations) {
        Ok(v) => v,
        Err(e) => return vec![e],
    };
    validator
        .iter_errors(&config)
        .map(|e| {
            let path = e.instance_path().to_string();
            let path = if path.is_empty() {
                "(root)".to_string()
            } else {
                path
            };
            format!("{path}: {e}")
        })
        .collect()
}

fn load_schema(locations: &SchemaLocations) -> Result<jsonschema::Validator, String> {
    let location = &locations.cloud_init;
    match schemas::fetch(location, locations.cache_dir.as_deref()) {
        Ok(Fetched::Found(bytes)) => crate::validate::compile(&bytes)
            .map_err(|e| format!("cloud-config schema {location}: {e}")),
        Ok(Fetched::NotFound) => Err(format!(
            "cloud-config schema not found at {location}; {}",
            schemas::HOW_TO_POINT
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// `cloud-init schema -c FILE` when cloud-init is installed; `None` when it passes or is absent.
pub fn check_with_cloud_init(text: &str) -> Option<String> {
    if !cloud_init_installed() {
        return None;
    }
    let file = match tempfile::NamedTempFile::new()
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()).map(|()| f))
    {
        Ok(f) => f,
        Err(e) => return Some(format!("cloud-init schema: writing a temporary file: {e}")),
    };
    match Command::new("cloud-init")
        .args(["schema", "-c"])
        .arg(file.path())
        .output()
    {
        Ok(out) if out.status.success() => None,
        Ok(out) => {
            // cloud-init prints headers ("Error:", an empty deprecations list) around the
            // errors, on both streams: keep the lines that say something.
            let text = format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let said: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.ends_with(':'))
                .collect();
            Some(format!("cloud-init schema -c: {}", said.join(" ")))
        }
        Err(e) => Some(format!("running cloud-init schema: {e}")),
    }
}

pub fn cloud_init_installed() -> bool {
    crate::on_path("cloud-init").is_some()
}
