//! Istio's `ProxyConfig` (and the `ReadinessProbe` inside it) kept as JSON data, read and
//! written with the semantics of the protobuf JSON codec istioctl uses (legacy jsonpb):
//!
//! - a field is named by its JSON name (`discoveryAddress`) or its proto name
//!   (`discovery_address`); both read, the JSON name is written;
//! - `null` means "not set": applying it changes nothing;
//! - applying a document replaces each field it sets as a whole (maps and messages too);
//! - written fields at their zero value (`""`, `0`, `false`, the first enum value, empty
//!   lists and maps) are left out; set messages are written even when empty;
//! - durations are read like Go's `time.ParseDuration` and written as `"<seconds>s"`.
//!
//! Fields this table does not know are kept as written, so a newer Istio's fields survive.
//! Type errors are reported with their path, as istioctl reports them.

use serde_json::{Map, Value};

use super::go;

/// What a field holds.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Uint,
    Double,
    Bool,
    /// Enum names, in number order: the first one is the zero value.
    Enum(&'static [(&'static str, i64)]),
    /// `google.protobuf.Int32Value` etc.: written even when zero.
    WrapInt,
    WrapBool,
    Duration,
    StrMap,
    StrList,
    EnumList(&'static [(&'static str, i64)]),
    Msg(&'static [Field]),
    /// A message or map meshvm does not look into: kept as written.
    Opaque,
}

/// A field, by its JSON name; its proto name is the same in snake case.
struct Field {
    json: &'static str,
    kind: Kind,
    /// Member of a `oneof`: written whenever set, even at its zero value.
    oneof: bool,
}

impl Field {
    /// Whether `name` is this field's proto name: its JSON name in snake case
    /// (`k8sSaJwtPath` is `k8s_sa_jwt_path`).
    fn has_proto_name(&self, name: &str) -> bool {
        let mut name = name.bytes();
        self.json.bytes().all(|c| {
            if c.is_ascii_uppercase() {
                name.next() == Some(b'_') && name.next() == Some(c.to_ascii_lowercase())
            } else {
                name.next() == Some(c)
            }
        }) && name.next().is_none()
    }
}

const fn f(json: &'static str, kind: Kind) -> Field {
    Field {
        json,
        kind,
        oneof: false,
    }
}

const fn one(json: &'static str, kind: Kind) -> Field {
    Field {
        json,
        kind,
        oneof: true,
    }
}

const AUTH_POLICY: &[(&str, i64)] = &[("NONE", 0), ("MUTUAL_TLS", 1), ("INHERIT", 1000)];
const INTERCEPTION: &[(&str, i64)] = &[("REDIRECT", 0), ("TPROXY", 1), ("NONE", 2)];
const TRACING_SERVICE_NAME: &[(&str, i64)] = &[
    ("APP_LABEL_AND_NAMESPACE", 0),
    ("CANONICAL_NAME_ONLY", 1),
    ("CANONICAL_NAME_AND_NAMESPACE", 2),
];
const TRACE_CONTEXT: &[(&str, i64)] = &[
    ("UNSPECIFIED", 0),
    ("W3C_TRACE_CONTEXT", 1),
    ("GRPC_BIN", 2),
    ("CLOUD_TRACE_CONTEXT", 3),
    ("B3", 4),
];
const XFCC: &[(&str, i64)] = &[
    ("UNDEFINED", 0),
    ("SANITIZE", 1),
    ("FORWARD_ONLY", 2),
    ("APPEND_FORWARD", 3),
    ("SANITIZE_SET", 4),
    ("ALWAYS_FORWARD_ONLY", 5),
];

const ADDRESS_ONLY: &[Field] = &[f("address", Kind::Str)];

const TRACING: &[Field] = &[
    one("zipkin", Kind::Msg(ADDRESS_ONLY)),
    one(
        "lightstep",
        Kind::Msg(&[f("address", Kind::Str), f("accessToken", Kind::Str)]),
    ),
    one("datadog", Kind::Msg(ADDRESS_ONLY)),
    one("stackdriver", Kind::Opaque),
    f("customTags", Kind::Opaque),
    f("maxPathTagLength", Kind::Uint),
    f("sampling", Kind::Double),
    f("tlsSettings", Kind::Opaque),
    one(
        "openCensusAgent",
        Kind::Msg(&[
            f("address", Kind::Str),
            f("context", Kind::EnumList(TRACE_CONTEXT)),
        ]),
    ),
];

