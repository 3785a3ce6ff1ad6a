//! The cloud-init user-data that joins one VM to the mesh: a `#cloud-config` document rendered
//! from handlebars templates (embedded defaults, or a user's own), carrying the VM's mesh files
//! base64-encoded and one `set -e` step that installs and starts the sidecar.
//!
//! Stage order (see DESIGN.md, "cloud-init facts that bite"): `write_files` (init stage, not
//! deferred) writes the files owned by root, because `istio-proxy` does not exist before the
//! package; `runcmd` (final stage, after the network) downloads the package, checks its sha256,
//! installs it, and only then chowns the files, adds the hosts entry and starts `istio`.
//! `/etc/istio` is never written before the package: its postinst makes it a symlink to
//! `/var/lib/istio` only when it does not exist, so the mesh config goes to
//! `/var/lib/istio/config/mesh`.
//!
//! Architecture invariant: pure. The token and root certificate checks take `now` as an
//! argument; templates come in as strings; the output is a string.

pub mod group;
mod quote;
pub mod token;

use std::io::Write;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use handlebars::template::{Parameter, Template, TemplateElement};
use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, Output, RenderContext, RenderError,
    RenderErrorReason,
};
use serde_json::{Value, json};
use time::UtcDateTime;

pub use quote::{shell_word, yaml_block, yaml_scalar};

use self::token::{IstioToken, TokenError};
use crate::spec::root_cert::{self, RootCert, RootCertError};
use crate::spec::{CheckedFleet, PackageFormat};
use crate::timestamp::rfc3339;
use crate::tree::FileTree;
use crate::vmfiles;

/// The embedded default of the document template.
pub const USER_DATA_TEMPLATE: &str = include_str!("templates/user-data.yaml.hbs");
/// The embedded default of the join script template (rendered first, then quoted into the
/// document as `joinScript`).
pub const JOIN_TEMPLATE: &str = include_str!("templates/join.sh.hbs");
/// File names of the templates, in a `--template` directory too.
pub const USER_DATA_TEMPLATE_NAME: &str = "user-data.yaml.hbs";
pub const JOIN_TEMPLATE_NAME: &str = "join.sh.hbs";

/// Where the token goes on the VM (a tmpfs: gone after a reboot, by which time the sidecar
/// has its own certificate).
pub const TOKEN_PATH: &str = "/var/run/secrets/tokens/istio-token";

/// The VM's mesh files (from [`vmfiles::vm_files`]) and where each goes on the VM. Not
/// [`vmfiles::DESTINATIONS`]'s /etc/istio/config/mesh: /etc/istio must not exist before the
/// package makes it its symlink. `hosts` is not a file of its own: the join step adds its
/// lines to /etc/hosts.
const PLACEMENT: &[(&str, &str)] = &[
    (vmfiles::ROOT_CERT, "/etc/certs/root-cert.pem"),
    (vmfiles::CLUSTER_ENV, "/var/lib/istio/envoy/cluster.env"),
    (vmfiles::MESH_YAML, "/var/lib/istio/config/mesh"),
];
const HOSTS_FILE: &str = vmfiles::HOSTS;
const ROOT_CERT_FILE: &str = vmfiles::ROOT_CERT;

/// Helpers that quote a value; the only expressions a template may use.
const QUOTING_HELPERS: &[&str] = &["yaml", "yaml-block", "sh"];
/// Block helpers a template may use around them.
const BLOCK_HELPERS: &[&str] = &["if", "unless", "each", "with"];

/// The two templates: the embedded defaults unless overridden.
#[derive(Debug, Clone)]
pub struct Templates {
    pub user_data: String,
    pub join: String,
}

impl Default for Templates {
    fn default() -> Self {
        Templates {
            user_data: USER_DATA_TEMPLATE.to_owned(),
            join: JOIN_TEMPLATE.to_owned(),
        }
    }
}

/// Everything one VM's user-data is made of.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub fleet: &'a CheckedFleet,
    /// The VM's name (an instance of the fleet).
    pub vm: &'a str,
    /// The VM's mesh files: `cluster.env`, `mesh.yaml`, `hosts`, `root-cert.pem`.
    pub files: &'a FileTree,
    /// The istio-token as the user gave it; checked here (see [`crate::cloudinit::token`]).
    pub token: &'a str,
    /// The time the checks use.
    pub now: UtcDateTime,
    /// How long the token must still be valid at `now`.
    pub min_token_validity: Duration,
}

