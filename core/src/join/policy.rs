//! The join policy: for each broker-joined workload group of the fleet, its method, who may
//! join it, its ServiceAccount and (static groups) its VMs. Derived from a checked fleet, so
//! Git decides who may join; serialized as the broker's ConfigMap.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::aws;
use super::azure;
use super::gcp;
use super::protocol::{Grant, Refusal, RefusalCode};
use crate::spec::{Fleet, JoinMethod};

/// Syntax of one allowlist value of a `join` policy (`spec` reports the errors).
pub fn check_value(field: &str, v: &str) -> Result<(), String> {
    let lower_dash = |max: usize| {
        !v.is_empty()
            && v.len() <= max
            && v.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !v.starts_with('-')
            && !v.ends_with('-')
    };
    let ok = match field {
        "accounts" => v.len() == 12 && v.bytes().all(|b| b.is_ascii_digit()),
        "regions" | "zones" => lower_dash(63),
        "projects" => lower_dash(30) && v.len() >= 6,
        "subscriptions" | "vmIds" => {
            v.len() == 36
                && v.bytes().enumerate().all(|(i, b)| match i {
                    8 | 13 | 18 | 23 => b == b'-',
                    _ => b.is_ascii_hexdigit(),
                })
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(match field {
            "accounts" => "is not an AWS account ID (12 digits)".into(),
            "regions" => "is not a region name (lowercase letters, digits, dashes)".into(),
            "zones" => "is not a zone name (lowercase letters, digits, dashes)".into(),
            "projects" => {
                "is not a GCP project ID (6 to 30 lowercase letters, digits, dashes)".into()
            }
            "subscriptions" => "is not an Azure subscription ID (a UUID)".into(),
            "vmIds" => "is not an Azure VM ID (a UUID)".into(),
            _ => format!("is in an unknown field {field:?}"),
        })
    }
}

/// The broker's policy: every group that joins through it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    pub groups: Vec<GroupPolicy>,
}

/// One group's policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupPolicy {
    pub namespace: String,
    pub name: String,
    pub service_account: String,
    pub method: JoinMethod,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vm_ids: Vec<String>,
    /// istiod registers the VMs: any proven instance of the allowed accounts may join.
    pub auto_register: bool,
    /// The fleet's VMs (static groups): name → address. A proven instance must be one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub instances: BTreeMap<String, String>,
}

impl Policy {
    /// The policy of a fleet: its groups whose method is not `token`, sorted by namespace and
    /// name.
    pub fn from_fleet(fleet: &Fleet) -> Policy {
        let mut groups: Vec<GroupPolicy> = fleet
            .workloads
            .iter()
            .filter(|w| w.join.uses_broker())
            .map(|w| GroupPolicy {
                namespace: w.namespace.clone(),
                name: w.name.clone(),
                service_account: w.service_account.clone(),
                method: w.join.method,
                accounts: w.join.accounts.clone(),
                regions: w.join.regions.clone(),
                projects: w.join.projects.clone(),
                zones: w.join.zones.clone(),
                subscriptions: w.join.subscriptions.clone(),
                vm_ids: w.join.vm_ids.clone(),
                auto_register: w.auto_register,
                instances: w
                    .instances
                    .iter()
                    .map(|i| (i.name.clone(), i.address.clone()))
                    .collect(),
            })
            .collect();
        groups.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Policy { groups }
    }

    pub fn group(&self, namespace: &str, name: &str) -> Option<&GroupPolicy> {
        self.groups
            .iter()
            .find(|g| g.namespace == namespace && g.name == name)
    }