const REMOTE_SERVICE: &[Field] = &[
    f("address", Kind::Str),
    f("tlsSettings", Kind::Opaque),
    f("tcpKeepalive", Kind::Opaque),
];

/// `istio.networking.v1alpha3.ReadinessProbe`, the WorkloadGroup's `probe`.
const READINESS_PROBE: &[Field] = &[
    f("initialDelaySeconds", Kind::Int),
    f("timeoutSeconds", Kind::Int),
    f("periodSeconds", Kind::Int),
    f("successThreshold", Kind::Int),
    f("failureThreshold", Kind::Int),
    one(
        "httpGet",
        Kind::Msg(&[
            f("path", Kind::Str),
            f("port", Kind::Uint),
            f("host", Kind::Str),
            f("scheme", Kind::Str),
            f("httpHeaders", Kind::Opaque),
        ]),
    ),
    one(
        "tcpSocket",
        Kind::Msg(&[f("host", Kind::Str), f("port", Kind::Uint)]),
    ),
    one("exec", Kind::Msg(&[f("command", Kind::StrList)])),
    one(
        "grpc",
        Kind::Msg(&[f("port", Kind::Uint), f("service", Kind::Str)]),
    ),
];

/// `istio.mesh.v1alpha1.ProxyConfig`.
const PROXY_CONFIG: &[Field] = &[
    f("configPath", Kind::Str),
    f("binaryPath", Kind::Str),
    one("serviceCluster", Kind::Str),
    f("drainDuration", Kind::Duration),
    f("parentShutdownDuration", Kind::Duration),
    f("discoveryAddress", Kind::Str),
    f("discoveryRefreshDelay", Kind::Duration),
    f("zipkinAddress", Kind::Str),
    f("statsdUdpAddress", Kind::Str),
    f("proxyAdminPort", Kind::Int),
    f("availabilityZone", Kind::Str),
    f("controlPlaneAuthPolicy", Kind::Enum(AUTH_POLICY)),
    f("customConfigFile", Kind::Str),
    f("statNameLength", Kind::Int),
    f("concurrency", Kind::WrapInt),
    f("proxyBootstrapTemplatePath", Kind::Str),
    f("interceptionMode", Kind::Enum(INTERCEPTION)),
    f("tracing", Kind::Msg(TRACING)),
    f("envoyMetricsServiceAddress", Kind::Str),
    f(
        "sds",
        Kind::Msg(&[f("enabled", Kind::Bool), f("k8sSaJwtPath", Kind::Str)]),
    ),
    f("envoyAccessLogService", Kind::Msg(REMOTE_SERVICE)),
    f("envoyMetricsService", Kind::Msg(REMOTE_SERVICE)),
    f("proxyMetadata", Kind::StrMap),
    f("statusPort", Kind::Int),
    f("extraStatTags", Kind::StrList),
    f(
        "gatewayTopology",
        Kind::Msg(&[
            f("numTrustedProxies", Kind::Uint),
            f("forwardClientCertDetails", Kind::Enum(XFCC)),
            f("proxyProtocol", Kind::Opaque),
        ]),
    ),
    f("terminationDrainDuration", Kind::Duration),
    f("meshId", Kind::Str),
    f("readinessProbe", Kind::Msg(READINESS_PROBE)),
    f(
        "proxyStatsMatcher",
        Kind::Msg(&[
            f("inclusionPrefixes", Kind::StrList),
            f("inclusionSuffixes", Kind::StrList),
            f("inclusionRegexps", Kind::StrList),
        ]),
    ),
    f("holdApplicationUntilProxyStarts", Kind::WrapBool),
    f("caCertificatesPem", Kind::StrList),
    f("image", Kind::Msg(&[f("imageType", Kind::Str)])),
    one("tracingServiceName", Kind::Enum(TRACING_SERVICE_NAME)),
    f("runtimeValues", Kind::StrMap),
    f("privateKeyProvider", Kind::Opaque),
];

