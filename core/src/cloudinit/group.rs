//! The user-data of a broker-joined workload group (`meshvm cloud-init --group G`): ONE static
//! document for every VM of the group, with no secret in it. It carries the group-wide mesh
//! files, the join broker's address and pinned CA, the sidecar install, and
//! `meshvm-join.service`, which at every boot, before `istio.service`, proves who the VM is to
//! the broker and writes the istio-token it answers with (0600) unless the sidecar still holds
//! a valid certificate or token. docs/join.md has the protocol.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use time::UtcDateTime;

use super::{
    CloudInitError, HOSTS_FILE, JOIN_TEMPLATE_NAME, PLACEMENT, ROOT_CERT_FILE, Templates,
    check_cloud_config, hosts_lines, registry_of, render_one, write_file,
};
use crate::render::broker::url;
use crate::spec::root_cert::{self, RootCert};
use crate::spec::{CheckedFleet, Instance, JoinMethod, PackageFormat, Workload};
use crate::tree::FileTree;
use crate::vmfiles;

pub const GROUP_USER_DATA_TEMPLATE: &str = include_str!("templates/group-user-data.yaml.hbs");
pub const GROUP_USER_DATA_TEMPLATE_NAME: &str = "group-user-data.yaml.hbs";
/// `/usr/local/sbin/meshvm-join`, the script the unit runs.
pub const BROKER_JOIN_TEMPLATE: &str = include_str!("templates/broker-join.sh.hbs");
pub const BROKER_JOIN_TEMPLATE_NAME: &str = "broker-join.sh.hbs";
/// The systemd unit (no values in it).
pub const JOIN_UNIT: &str = include_str!("templates/meshvm-join.service");

pub const JOIN_SCRIPT_PATH: &str = "/usr/local/sbin/meshvm-join";
pub const JOIN_UNIT_PATH: &str = "/etc/systemd/system/meshvm-join.service";
pub const BROKER_CA_PATH: &str = "/etc/meshvm-join/ca.crt";
/// Where the operator puts a `join-token` VM's join token (0600), out of band.
pub const JOIN_TOKEN_PATH: &str = "/etc/meshvm-join/join-token";

/// What a group's user-data is made of.
#[derive(Debug, Clone, Copy)]
pub struct GroupRequest<'a> {
    pub fleet: &'a CheckedFleet,
    /// The workload group, by name (and namespace when two namespaces have one of that name).
    pub group: &'a str,
    pub namespace: Option<&'a str>,
    /// The mesh's root certificate (PEM), when not the fleet's own.
    pub root_cert: Option<&'a str>,
    /// The CA of the broker's serving certificate (the `ca.crt` of its Secret), PEM.
    pub broker_ca: &'a str,
    pub now: UtcDateTime,
}

/// A group's user-data: no secret in it.
#[derive(Debug, Clone)]
pub struct GroupUserData {
    pub document: String,
    pub root_certs: Vec<RootCert>,
    pub warnings: Vec<String>,
}

/// The group's workload, refused unless it joins through the broker by a method the join
/// script can prove.
fn broker_group<'f>(req: &GroupRequest<'f>) -> Result<&'f Workload, CloudInitError> {
    let matches: Vec<&Workload> = req
        .fleet
        .workloads
        .iter()
        .filter(|w| w.name == req.group && req.namespace.is_none_or(|ns| ns == w.namespace))
        .collect();
    let w = match matches.as_slice() {
        [w] => *w,
        [] => return Err(CloudInitError::UnknownGroup(req.group.to_owned())),
        _ => {
            return Err(CloudInitError::AmbiguousGroup {
                group: req.group.to_owned(),
                namespaces: matches.iter().map(|w| w.namespace.clone()).collect(),
            });
        }
    };
    match w.join.method {
        JoinMethod::JoinToken | JoinMethod::Aws | JoinMethod::Gcp | JoinMethod::Azure => Ok(w),
        method => Err(CloudInitError::NotBrokerJoined {
            group: format!("{}/{}", w.namespace, w.name),
            method: method.as_str(),
        }),
    }
}

