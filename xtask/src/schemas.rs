//! Where JSON schemas come from, resolved the way kubeconform resolves them.
//!
//! A schema location is a template (`{{ .ResourceKind }}`, `{{ .Group }}`, …) naming a local
//! file or an http(s) URL. Locations are tried in order; a missing file or a 404 moves on to the
//! next one, any other failure stops the lookup. http(s) schemas are fetched with `curl` into an
//! on-disk cache (404s too), so a second run needs no network.
//!
//! Architecture invariant: this module only finds and reads schema bytes; it knows nothing of
//! manifests or verdicts.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The environment variable naming the schema root (a directory or an http(s) base URL in
/// kubeconform's layout).
pub const ENV: &str = "MESHVM_SCHEMAS";

/// kubeconform's default location: yannh/kubernetes-json-schema.
pub const KUBERNETES_JSON_SCHEMA: &str = "https://raw.githubusercontent.com/yannh/kubernetes-json-schema/master/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json";

/// The public CRD schemas (Istio, Argo CD, Flux, …).
pub const CRDS_CATALOG: &str = "https://raw.githubusercontent.com/datreeio/CRDs-catalog/main/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json";

/// The newest cloud-config schema, from cloud-init's repository.
pub const CLOUD_INIT_SCHEMA: &str = "https://raw.githubusercontent.com/canonical/cloud-init/main/cloudinit/config/schemas/schema-cloud-config-v1.json";

/// What kubeconform appends to a location that does not end in `json`.
const DEFAULT_LAYOUT: &str = "{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json";
/// The CRD layout below a schema root.
const CRD_LAYOUT: &str = "{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json";
/// The cloud-config schema below a schema root.
const CLOUD_INIT_LAYOUT: &str = "cloud-init/schema-cloud-config-v1.json";

/// How to point at schemas; every error about finding schemas ends with it.
pub const HOW_TO_POINT: &str = "point at schemas with --schema-location TEMPLATE or MESHVM_SCHEMAS=DIR \
     (a directory in kubeconform's layout: master-standalone-strict/{kind}-{version}.json and \
     {group}/{kind}_{version}.json, plus cloud-init/schema-cloud-config-v1.json), or give this \
     machine network access to raw.githubusercontent.com";

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("schema location `{location}`: {message}")]
    Template { location: String, message: String },
    #[error("fetching {url}: {message}; {HOW_TO_POINT}")]
    Fetch { url: String, message: String },
    #[error("reading {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("schema cache {}: {source}", path.display())]
    Cache { path: PathBuf, source: io::Error },
}

/// The ordered schema locations for Kubernetes objects, the cloud-config schema, and where
/// http(s) downloads are cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaLocations {
    /// kubeconform templates, normalized (`default` and directory forms expanded).
    pub kubernetes: Vec<String>,
    /// A path or URL of the cloud-config JSON schema.
    pub cloud_init: String,
    /// Where http(s) schemas are kept between runs; `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
}

impl SchemaLocations {
    /// Locations given the kubeconform way (`--schema-location`), checked for template syntax.
    /// An empty list means kubeconform's default location.
    pub fn new<S: AsRef<str>>(locations: &[S]) -> Result<Self, SchemaError> {
        let kubernetes = if locations.is_empty() {
            vec![KUBERNETES_JSON_SCHEMA.to_string()]
        } else {
            locations.iter().map(|l| normalize(l.as_ref())).collect()
        };
        for location in &kubernetes {
            expand(
                location,
                &TemplateVars::new("Deployment", "apps/v1", "master", true),
            )
            .map_err(|message| SchemaError::Template {
                location: location.clone(),
                message,
            })?;
        }
        Ok(SchemaLocations {
            kubernetes,
            cloud_init: CLOUD_INIT_SCHEMA.to_string(),
            cache_dir: None,
        })
    }