/// A rendered user-data document.
#[derive(Debug, Clone)]
pub struct UserData {
    /// The `#cloud-config` document. Holds the token: treat it as a secret.
    pub document: String,
    /// When the token in it expires.
    pub token_expires_at: UtcDateTime,
    /// The root certificates it carries.
    pub root_certs: Vec<RootCert>,
    /// What the user should know, such as a package without a pinned checksum.
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CloudInitError {
    #[error("the fleet has no VM named `{0}`")]
    UnknownVm(String),
    #[error("the VM's files lack {0}")]
    MissingFile(&'static str),
    #[error(
        "the VM's files hold {0}, which the user-data has no place for (the token is passed on its own)"
    )]
    UnexpectedFile(String),
    #[error("{source}\n  hint: {hint}")]
    Token {
        #[source]
        source: TokenError,
        hint: String,
    },
    #[error(
        "{0}\n  hint: give the mesh's root-cert.pem (the istio-ca-root-cert ConfigMap of the istio namespace)"
    )]
    RootCert(#[from] RootCertError),
    #[error("template {name}: {message}")]
    Template { name: String, message: String },
    #[error(
        "template {name}:{line}:{column}: `{expression}` is not quoted\n  hint: pass the value through a quoting helper: {{{{yaml …}}}}, {{{{yaml-block … indent=N}}}} or {{{{sh …}}}}"
    )]
    Unquoted {
        name: String,
        line: usize,
        column: usize,
        expression: String,
    },
    #[error("the fleet has no workload group named `{0}`")]
    UnknownGroup(String),
    #[error("workload groups named `{group}` are in several namespaces ({}): name one with --namespace", .namespaces.join(", "))]
    AmbiguousGroup {
        group: String,
        namespaces: Vec<String>,
    },
    #[error(
        "group {group} joins by `{method}`, not through the join broker\n  hint: its VMs need a token each: meshvm cloud-init --group with --token-dir, or set the group's `join.method` to join-token, aws, gcp or azure"
    )]
    NotBrokerJoined { group: String, method: &'static str },
    #[error(
        "the join broker's CA: {0}\n  hint: give the `ca.crt` of the broker's serving-certificate Secret (joinBroker.tlsSecret)"
    )]
    BrokerCa(RootCertError),
    #[error("template {name} renders no #cloud-config document: {reason}")]
    NotCloudConfig { name: String, reason: String },
}

impl CloudInitError {
    pub fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::InvalidInput
    }
}

/// Checks the token and the root certificate, then renders the VM's user-data.
pub fn render(req: &Request<'_>, templates: &Templates) -> Result<UserData, CloudInitError> {
    let (group, instance) = req
        .fleet
        .vm(req.vm)
        .ok_or_else(|| CloudInitError::UnknownVm(req.vm.to_owned()))?;
    let subject = token::service_account_subject(&group.namespace, &group.service_account);
    let token =
        token::check(req.token, &subject, req.now, req.min_token_validity).map_err(|source| {
            CloudInitError::Token {
                source,
                hint: TokenError::hint(&group.namespace, &group.service_account),
            }
        })?;
    let root_pem = req
        .files
        .get(ROOT_CERT_FILE)
        .ok_or(CloudInitError::MissingFile(ROOT_CERT_FILE))?;
    let root_text = String::from_utf8_lossy(&root_pem.bytes);
    let root_certs = root_cert::check(&root_text, req.now)?;
    let sidecar = &req.fleet.sidecar;
    let url = sidecar.download_url();
    let mut warnings = Vec::new();
    // The fleet's own root certificate was checked (and warned about) when it was loaded.
    if req.fleet.root_cert() != Some(&*root_text) {
        warnings.extend(
            root_cert::rotation_warnings(&root_certs)
                .into_iter()
                .map(|w| format!("{w}\n  hint: {}", root_cert::ROTATION_HINT)),
        );
    }
    if sidecar.sha256.is_none() {
        warnings.push(format!(
            "the fleet pins no sidecar.sha256: the VM checks the package against {url}.sha256 from the same server, which catches a damaged download but not a tampered server\n  hint: pin the package with sidecar.sha256"
        ));
    }

    let data = json!({
        "meshvm": {"version": env!("CARGO_PKG_VERSION")},
        "vm": {
            "name": instance.name,
            "address": instance.address,
            "group": group.name,
            "namespace": group.namespace,
            "serviceAccount": group.service_account,
        },
        "mesh": {
            "id": req.fleet.mesh.mesh_id,
            "istiodHost": req.fleet.mesh.istiod_host(),
        },
        "token": {
            "subject": token.subject,
            "expiresAt": rfc3339(token.expires_at),
        },
        "sidecar": {
            "version": sidecar.version,
            "format": sidecar.package.extension(),
            "deb": sidecar.package == PackageFormat::Deb,
            "sha256": sidecar.sha256.as_deref().unwrap_or_default().to_ascii_lowercase(),
            "sha256Url": format!("{url}.sha256"),
            "url": url,
        },
        "files": placed_files(req.files, &token)?,
        "hostsLines": hosts_lines(req.files),
        "broker": false,
    });

    let registry = registry(templates)?;
    let join = render_one(&registry, JOIN_TEMPLATE_NAME, &data)?;
    let mut data = data;
    data["joinScript"] = Value::String(join);
    let document = render_one(&registry, USER_DATA_TEMPLATE_NAME, &data)?;
    check_cloud_config(&document)?;
    Ok(UserData {
        document,
        token_expires_at: token.expires_at,
        root_certs,
        warnings,
    })
}