/// The mesh files every VM of the group shares: those of a VM of the group without an
/// address, labels or name of its own (the agent finds its address itself).
fn group_files(fleet: &CheckedFleet, w: &Workload) -> Result<FileTree, CloudInitError> {
    let anyone = Instance {
        name: w.name.clone(),
        address: String::new(),
        external: false,
        labels: BTreeMap::new(),
        locality: None,
        weight: None,
    };
    let inputs = vmfiles::fleet_raw_inputs(fleet, w, &anyone)
        .check()
        .map_err(|e| CloudInitError::Template {
            name: "the group's mesh files".into(),
            message: e.to_string(),
        })?;
    Ok(vmfiles::render(&inputs))
}

/// Renders the group's user-data.
pub fn render_group(
    req: &GroupRequest<'_>,
    templates: &Templates,
) -> Result<GroupUserData, CloudInitError> {
    let w = broker_group(req)?;
    let fleet = req.fleet;
    let mut files = group_files(fleet, w)?;
    let root_text = req
        .root_cert
        .or(fleet.root_cert())
        .ok_or(CloudInitError::MissingFile(ROOT_CERT_FILE))?;
    let root_certs = root_cert::check(root_text, req.now)?;
    root_cert::check(req.broker_ca, req.now).map_err(CloudInitError::BrokerCa)?;
    files.insert(ROOT_CERT_FILE, root_text);

    let broker = &fleet.join_broker;
    let sidecar = &fleet.sidecar;
    let download = sidecar.download_url();
    let mut warnings = Vec::new();
    if sidecar.sha256.is_none() {
        warnings.push(format!(
            "the fleet pins no sidecar.sha256: the VMs check the package against {download}.sha256 from the same server\n  hint: pin the package with sidecar.sha256"
        ));
    }
    let mut data = json!({
        "meshvm": {"version": env!("CARGO_PKG_VERSION")},
        "group": {
            "name": w.name,
            "namespace": w.namespace,
            "serviceAccount": w.service_account,
            "method": w.join.method.as_str(),
        },
        "mesh": {"id": fleet.mesh.mesh_id, "istiodHost": fleet.mesh.istiod_host()},
        "broker": {
            "host": broker.host(),
            "port": broker.port,
            "address": fleet.mesh.east_west_gateway.address,
            "url": url(broker),
        },
        "tokenPath": super::TOKEN_PATH,
        "sidecar": {
            "version": sidecar.version,
            "format": sidecar.package.extension(),
            "deb": sidecar.package == PackageFormat::Deb,
            "sha256": sidecar.sha256.as_deref().unwrap_or_default().to_ascii_lowercase(),
            "sha256Url": format!("{download}.sha256"),
            "url": download,
        },
        "hostsLines": hosts_lines(&files),
    });
    let hb = registry_of(&[
        (GROUP_USER_DATA_TEMPLATE_NAME, GROUP_USER_DATA_TEMPLATE),
        (BROKER_JOIN_TEMPLATE_NAME, BROKER_JOIN_TEMPLATE),
        (JOIN_TEMPLATE_NAME, &templates.join),
    ])?;
    let script = render_one(&hb, BROKER_JOIN_TEMPLATE_NAME, &data)?;
    data["installScript"] = Value::String(render_one(&hb, JOIN_TEMPLATE_NAME, &data)?);
    let mut placed = Vec::new();
    for (name, dest) in PLACEMENT {
        let file = files.get(name).ok_or(CloudInitError::MissingFile(name))?;
        placed.push(write_file(dest, &file.bytes, "0644"));
    }
    debug_assert!(files.contains(HOSTS_FILE));
    placed.push(write_file(BROKER_CA_PATH, req.broker_ca.as_bytes(), "0644"));
    placed.push(write_file(JOIN_SCRIPT_PATH, script.as_bytes(), "0755"));
    placed.push(write_file(JOIN_UNIT_PATH, JOIN_UNIT.as_bytes(), "0644"));
    data["files"] = Value::Array(placed);
    let document = render_one(&hb, GROUP_USER_DATA_TEMPLATE_NAME, &data)?;
    check_cloud_config(&document)?;
    Ok(GroupUserData {
        document,
        root_certs,
        warnings,
    })
}