    /// A schema root (a directory or an http(s) base URL) in kubeconform's layout: core kinds in
    /// `{version}-standalone[-strict]/{kind}{kind-suffix}.json`, CRDs in
    /// `{group}/{kind}_{version}.json`, the cloud-config schema in `cloud-init/`.
    pub fn from_root(root: impl AsRef<str>) -> Self {
        let root = root.as_ref().trim_end_matches('/');
        SchemaLocations {
            kubernetes: vec![
                format!("{root}/{DEFAULT_LAYOUT}"),
                format!("{root}/{CRD_LAYOUT}"),
            ],
            cloud_init: format!("{root}/{CLOUD_INIT_LAYOUT}"),
            cache_dir: None,
        }
    }

    /// The public locations: kubeconform's default, the CRDs catalog, cloud-init's schema.
    pub fn public() -> Self {
        SchemaLocations {
            kubernetes: vec![KUBERNETES_JSON_SCHEMA.to_string(), CRDS_CATALOG.to_string()],
            cloud_init: CLOUD_INIT_SCHEMA.to_string(),
            cache_dir: None,
        }
    }

    /// The project's setting: `MESHVM_SCHEMAS` when set, else `../shared/schemas` beside the
    /// workspace when it exists, else the public locations; http(s) downloads are cached in
    /// the workspace's `.meshvm-cache/schemas`.
    pub fn from_env_or_default() -> Self {
        let located = match std::env::var(ENV) {
            Ok(root) if !root.is_empty() => Self::from_root(root),
            _ => match shared_schemas() {
                Some(dir) => Self::from_root(dir.to_string_lossy()),
                None => Self::public(),
            },
        };
        located.with_cache_dir(default_cache_dir())
    }

    pub fn with_cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }
}

/// The workspace root (the directory of the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

/// `../shared/schemas` relative to the workspace root, when it exists.
pub fn shared_schemas() -> Option<PathBuf> {
    let dir = workspace_root().join("../shared/schemas");
    dir.is_dir().then(|| dir.canonicalize().unwrap_or(dir))
}

pub fn default_cache_dir() -> PathBuf {
    workspace_root().join(".meshvm-cache/schemas")
}

/// kubeconform's reading of a `-schema-location`: `default` is its public location, and a
/// location that does not end in `json` is a root in its layout.
fn normalize(location: &str) -> String {
    if location == "default" {
        KUBERNETES_JSON_SCHEMA.to_string()
    } else if !location.ends_with("json") {
        format!("{}/{DEFAULT_LAYOUT}", location.trim_end_matches('/'))
    } else {
        location.to_string()
    }
}

/// The values a location template can use, computed as kubeconform computes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateVars {
    /// `master`, or `v` + the version (`v1.30.0`).
    pub normalized_kubernetes_version: String,
    /// `-strict` in strict mode, else empty.
    pub strict_suffix: String,
    /// The kind, lower-cased.
    pub resource_kind: String,
    /// The version part of apiVersion (`v1` of `apps/v1`).
    pub resource_api_version: String,
    /// The group part of apiVersion (`apps`; `v1` for the core group, as kubeconform has it).
    pub group: String,
    /// `-{first label of the group}-{version}`, or `-{version}` for the core group.
    pub kind_suffix: String,
}

impl TemplateVars {
    pub fn new(kind: &str, api_version: &str, kubernetes_version: &str, strict: bool) -> Self {
        let normalized_kubernetes_version = if kubernetes_version == "master" {
            "master".to_string()
        } else {
            format!("v{kubernetes_version}")
        };
        let group_parts: Vec<&str> = api_version.split('/').collect();
        let first_label = group_parts[0].split('.').next().unwrap_or_default();
        let mut kind_suffix = format!("-{}", first_label.to_lowercase());
        if group_parts.len() > 1 {
            kind_suffix.push('-');
            kind_suffix.push_str(&group_parts[1].to_lowercase());
        }
        TemplateVars {
            normalized_kubernetes_version,
            strict_suffix: if strict { "-strict" } else { "" }.to_string(),
            resource_kind: kind.to_lowercase(),
            resource_api_version: group_parts[group_parts.len() - 1].to_string(),
            group: group_parts[0].to_string(),
            kind_suffix,
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        Some(match name {
            "NormalizedKubernetesVersion" => &self.normalized_kubernetes_version,
            "StrictSuffix" => &self.strict_suffix,
            "ResourceKind" => &self.resource_kind,
            "ResourceAPIVersion" => &self.resource_api_version,
            "Group" => &self.group,
            "KindSuffix" => &self.kind_suffix,
            _ => return None,
        })
    }
}

/// Expands the `{{ .Name }}` actions of a location template (the subset of Go templates that
/// kubeconform locations use).
pub fn expand(template: &str, vars: &TemplateVars) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "unclosed `{{`".to_string())?;
        let action = after[..end].trim();
        let value = action
            .strip_prefix('.')
            .and_then(|name| vars.get(name))
            .ok_or_else(|| {
                format!(
                    "unknown template action `{{{{{action}}}}}`; known: .NormalizedKubernetesVersion, \
                     .StrictSuffix, .ResourceKind, .ResourceAPIVersion, .Group, .KindSuffix"
                )
            })?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The result of looking at one expanded location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    Found(Vec<u8>),
    /// No such file, or HTTP 404: try the next location.
    NotFound,
}