/// The files for `write_files`, in a fixed order, each as small as it gets: base64 or, when
/// shorter, gzip + base64.
fn placed_files(files: &FileTree, token: &IstioToken) -> Result<Vec<Value>, CloudInitError> {
    for path in files.paths() {
        if path != HOSTS_FILE && !PLACEMENT.iter().any(|(name, _)| *name == path) {
            return Err(CloudInitError::UnexpectedFile(path.to_owned()));
        }
    }
    if !files.contains(HOSTS_FILE) {
        return Err(CloudInitError::MissingFile(HOSTS_FILE));
    }
    let mut placed = Vec::new();
    for (name, dest) in PLACEMENT {
        let file = files.get(name).ok_or(CloudInitError::MissingFile(name))?;
        placed.push(write_file(dest, &file.bytes, "0644"));
    }
    placed.push(write_file(
        TOKEN_PATH,
        token.expose_secret().as_bytes(),
        "0600",
    ));
    Ok(placed)
}

fn write_file(path: &str, bytes: &[u8], permissions: &str) -> Value {
    let plain = BASE64.encode(bytes);
    let packed = BASE64.encode(gzip(bytes));
    let (encoding, content) = if packed.len() < plain.len() {
        ("gz+b64", packed)
    } else {
        ("b64", plain)
    };
    json!({
        "path": path,
        "owner": "root:root",
        "permissions": permissions,
        "encoding": encoding,
        "content": content,
    })
}