/// A type error in a ProxyConfig document: where (`statusPort`, `tracing.sampling`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A normalized ProxyConfig: every set field, under its JSON name, in its written form.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyConfig {
    fields: Map<String, Value>,
}

impl ProxyConfig {
    /// Reads a ProxyConfig document (`null` is an empty one); `at` names it in errors.
    pub fn parse(doc: &Value, at: &str) -> Result<ProxyConfig, FieldError> {
        let fields = match doc {
            Value::Null => Map::new(),
            other => normalize_message(other, PROXY_CONFIG, at)?,
        };
        Ok(ProxyConfig { fields })
    }

    /// Applies a document over this config, as `protomarshal.ApplyYAML` does: each field the
    /// document sets replaces this config's field.
    pub fn apply(&mut self, other: &ProxyConfig) {
        for (k, v) in &other.fields {
            self.fields.insert(k.clone(), v.clone());
        }
    }

    pub fn get_str(&self, field: &str) -> &str {
        self.fields.get(field).and_then(Value::as_str).unwrap_or("")
    }

    pub fn get_int(&self, field: &str) -> i64 {
        self.fields.get(field).and_then(Value::as_i64).unwrap_or(0)
    }

    pub fn set(&mut self, field: &str, value: Value) {
        self.fields.insert(field.to_owned(), value);
    }

    /// The proxy metadata, empty when unset.
    pub fn proxy_metadata(&self) -> Map<String, Value> {
        match self.fields.get("proxyMetadata") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        }
    }

    /// Sets the readiness probe from a WorkloadGroup's `probe`, or removes it.
    pub fn set_readiness_probe(&mut self, probe: Option<&Value>) -> Result<(), FieldError> {
        match probe.filter(|p| !p.is_null()) {
            Some(p) => {
                let normalized = normalize_message(p, READINESS_PROBE, "probe")?;
                self.fields
                    .insert("readinessProbe".into(), Value::Object(normalized));
            }
            None => {
                self.fields.remove("readinessProbe");
            }
        }
        Ok(())
    }

    /// The written form: zero values and empty maps left out, at every level.
    pub fn into_value(self) -> Value {
        Value::Object(written(self.fields, PROXY_CONFIG))
    }
}

/// A message as jsonpb writes it: fields at their zero value left out (unless in a oneof).
fn written(mut message: Map<String, Value>, fields: &'static [Field]) -> Map<String, Value> {
    message.retain(|k, v| match fields.iter().find(|f| f.json == k) {
        None => true,
        Some(f) if !f.oneof && is_zero(v, f.kind) => false,
        Some(f) => {
            if let (Kind::Msg(inner), Value::Object(m)) = (f.kind, v) {
                *m = written(std::mem::take(m), inner);
            }
            true
        }
    });
    message
}