pub fn is_remote(location: &str) -> bool {
    location.starts_with("http://") || location.starts_with("https://")
}

/// Reads one expanded location: a local file, or an http(s) URL through the cache.
pub fn fetch(location: &str, cache_dir: Option<&Path>) -> Result<Fetched, SchemaError> {
    if is_remote(location) {
        return fetch_remote(location, cache_dir);
    }
    let path = Path::new(location.strip_prefix("file://").unwrap_or(location));
    match fs::read(path) {
        Ok(bytes) => Ok(Fetched::Found(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Fetched::NotFound),
        Err(source) => Err(SchemaError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Suffix of the cache entry that records a 404, so that an offline run gets the same answer.
const NOT_FOUND_SUFFIX: &str = ".404";

fn fetch_remote(url: &str, cache_dir: Option<&Path>) -> Result<Fetched, SchemaError> {
    let cached = cache_dir.map(|dir| dir.join(cache_key(url)));
    if let Some(path) = &cached {
        if let Ok(bytes) = fs::read(path) {
            return Ok(Fetched::Found(bytes));
        }
        if not_found_marker(path).exists() {
            return Ok(Fetched::NotFound);
        }
    }
    let fetched = curl(url)?;
    if let Some(path) = &cached {
        let (target, bytes): (PathBuf, &[u8]) = match &fetched {
            Fetched::Found(bytes) => (path.clone(), bytes),
            Fetched::NotFound => (not_found_marker(path), b""),
        };
        write_atomically(&target, bytes).map_err(|source| SchemaError::Cache {
            path: target.clone(),
            source,
        })?;
    }
    Ok(fetched)
}

fn not_found_marker(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(NOT_FOUND_SUFFIX);
    PathBuf::from(name)
}

/// A readable cache path for a URL: host and path segments, each reduced to safe characters,
/// so no URL can name a file outside the cache.
pub fn cache_key(url: &str) -> PathBuf {
    let without_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let mut key = PathBuf::new();
    for segment in without_scheme.split('/').filter(|s| !s.is_empty()) {
        let safe: String = segment
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        key.push(match safe.as_str() {
            "." | ".." => "_".repeat(safe.len()),
            _ => safe,
        });
    }
    key
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().expect("a cache path has a parent");
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    io::Write::write_all(&mut tmp, bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// GET with curl: 200 is the schema, 404 is "not here", anything else is an error.
fn curl(url: &str) -> Result<Fetched, SchemaError> {
    let err = |message: String| SchemaError::Fetch {
        url: url.to_string(),
        message,
    };
    let body = tempfile::NamedTempFile::new().map_err(|e| err(e.to_string()))?;
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--location"])
        .args(["--connect-timeout", "10", "--max-time", "120"])
        .arg("--output")
        .arg(body.path())
        .args(["--write-out", "%{http_code}", url])
        .output()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                err("`curl` is not installed (apt-get install curl)".to_string())
            }
            _ => err(format!("running curl: {e}")),
        })?;
    if !output.status.success() {
        return Err(err(String::from_utf8_lossy(&output.stderr)
            .trim()
            .to_string()));
    }
    match String::from_utf8_lossy(&output.stdout).trim() {
        "200" => Ok(Fetched::Found(
            fs::read(body.path()).map_err(|e| err(e.to_string()))?,
        )),
        "404" => Ok(Fetched::NotFound),
        code => Err(err(format!("HTTP status {code}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(kind: &str, api_version: &str) -> TemplateVars {
        TemplateVars::new(kind, api_version, "master", true)
    }

    #[test]
    fn computes_the_template_values_like_kubeconform() {
        let cases = [
            // kind, apiVersion, k8s version, strict, (version, strict, kind, apiver, group, suffix)
            (
                "Service",
                "v1",
                "master",
                true,
                ["master", "-strict", "service", "v1", "v1", "-v1"],
            ),
            (
                "Deployment",
                "apps/v1",
                "1.30.0",
                false,
                ["v1.30.0", "", "deployment", "v1", "apps", "-apps-v1"],
            ),
            (
                "WorkloadEntry",
                "networking.istio.io/v1",
                "master",
                true,
                [
                    "master",
                    "-strict",
                    "workloadentry",
                    "v1",
                    "networking.istio.io",
                    "-networking-v1",
                ],
            ),
        ];
        for (kind, api_version, k8s, strict, want) in cases {
            let v = TemplateVars::new(kind, api_version, k8s, strict);
            let got = [
                v.normalized_kubernetes_version.as_str(),
                &v.strict_suffix,
                &v.resource_kind,
                &v.resource_api_version,
                &v.group,
                &v.kind_suffix,
            ];
            assert_eq!(got, want, "{kind} {api_version}");
        }
    }

    #[test]
    fn expands_templates_with_and_without_spaces() {
        assert_eq!(
            expand(KUBERNETES_JSON_SCHEMA, &vars("Service", "v1")).unwrap(),
            "https://raw.githubusercontent.com/yannh/kubernetes-json-schema/master/master-standalone-strict/service-v1.json"
        );
        assert_eq!(
            expand(
                "/s/{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json",
                &vars("WorkloadGroup", "networking.istio.io/v1")
            )
            .unwrap(),
            "/s/networking.istio.io/workloadgroup_v1.json"
        );
        assert!(
            expand("/s/{{ .Kind }}.json", &vars("A", "v1"))
                .unwrap_err()
                .contains("unknown template action `{{.Kind}}`")
        );
        assert_eq!(
            expand("/s/{{ .Group", &vars("A", "v1")).unwrap_err(),
            "unclosed `{{`"
        );
    }

    #[test]
    fn reads_locations_the_kubeconform_way() {
        let l = SchemaLocations::new(&[
            "default",
            "/schemas/",
            "/crds/{{.Group}}/{{.ResourceKind}}.json",
        ])
        .unwrap();
        assert_eq!(
            l.kubernetes,
            [
                KUBERNETES_JSON_SCHEMA.to_string(),
                format!("/schemas/{DEFAULT_LAYOUT}"),
                "/crds/{{.Group}}/{{.ResourceKind}}.json".to_string()
            ]
        );
        assert_eq!(
            SchemaLocations::new::<&str>(&[]).unwrap().kubernetes,
            [KUBERNETES_JSON_SCHEMA]
        );
        assert!(SchemaLocations::new(&["/x/{{ .Nope }}.json"]).is_err());
    }

    #[test]
    fn a_root_names_core_crd_and_cloud_init_schemas() {
        let l = SchemaLocations::from_root("/s/");
        let v = vars("Namespace", "v1");
        assert_eq!(
            expand(&l.kubernetes[0], &v).unwrap(),
            "/s/master-standalone-strict/namespace-v1.json"
        );
        let v = vars("ServiceEntry", "networking.istio.io/v1");
        assert_eq!(
            expand(&l.kubernetes[1], &v).unwrap(),
            "/s/networking.istio.io/serviceentry_v1.json"
        );
        assert_eq!(l.cloud_init, "/s/cloud-init/schema-cloud-config-v1.json");
    }

    #[test]
    fn cache_keys_stay_inside_the_cache() {
        assert_eq!(
            cache_key("https://example.com:8443/a/b c/../x.json?q=1"),
            PathBuf::from("example.com_8443/a/b_c/__/x.json_q_1")
        );
    }
}