/// The lines of the `hosts` file; none when istiod's address is unknown.
fn hosts_lines(files: &FileTree) -> Vec<String> {
    files
        .get(HOSTS_FILE)
        .map(|f| {
            String::from_utf8_lossy(&f.bytes)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// gzip with fixed header fields (no name, mtime 0), so the same input gives the same bytes.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).expect("writing to a Vec");
    encoder.finish().expect("writing to a Vec")
}

/// The user-data as the VM receives it: the document, gzip-compressed when asked (cloud-init
/// recognizes gzip by its magic bytes and always accepts it).
pub fn encode(document: &str, compress: bool) -> Vec<u8> {
    if compress {
        gzip(document.as_bytes())
    } else {
        document.as_bytes().to_vec()
    }
}

/// Clouds and their user-data size limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Aws,
    Azure,
    Gcp,
    Openstack,
    None,
}

impl Provider {
    pub const ALL: [Provider; 5] = [
        Provider::Aws,
        Provider::Azure,
        Provider::Gcp,
        Provider::Openstack,
        Provider::None,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Provider::Aws => "aws",
            Provider::Azure => "azure",
            Provider::Gcp => "gcp",
            Provider::Openstack => "openstack",
            Provider::None => "none",
        }
    }

    /// Largest user-data the provider takes, in bytes as sent (before any base64 transport
    /// encoding the API adds): AWS 16 KiB, Azure and OpenStack 65,535 bytes, GCE 256 KiB per
    /// metadata value.
    pub fn limit(self) -> Option<usize> {
        match self {
            Provider::Aws => Some(16_384),
            Provider::Azure | Provider::Openstack => Some(65_535),
            Provider::Gcp => Some(262_144),
            Provider::None => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the user-data is {size} bytes, over {provider}'s limit of {limit} bytes")]
pub struct TooLarge {
    pub provider: &'static str,
    pub size: usize,
    pub limit: usize,
    pub compressed: bool,
}

impl TooLarge {
    pub fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::InvalidInput
    }
}

/// Checks the size of the encoded user-data against the provider's limit.
pub fn check_size(provider: Provider, size: usize, compressed: bool) -> Result<(), TooLarge> {
    match provider.limit() {
        Some(limit) if size > limit => Err(TooLarge {
            provider: provider.name(),
            size,
            limit,
            compressed,
        }),
        _ => Ok(()),
    }
}

/// The problems cloud-init's JSON schema finds in a document (none when it is valid).
/// `schema` is cloud-init's `schema-cloud-config-v1.json`.
pub fn schema_problems(document: &str, schema: &Value) -> Result<Vec<String>, String> {
    let value = parse_document(document)?;
    let validator =
        jsonschema::validator_for(schema).map_err(|e| format!("the schema is invalid: {e}"))?;
    Ok(validator
        .iter_errors(&value)
        .map(|e| format!("{}: {e}", display_pointer(e.instance_path().as_str())))
        .collect())
}

fn display_pointer(pointer: &str) -> &str {
    if pointer.is_empty() { "/" } else { pointer }
}

fn parse_document(document: &str) -> Result<Value, String> {
    serde_saphyr::from_str::<Value>(document).map_err(|e| format!("invalid YAML: {e}"))
}

/// What cloud-init needs to take a document as cloud-config: the header, and a YAML mapping.
fn check_cloud_config(document: &str) -> Result<(), CloudInitError> {
    let fail = |reason: String| CloudInitError::NotCloudConfig {
        name: USER_DATA_TEMPLATE_NAME.to_owned(),
        reason,
    };
    if !document.starts_with("#cloud-config\n") {
        return Err(fail("it must begin with the line `#cloud-config`".into()));
    }
    match parse_document(document).map_err(fail)? {
        Value::Object(_) => Ok(()),
        _ => Err(fail("it is not a YAML mapping".into())),
    }
}

fn registry(templates: &Templates) -> Result<Handlebars<'static>, CloudInitError> {
    registry_of(&[
        (USER_DATA_TEMPLATE_NAME, &templates.user_data),
        (JOIN_TEMPLATE_NAME, &templates.join),
    ])
}

/// A registry of these templates (name, source), each checked to quote every value.
fn registry_of(sources: &[(&str, &str)]) -> Result<Handlebars<'static>, CloudInitError> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    // Values are quoted by the helpers, for YAML or the shell; HTML escaping would corrupt them.
    hb.register_escape_fn(handlebars::no_escape);
    hb.register_helper("yaml", Box::new(TextHelper(yaml_text)));
    hb.register_helper("yaml-block", Box::new(TextHelper(yaml_block_text)));
    hb.register_helper("sh", Box::new(TextHelper(sh_text)));
    for &(name, source) in sources {
        let template = Template::compile_with_name(source, name.to_owned()).map_err(|e| {
            CloudInitError::Template {
                name: name.to_owned(),
                message: e.to_string(),
            }
        })?;
        check_quoted(name, &template)?;
        hb.register_template(name, template);
    }
    Ok(hb)
}

fn render_one(hb: &Handlebars<'_>, name: &str, data: &Value) -> Result<String, CloudInitError> {
    hb.render(name, data).map_err(|e| CloudInitError::Template {
        name: name.to_owned(),
        message: render_error_message(&e),
    })
}

fn render_error_message(e: &RenderError) -> String {
    match (e.line_no, e.column_no) {
        (Some(line), Some(column)) => format!("{line}:{column}: {}", e.reason()),
        _ => e.reason().to_string(),
    }
}