    /// The (namespace, ServiceAccount) pairs the broker may mint tokens for: its RBAC.
    pub fn service_accounts(&self) -> BTreeSet<(&str, &str)> {
        self.groups
            .iter()
            .map(|g| (g.namespace.as_str(), g.service_account.as_str()))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

fn forbidden(reason: String) -> Refusal {
    Refusal::new(RefusalCode::Forbidden, reason)
}

impl GroupPolicy {
    pub(crate) fn grant(&self, identity: String, instance: Option<String>) -> Grant {
        Grant {
            namespace: self.namespace.clone(),
            group: self.name.clone(),
            service_account: self.service_account.clone(),
            instance,
            identity,
        }
    }

    fn at(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The fleet's VM of a static group that `matches`, or `None` for an auto-registered
    /// group; refused when a static group lists no such VM.
    fn instance(
        &self,
        what: &str,
        matches: impl Fn(&str, &str) -> bool,
    ) -> Result<Option<String>, Refusal> {
        if self.auto_register {
            return Ok(None);
        }
        self.instances
            .iter()
            .find(|(name, address)| matches(name, address))
            .map(|(name, _)| Some(name.clone()))
            .ok_or_else(|| {
                forbidden(format!(
                    "group {} lists no VM {what}: add the VM to the fleet, or let the group \
                     auto-register",
                    self.at()
                ))
            })
    }

    /// Admits a verified AWS instance: its account, region and (static groups) address.
    pub fn admit_aws(&self, doc: &aws::Document) -> Result<Grant, Refusal> {
        if !self.accounts.contains(&doc.account_id) {
            return Err(forbidden(format!(
                "AWS account {} may not join group {}: add it to the group's `join.accounts`",
                doc.account_id,
                self.at()
            )));
        }
        if !self.regions.is_empty() && !self.regions.contains(&doc.region) {
            return Err(forbidden(format!(
                "AWS region {} may not join group {}: add it to the group's `join.regions`",
                doc.region,
                self.at()
            )));
        }
        let ip = doc.private_ip.as_deref().unwrap_or_default();
        let instance = self.instance(&format!("at address {ip}"), |_, address| {
            same_ip(address, ip)
        })?;
        Ok(self.grant(
            format!("aws:{}/{}/{}", doc.account_id, doc.region, doc.instance_id),
            instance,
        ))
    }

    /// Admits a verified GCE instance: its project, zone and (static groups) name.
    pub fn admit_gcp(&self, claims: &gcp::Claims) -> Result<Grant, Refusal> {
        let ce = &claims.google.compute_engine;
        if !self.projects.contains(&ce.project_id) {
            return Err(forbidden(format!(
                "GCP project {} may not join group {}: add it to the group's `join.projects`",
                ce.project_id,
                self.at()
            )));
        }
        if !self.zones.is_empty() && !self.zones.contains(&ce.zone) {
            return Err(forbidden(format!(
                "GCP zone {} may not join group {}: add it to the group's `join.zones`",
                ce.zone,
                self.at()
            )));
        }
        let instance = self.instance(&format!("named {}", ce.instance_name), |name, _| {
            name == ce.instance_name
        })?;
        Ok(self.grant(
            format!("gcp:{}/{}/{}", ce.project_id, ce.zone, ce.instance_id),
            instance,
        ))
    }
}

impl GroupPolicy {
    /// Admits a verified Azure VM: its subscription and, when the group lists them, its VM
    /// ID. The attested document names no address or VM name, so only auto-registered groups
    /// join by it.
    pub fn admit_azure(&self, doc: &azure::Attested) -> Result<Grant, Refusal> {
        let subscription = doc.subscription_id.to_ascii_lowercase();
        if !self
            .subscriptions
            .iter()
            .any(|s| s.to_ascii_lowercase() == subscription)
        {
            return Err(forbidden(format!(
                "Azure subscription {} may not join group {}: add it to the group's \
                 `join.subscriptions`",
                doc.subscription_id,
                self.at()
            )));
        }
        let vm_id = doc.vm_id.to_ascii_lowercase();
        if !self.vm_ids.is_empty() && !self.vm_ids.iter().any(|v| v.to_ascii_lowercase() == vm_id) {
            return Err(forbidden(format!(
                "Azure VM {} may not join group {}: add its VM ID to the group's `join.vmIds`",
                doc.vm_id,
                self.at()
            )));
        }
        if !self.auto_register {
            return Err(forbidden(format!(
                "group {} lists its VMs by address, which Azure's attested document does not \
                 name: let the group auto-register (autoRegister: true)",
                self.at()
            )));
        }
        Ok(self.grant(format!("azure:{}/{}", doc.subscription_id, doc.vm_id), None))
    }
}

/// Two addresses are the same IP (`fd00::1` and `fd00:0::1` are).
fn same_ip(a: &str, b: &str) -> bool {
    match (a.parse::<std::net::IpAddr>(), b.parse::<std::net::IpAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