fn is_empty_collection(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn type_error(path: &str, expected: &str, found: &Value) -> FieldError {
    let found = match found {
        Value::Null => "nothing".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "a mapping".to_owned(),
    };
    FieldError {
        path: path.to_owned(),
        message: format!("expected {expected}, found {found}"),
    }
}

/// Normalizes one message: known fields to their JSON name and written form (zero values
/// dropped unless in a oneof), unknown fields kept.
fn normalize_message(
    value: &Value,
    fields: &'static [Field],
    path: &str,
) -> Result<Map<String, Value>, FieldError> {
    let Value::Object(input) = value else {
        return Err(type_error(path, "a mapping", value));
    };
    let mut out = Map::new();
    // Proto names first, so that the JSON name wins when both are given, as in jsonpb.
    let mut entries: Vec<(&String, &Value)> = input.iter().collect();
    entries.sort_by_key(|(k, _)| !fields.iter().any(|f| f.json != *k && f.has_proto_name(k)));
    for (key, raw) in entries {
        let Some(field) = fields
            .iter()
            .find(|f| f.json == key || f.has_proto_name(key))
        else {
            if !raw.is_null() {
                out.insert(key.clone(), raw.clone());
            }
            continue;
        };
        if raw.is_null() {
            continue;
        }
        let p = join(path, field.json);
        // Zero values are kept: set, they replace a field when applied over another config.
        out.insert(field.json.to_owned(), normalize_value(raw, field.kind, &p)?);
    }
    Ok(out)
}

fn is_zero(v: &Value, kind: Kind) -> bool {
    match kind {
        Kind::Enum(names) => v.as_str() == Some(names[0].0),
        Kind::Str | Kind::Int | Kind::Uint | Kind::Double | Kind::Bool => match v {
            Value::String(s) => s.is_empty(),
            Value::Number(n) => n.as_f64() == Some(0.0),
            Value::Bool(b) => !b,
            _ => false,
        },
        Kind::StrMap | Kind::StrList | Kind::EnumList(_) => is_empty_collection(v),
        Kind::WrapInt | Kind::WrapBool | Kind::Duration | Kind::Msg(_) | Kind::Opaque => false,
    }
}

fn normalize_value(raw: &Value, kind: Kind, path: &str) -> Result<Value, FieldError> {
    Ok(match kind {
        Kind::Str => match raw {
            Value::String(_) => raw.clone(),
            _ => return Err(type_error(path, "a string (quote it)", raw)),
        },
        Kind::Int | Kind::WrapInt => {
            Value::from(integer(raw, path, i32::MIN.into(), i32::MAX.into())?)
        }
        Kind::Uint => Value::from(integer(raw, path, 0, u32::MAX.into())?),
        Kind::Double => match raw {
            Value::Number(_) => raw.clone(),
            Value::String(s) => s
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| type_error(path, "a number", raw))?,
            _ => return Err(type_error(path, "a number", raw)),
        },
        Kind::Bool | Kind::WrapBool => match raw {
            Value::Bool(_) => raw.clone(),
            _ => return Err(type_error(path, "true or false", raw)),
        },
        Kind::Enum(names) => Value::String(enum_name(raw, names, path)?),
        Kind::EnumList(names) => {
            let Value::Array(items) = raw else {
                return Err(type_error(path, "a list", raw));
            };
            Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        enum_name(item, names, &format!("{path}[{i}]")).map(Value::String)
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
        Kind::Duration => match raw {
            Value::String(s) => Value::String(go::format_duration(
                go::parse_duration(s).ok_or_else(|| FieldError {
                    path: path.to_owned(),
                    message: format!("{s:?} is not a duration such as \"45s\" or \"1m30s\""),
                })?,
            )),
            _ => return Err(type_error(path, "a duration such as \"45s\"", raw)),
        },
        Kind::StrMap => {
            let Value::Object(m) = raw else {
                return Err(type_error(path, "a mapping of strings", raw));
            };
            let mut out = Map::new();
            for (k, v) in m {
                match v {
                    Value::String(_) => {
                        out.insert(k.clone(), v.clone());
                    }
                    _ => return Err(type_error(&join(path, k), "a string (quote it)", v)),
                }
            }
            Value::Object(out)
        }
        Kind::StrList => {
            let Value::Array(items) = raw else {
                return Err(type_error(path, "a list of strings", raw));
            };
            for (i, item) in items.iter().enumerate() {
                if !item.is_string() {
                    return Err(type_error(&format!("{path}[{i}]"), "a string", item));
                }
            }
            raw.clone()
        }
        Kind::Msg(fields) => Value::Object(normalize_message(raw, fields, path)?),
        Kind::Opaque => raw.clone(),
    })
}

fn integer(raw: &Value, path: &str, min: i64, max: i64) -> Result<i64, FieldError> {
    // jsonpb reads integers from numbers and from quoted numbers alike.
    let n = match raw {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse::<i64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        Some(_) => Err(FieldError {
            path: path.to_owned(),
            message: format!("{raw} is out of range ({min} to {max})"),
        }),
        None => Err(type_error(path, "an integer", raw)),
    }
}

fn enum_name(raw: &Value, names: &[(&str, i64)], path: &str) -> Result<String, FieldError> {
    let found = match raw {
        Value::String(s) => names.iter().find(|(n, _)| n == s),
        Value::Number(n) => names.iter().find(|(_, v)| Some(*v) == n.as_i64()),
        _ => None,
    };
    match found {
        Some((name, _)) => Ok((*name).to_owned()),
        None => Err(FieldError {
            path: path.to_owned(),
            message: format!(
                "{raw} is not one of: {}",
                names.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn proto_names_are_json_names_in_snake_case() {
        let field = f("k8sSaJwtPath", Kind::Str);
        assert!(field.has_proto_name("k8s_sa_jwt_path"));
        for other in [
            "k8sSaJwtPath",
            "k8s_sa_jwt_pat",
            "k8s_sa_jwt_path_",
            "k8ssajwtpath",
            "",
        ] {
            assert!(!field.has_proto_name(other), "{other}");
        }
        assert!(f("meshId", Kind::Str).has_proto_name("mesh_id"));
        assert!(f("image", Kind::Str).has_proto_name("image"));
    }

    /// The grpc action (istio/api #3372) is part of the ReadinessProbe istioctl and
    /// pilot-agent read at the pinned commit (only istiod's validation refuses it).
    #[test]
    fn a_grpc_probe_is_read_as_istioctl_reads_it() {
        let mut pc = ProxyConfig::default();
        pc.set_readiness_probe(Some(&json!({
            "grpc": {"port": "9090", "service": "shop.Api"},
            "period_seconds": 10,
        })))
        .unwrap();
        assert_eq!(
            pc.fields["readinessProbe"],
            json!({"grpc": {"port": 9090, "service": "shop.Api"}, "periodSeconds": 10})
        );
    }

    #[test]
    fn normalizes_like_jsonpb() {
        let pc = ProxyConfig::parse(
            &json!({
                "discovery_address": "a:1",
                "discoveryAddress": "b:2",
                "statusPort": "15021",
                "concurrency": 0,
                "proxyAdminPort": 0,
                "interceptionMode": "REDIRECT",
                "controlPlaneAuthPolicy": 1,
                "drainDuration": "1m",
                "meshId": "",
                "tracing": {"sampling": 0, "zipkin": {"address": ""}},
                "proxyMetadata": {},
                "holdApplicationUntilProxyStarts": false,
                "futureField": {"x": 1},
                "zipkinAddress": null,
            }),
            "",
        )
        .unwrap();
        assert_eq!(
            pc.into_value(),
            json!({
                "discoveryAddress": "b:2",
                "statusPort": 15021,
                "concurrency": 0,
                "controlPlaneAuthPolicy": "MUTUAL_TLS",
                "drainDuration": "60s",
                "tracing": {"zipkin": {}},
                "holdApplicationUntilProxyStarts": false,
                "futureField": {"x": 1},
            })
        );
    }

    #[test]
    fn apply_replaces_whole_fields() {
        let mut base = ProxyConfig::parse(
            &json!({
                "tracing": {"zipkin": {"address": "z:9411"}},
                "discoveryAddress": "istiod:15012",
            }),
            "",
        )
        .unwrap();
        base.apply(
            &ProxyConfig::parse(
                &json!({"tracing": {"sampling": 5}, "discoveryAddress": null}),
                "",
            )
            .unwrap(),
        );
        assert_eq!(
            base.clone().into_value(),
            json!({"tracing": {"sampling": 5}, "discoveryAddress": "istiod:15012"})
        );
    }

    #[test]
    fn an_explicit_zero_replaces_too() {
        let mut base = ProxyConfig::parse(
            &json!({"discoveryAddress": "istiod:15012", "runtimeValues": {"a": "b"}}),
            "",
        )
        .unwrap();
        base.apply(
            &ProxyConfig::parse(&json!({"discoveryAddress": "", "runtimeValues": {}}), "").unwrap(),
        );
        assert_eq!(base.clone().into_value(), json!({}));
    }

    #[test]
    fn type_errors_name_the_field() {
        for (doc, path) in [
            (json!({"statusPort": "abc"}), "statusPort"),
            (json!({"proxyMetadata": {"A": true}}), "proxyMetadata.A"),
            (json!({"drainDuration": "5"}), "drainDuration"),
            (json!({"tracing": {"sampling": "x"}}), "tracing.sampling"),
            (json!({"interceptionMode": "BOGUS"}), "interceptionMode"),
            (json!({"statusPort": 1.5}), "statusPort"),
            (json!("text"), ""),
        ] {
            let err = ProxyConfig::parse(&doc, "").unwrap_err();
            assert_eq!(err.path, path, "{doc}: {err}");
        }
    }
}