/// Refuses a template that pastes a value raw: every expression must be a quoting helper
/// with an argument, and only the plain block helpers may surround them.
fn check_quoted(name: &str, template: &Template) -> Result<(), CloudInitError> {
    for (i, element) in template.elements.iter().enumerate() {
        let (line, column) = template
            .mapping
            .get(i)
            .map(|m| (m.0, m.1))
            .unwrap_or((0, 0));
        let unquoted = |expression: String| CloudInitError::Unquoted {
            name: name.to_owned(),
            line,
            column,
            expression,
        };
        match element {
            TemplateElement::RawString(_) | TemplateElement::Comment(_) => {}
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                let helper = h.name.as_name().unwrap_or("");
                if !QUOTING_HELPERS.contains(&helper) || h.params.is_empty() {
                    return Err(unquoted(describe(&h.name, &h.params)));
                }
            }
            TemplateElement::HelperBlock(h) => {
                let helper = h.name.as_name().unwrap_or("");
                if !BLOCK_HELPERS.contains(&helper) {
                    return Err(unquoted(format!("#{}", describe(&h.name, &h.params))));
                }
                for inner in [&h.template, &h.inverse].into_iter().flatten() {
                    check_quoted(name, inner)?;
                }
            }
            // Partials, decorators, and whatever a newer handlebars adds.
            _ => {
                return Err(CloudInitError::Template {
                    name: name.to_owned(),
                    message: format!(
                        "{line}:{column}: partials and decorators are not supported; keep each template in one file"
                    ),
                });
            }
        }
    }
    Ok(())
}

fn describe(name: &Parameter, params: &[Parameter]) -> String {
    let mut parts = vec![name.as_name().unwrap_or("…").to_owned()];
    parts.extend(params.iter().map(|p| p.as_name().unwrap_or("…").to_owned()));
    format!("{{{{{}}}}}", parts.join(" "))
}

/// The helper's first argument as text, refusing missing values and structures.
fn scalar_param(h: &Helper<'_>, helper: &'static str) -> Result<String, RenderError> {
    let param = h
        .param(0)
        .ok_or(RenderErrorReason::ParamNotFoundForIndex(helper, 0))?;
    if param.is_value_missing() {
        return Err(RenderErrorReason::Other(format!(
            "`{helper}`: no value at `{}`",
            param.relative_path().map(String::as_str).unwrap_or("?")
        ))
        .into());
    }
    match param.value() {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(RenderErrorReason::Other(format!(
            "`{helper}` takes a string, a number or a boolean, not {}",
            match other {
                Value::Null => "null",
                Value::Array(_) => "a list",
                _ => "a map",
            }
        ))
        .into()),
    }
}

/// A helper that writes the text a function makes of the helper's parameters.
struct TextHelper(fn(&Helper<'_>) -> Result<String, RenderError>);

impl HelperDef for TextHelper {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        out.write(&(self.0)(h)?)?;
        Ok(())
    }
}

/// `{{yaml value}}`: a YAML scalar, quoted where YAML 1.1 or 1.2 would read it otherwise.
fn yaml_text(h: &Helper<'_>) -> Result<String, RenderError> {
    Ok(match h.param(0).map(|p| p.value()) {
        // Numbers and booleans are YAML scalars already.
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => yaml_scalar(&scalar_param(h, "yaml")?),
    })
}

/// `{{yaml-block value indent=N}}`: a literal block scalar whose lines start at column N.
fn yaml_block_text(h: &Helper<'_>) -> Result<String, RenderError> {
    let text = scalar_param(h, "yaml-block")?;
    let indent = h
        .hash_get("indent")
        .and_then(|v| v.value().as_u64())
        .ok_or_else(|| {
            RenderErrorReason::Other(
                "`yaml-block` needs indent=N, the column of the block's lines".into(),
            )
        })?;
    Ok(yaml_block(&text, indent as usize))
}

/// `{{sh value}}`: one shell word.
fn sh_text(h: &Helper<'_>) -> Result<String, RenderError> {
    let text = scalar_param(h, "sh")?;
    Ok(shell_word(&text).ok_or_else(|| {
        RenderErrorReason::Other("`sh`: a value with a NUL byte cannot be a shell word".into())
    })?)
}

#[cfg(test)]
mod tests;
