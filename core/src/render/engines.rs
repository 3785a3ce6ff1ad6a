//! `argocd/` and `flux/`: what makes the engines apply `mesh/` and `workloads/`. People apply
//! them once (`kubectl apply -k`); from then on a bootstrap Application (Argo CD, app of
//! apps) or Kustomization (Flux) keeps them in step with Git, without pruning.
//!
//! Scaling conventions (figures in docs/tree.md):
//! - Argo CD: every Application carries `argocd.argoproj.io/manifest-generate-paths: .`, so a
//!   commit invalidates the manifest cache only of the Applications whose directory it
//!   touched; target revisions are fully qualified (`refs/heads/<branch>`), so Argo CD never
//!   has to guess whether a name is a branch or a tag.
//! - Flux: one Kustomization per workload group, each after the mesh one, instead of one for
//!   every workload: a server-side apply stays the size of a group, and a failing group holds
//!   back only itself. The GitRepository leaves out everything but meshvm's subtree and the
//!   VMs' bootstrap files, and `gitops.flux.shard` sets Flux's sharding label.
//!
//! Deleting is guarded at every level, so that no single deletion (an ApplicationSet, an
//! Application, a Flux Kustomization, a directory) cascades to a whole fleet:
//! - Argo CD: generated Applications carry no resources finalizer
//!   (`preserveResourcesOnDeletion`), the ApplicationSet never deletes an Application whose
//!   directory disappeared (`applicationsSync: create-update`), an automated sync never
//!   empties an Application (`allowEmpty: false`), and the bootstrap Application never prunes.
//! - Flux: `deletionPolicy: Orphan` keeps the objects of a deleted Kustomization, while
//!   `prune` still removes the objects that leave Git; the bootstrap Kustomization never
//!   prunes, so a group's Kustomization stays until it is deleted by hand, as Argo CD's
//!   Applications do.
//! - Namespaces are never pruned or deleted by either engine (see `mesh.rs`).

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::Rendered;
use crate::k8s::ObjectMeta;
use crate::k8s::argocd::{
    self, Application, ApplicationSet, ApplicationSetSpec, ApplicationSetSyncPolicy,
    ApplicationSpec, ApplicationTemplate, Automated, Backoff, GitDirectory, GitGenerator, Retry,
    Source, SyncPolicy,
};
use crate::k8s::flux::{
    self, DependsOn, GitRef, GitRepository, GitRepositorySpec, KustomizationSpec, SourceRef,
};
use crate::render::layout::{self, ARGOCD_DIR, FLUX_DIR, MESH_DIR, WORKLOADS_DIR};
use crate::render::objects::managed_labels;
use crate::spec::{Engine, Fleet};

const NAME_PREFIX: &str = "meshvm";
/// Argo CD: the paths, relative to an Application's own, whose changes invalidate its
/// manifest cache.
pub const MANIFEST_GENERATE_PATHS: &str = "argocd.argoproj.io/manifest-generate-paths";
/// Flux: which controller shard reconciles an object.
pub const FLUX_SHARD_LABEL: &str = "sharding.fluxcd.io/key";
/// The longest Flux object name: Flux writes it into a label value of every object it applies.
const FLUX_NAME_MAX: usize = 63;

pub(super) fn engines(fleet: &Fleet) -> Rendered {
    let mut out = Rendered::default();
    // Validation requires a repoURL whenever engines are listed.
    let Some(repo_url) = fleet.gitops.repo_url.as_deref() else {
        return out;
    };
    for engine in &fleet.gitops.engines {
        match engine {
            Engine::Argocd => argo_cd(fleet, repo_url, &mut out),
            Engine::Flux => flux(fleet, repo_url, &mut out),
        }
    }
    out
}

/// `meshvm`, or `meshvm-<gitops.name>`: the start of every engine object's name, so that two
/// fleets can share one Argo CD or Flux.
pub fn name_prefix(fleet: &Fleet) -> String {
    match &fleet.gitops.name {
        Some(name) => format!("{NAME_PREFIX}-{name}"),
        None => NAME_PREFIX.to_owned(),
    }
}

fn meta(name: &str, namespace: &str) -> ObjectMeta {
    let mut meta = ObjectMeta::named(name, Some(namespace));
    meta.labels = managed_labels(&BTreeMap::new());
    meta
}

/// A path inside the repository: below the fleet's `gitops.path`.
fn repo_path(fleet: &Fleet, rel: &str) -> String {
    format!("{}/{rel}", fleet.gitops.path)
}

/// The fully qualified ref of the fleet's branch.
fn qualified_revision(fleet: &Fleet) -> String {
    format!("refs/heads/{}", fleet.gitops.branch)
}

fn sync_policy(prune: bool) -> SyncPolicy {
    SyncPolicy {
        automated: Some(Automated {
            prune,
            self_heal: true,
            allow_empty: false,
        }),
        sync_options: Vec::new(),
        // Group Applications may sync before `mesh` has made their namespace: retry.
        retry: Some(Retry {
            limit: 10,
            backoff: Backoff {
                duration: "10s".to_owned(),
                factor: 2,
                max_duration: "5m".to_owned(),
            },
        }),
    }
}

/// Argo CD metadata: managed, in Argo CD's namespace, with its manifest cache keyed on its own
/// directory only.
fn argo_meta(fleet: &Fleet, name: &str) -> ObjectMeta {
    let mut meta = meta(name, &fleet.gitops.argocd.namespace);
    meta.annotations
        .insert(MANIFEST_GENERATE_PATHS.to_owned(), ".".to_owned());
    meta
}

/// An Application of one directory of the tree.
fn application(
    fleet: &Fleet,
    repo_url: &str,
    name: &str,
    dir: &str,
    namespace: &str,
    prune: bool,
) -> Application {
    let argo = &fleet.gitops.argocd;
    Application::new(
        argocd::API_VERSION,
        "Application",
        argo_meta(fleet, name),
        ApplicationSpec {
            project: argo.project.clone(),
            source: Source {
                repo_url: repo_url.to_owned(),
                target_revision: qualified_revision(fleet),
                path: repo_path(fleet, dir),
            },
            destination: argocd::Destination {
                server: argo.server.clone(),
                namespace: Some(namespace.to_owned()),
            },
            sync_policy: Some(sync_policy(prune)),
        },
    )
}

/// An ApplicationSet making one Application per group directory, the Application of `mesh/`,
/// and the bootstrap Application of `argocd/` itself.
fn argo_cd(fleet: &Fleet, repo_url: &str, out: &mut Rendered) {
    let g = &fleet.gitops;
    let prefix = name_prefix(fleet);
    // `.path.segments` of `<gitops.path>/workloads/<ns>/<group>`: the namespace's index.
    let ns_index = g.path.split('/').count() + 1;
    let app_set = application_set(
        fleet,
        repo_url,
        &format!("{prefix}-{WORKLOADS_DIR}"),
        &format!("{WORKLOADS_DIR}/*/*"),
        argo_group_app_name(&prefix, ns_index),
        ns_index,
    );
    let mut resources = vec![
        layout::ARGOCD_APPLICATION_SET_FILE,
        layout::ARGOCD_BOOTSTRAP_FILE,
        layout::ARGOCD_MESH_APPLICATION_FILE,
    ];
    // Split groups' buckets (`workloads/<ns>/<group>/buckets/<i>`): a second ApplicationSet,
    // only when some group is split, so unsplit fleets' trees do not change.
    if fleet
        .workloads
        .iter()
        .any(|w| super::buckets::split(w, g.bucket_threshold).is_some())
    {
        let mut buckets = application_set(
            fleet,
            repo_url,
            &format!("{prefix}-{WORKLOADS_DIR}-{}", layout::BUCKETS_DIR),
            &format!("{WORKLOADS_DIR}/*/*/{}/*", layout::BUCKETS_DIR),
            argo_bucket_app_name(&prefix, ns_index),
            ns_index,
        );
        // A bucket's directory lists its VMs' overlays in `../../vms`: their changes must
        // invalidate its manifest cache too.
        buckets.spec.template.metadata.annotations.insert(
            MANIFEST_GENERATE_PATHS.to_owned(),
            format!(".;../../{}", layout::VMS_DIR),
        );
        out.object(
            format!(
                "{ARGOCD_DIR}/{}",
                layout::ARGOCD_BUCKETS_APPLICATION_SET_FILE
            ),
            &buckets,
        );
        resources.insert(0, layout::ARGOCD_BUCKETS_APPLICATION_SET_FILE);
    }
    let mesh_app = application(
        fleet,
        repo_url,
        &format!("{prefix}-{MESH_DIR}"),
        MESH_DIR,
        &fleet.mesh.istio_namespace,
        true,
    );
    // App of apps: applies `argocd/` (itself included), never pruning, so a change there
    // reaches the cluster and a file removed by mistake deletes nothing.
    let bootstrap = application(
        fleet,
        repo_url,
        &format!("{prefix}-{ARGOCD_DIR}"),
        ARGOCD_DIR,
        &g.argocd.namespace,
        false,
    );
    out.object(
        format!("{ARGOCD_DIR}/{}", layout::ARGOCD_APPLICATION_SET_FILE),
        &app_set,
    );
    out.object(
        format!("{ARGOCD_DIR}/{}", layout::ARGOCD_MESH_APPLICATION_FILE),
        &mesh_app,
    );
    out.object(
        format!("{ARGOCD_DIR}/{}", layout::ARGOCD_BOOTSTRAP_FILE),
        &bootstrap,
    );
    out.kustomization(ARGOCD_DIR, resources);
}

/// An ApplicationSet making one Application per directory matching `dirs` (below
/// `gitops.path`), named by `name_template`, deploying to the namespace at `ns_index` of its
/// path, with the groups' deletion guards.
fn application_set(
    fleet: &Fleet,
    repo_url: &str,
    name: &str,
    dirs: &str,
    name_template: String,
    ns_index: usize,
) -> ApplicationSet {
    let g = &fleet.gitops;
    let namespace = format!("{{{{ index .path.segments {ns_index} }}}}");
    let template_meta = argo_meta(fleet, &name_template);
    let mut app = application(fleet, repo_url, "", "", &namespace, true).spec;
    app.source.path = "{{ .path.path }}".to_owned();
    ApplicationSet::new(
        argocd::API_VERSION,
        "ApplicationSet",
        meta(name, &g.argocd.namespace),
        ApplicationSetSpec {
            go_template: true,
            go_template_options: vec!["missingkey=error".to_owned()],
            generators: vec![argocd::Generator {
                git: GitGenerator {
                    repo_url: repo_url.to_owned(),
                    revision: qualified_revision(fleet),
                    directories: vec![GitDirectory {
                        path: repo_path(fleet, dirs),
                    }],
                },
            }],
            sync_policy: Some(ApplicationSetSyncPolicy {
                applications_sync: "create-update".to_owned(),
                preserve_resources_on_deletion: true,
            }),
            template: ApplicationTemplate {
                metadata: template_meta,
                spec: app,
            },
        },
    )
}

/// The ApplicationSet's template of a group Application's name: `<prefix>-<ns>.<group>`, cut
/// as [`flux_name`] cuts (Argo CD's label tracking writes the name into a label value, at most
/// 63 characters), in Go template with the Sprig functions the ApplicationSet controller has.
fn argo_group_app_name(prefix: &str, ns_index: usize) -> String {
    argo_app_name(
        &format!("{prefix}-%s.%s"),
        &format!("(index .path.segments {ns_index}) .path.basename"),
    )
}

/// The ApplicationSet's template of a bucket Application's name: `<prefix>-<ns>.<group>.<i>`,
/// cut as [`argo_group_app_name`] cuts.
fn argo_bucket_app_name(prefix: &str, ns_index: usize) -> String {
    argo_app_name(
        &format!("{prefix}-%s.%s.%s"),
        &format!(
            "(index .path.segments {ns_index}) (index .path.segments {}) .path.basename",
            ns_index + 1
        ),
    )
}

/// An Application name template: Go's `printf` of `format` and `args`, cut as [`flux_name`]
/// cuts.
fn argo_app_name(format: &str, args: &str) -> String {
    let keep = FLUX_NAME_MAX - NAME_HASH_HEX - 1;
    format!(
        "{{{{- $name := printf \"{format}\" {args} -}}}}\
         {{{{- if gt (len $name) {FLUX_NAME_MAX} -}}}}\
         {{{{- regexReplaceAll \"[-.]+$\" (trunc {keep} $name) \"\" }}}}-{{{{ trunc {NAME_HASH_HEX} (sha256sum $name) }}}}\
         {{{{- else -}}}}{{{{ $name }}}}{{{{- end -}}}}"
    )
}

/// Hex digits of the hash that ends a cut name.
const NAME_HASH_HEX: usize = 8;

/// A Flux object name of at most 63 characters: `name` itself when it fits, else its start
/// and a hash of the whole, so long names stay unique and stable.
pub fn flux_name(name: &str) -> String {
    if name.len() <= FLUX_NAME_MAX {
        return name.to_owned();
    }
    let hash = Sha256::digest(name.as_bytes());
    let suffix: String = hash[..NAME_HASH_HEX / 2]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // Names are ASCII (validated DNS labels joined by '-' and '.').
    let start = name[..FLUX_NAME_MAX - suffix.len() - 1].trim_end_matches(['-', '.']);
    format!("{start}-{suffix}")
}

/// `.sourceignore` of the GitRepository: only meshvm's subtree, without the VMs' bootstrap
/// files (no controller needs them, and at 10,000 VMs they are most of the tree).
fn source_ignore(fleet: &Fleet) -> String {
    // gitignore cannot re-include below an excluded directory: exclude and re-include level
    // by level (`/*`, `!/clusters/`, `/clusters/*`, `!/clusters/cluster1/`).
    let mut out = String::new();
    let mut at = String::new();
    for part in fleet.gitops.path.split('/') {
        out.push_str(&format!("{at}/*\n!{at}/{part}/\n"));
        at = format!("{at}/{part}");
    }
    out.push_str(&format!(
        "{at}/{WORKLOADS_DIR}/**/{}/\n",
        layout::BOOTSTRAP_DIR
    ));
    out
}

/// A GitRepository; Kustomizations of `mesh/`, then one per group once `mesh` is ready; and
/// the bootstrap Kustomization of `flux/` itself.
fn flux(fleet: &Fleet, repo_url: &str, out: &mut Rendered) {
    let f = &fleet.gitops.flux;
    let prefix = name_prefix(fleet);
    let flux_meta = |name: &str| {
        let mut meta = meta(&flux_name(name), &f.namespace);
        if let Some(shard) = &f.shard {
            meta.labels
                .insert(FLUX_SHARD_LABEL.to_owned(), shard.clone());
        }
        meta
    };
    let repo = GitRepository::new(
        flux::SOURCE_V1,
        "GitRepository",
        flux_meta(&prefix),
        GitRepositorySpec {
            interval: "1m".to_owned(),
            url: repo_url.to_owned(),
            reference: GitRef {
                branch: fleet.gitops.branch.clone(),
            },
            ignore: Some(source_ignore(fleet)),
        },
    );
    let mesh_name = flux_name(&format!("{prefix}-{MESH_DIR}"));
    let kustomization = |name: &str, dir: &str, prune: bool, depends_on: Vec<DependsOn>| {
        flux::Kustomization::new(
            flux::KUSTOMIZE_V1,
            "Kustomization",
            flux_meta(name),
            KustomizationSpec {
                interval: "10m".to_owned(),
                retry_interval: "1m".to_owned(),
                timeout: "5m".to_owned(),
                path: format!("./{}", repo_path(fleet, dir)),
                prune,
                deletion_policy: "Orphan".to_owned(),
                source_ref: SourceRef {
                    kind: "GitRepository".to_owned(),
                    name: flux_name(&prefix),
                },
                depends_on,
            },
        )
    };
    out.object(
        format!("{FLUX_DIR}/{}", layout::FLUX_GIT_REPOSITORY_FILE),
        &repo,
    );
    out.object(
        format!("{FLUX_DIR}/{}", layout::FLUX_MESH_FILE),
        &kustomization(&mesh_name, MESH_DIR, true, Vec::new()),
    );
    out.object(
        format!("{FLUX_DIR}/{}", layout::FLUX_BOOTSTRAP_FILE),
        &kustomization(&format!("{prefix}-{FLUX_DIR}"), FLUX_DIR, false, Vec::new()),
    );
    let mut resources = vec![
        layout::FLUX_BOOTSTRAP_FILE.to_owned(),
        layout::FLUX_GIT_REPOSITORY_FILE.to_owned(),
        layout::FLUX_MESH_FILE.to_owned(),
    ];
    let groups: BTreeMap<(&str, &str), u32> = fleet
        .workloads
        .iter()
        .map(|w| {
            let buckets = super::buckets::split(w, fleet.gitops.bucket_threshold);
            (
                (w.namespace.as_str(), w.name.as_str()),
                buckets.map_or(0, |b| b.len() as u32),
            )
        })
        .collect();
    let depends_on = |name: &str| DependsOn {
        name: name.to_owned(),
    };
    // With buckets on, a VM can move between Kustomizations, and the order below holds only
    // once each Kustomization has its new `dependsOn`: so they also wait for the bootstrap
    // Kustomization to have applied `flux/` at the same revision.
    let bootstrap_name = flux_name(&format!("{prefix}-{FLUX_DIR}"));
    let mut base_depends_on = vec![depends_on(&mesh_name)];
    if fleet.gitops.bucket_threshold.is_some() {
        base_depends_on.push(depends_on(&bootstrap_name));
    }
    for ((namespace, group), buckets) in groups {
        let group_name = format!("{prefix}-{namespace}.{group}");
        let bucket_name = |bucket: u32| flux_name(&format!("{group_name}.{bucket}"));
        // A VM that leaves a Kustomization is applied by its new one first, which takes it
        // over (Flux's prune skips objects whose owner labels are another Kustomization's):
        // VMs only move from the group into its buckets (when it is split) or between the
        // last bucket and the others (when the count changes), so the group waits for every
        // bucket and each bucket for the last one.
        let mut group_depends_on = base_depends_on.clone();
        group_depends_on.extend((0..buckets).map(|b| depends_on(&bucket_name(b))));
        for bucket in 0..buckets {
            let mut bucket_depends_on = base_depends_on.clone();
            if bucket + 1 < buckets {
                bucket_depends_on.push(depends_on(&bucket_name(buckets - 1)));
            }
            let file = layout::flux_bucket_file(namespace, group, bucket);
            out.object(
                format!("{FLUX_DIR}/{file}"),
                &kustomization(
                    &bucket_name(bucket),
                    &layout::bucket_dir(namespace, group, bucket),
                    true,
                    bucket_depends_on,
                ),
            );
            resources.push(file);
        }
        let file = layout::flux_group_file(namespace, group);
        out.object(
            format!("{FLUX_DIR}/{file}"),
            &kustomization(
                &group_name,
                &layout::group_dir(namespace, group),
                true,
                group_depends_on,
            ),
        );
        resources.push(file);
    }
    out.kustomization(FLUX_DIR, resources);
}

#[cfg(test)]
mod tests {
    use super::{argo_group_app_name, flux_name};

    /// The ApplicationSet's name template, as the controller sees it. Checked by hand with
    /// Sprig v3.3.0 (the version Argo CD 3 uses) to give exactly `flux_name` of
    /// `meshvm-<ns>.<group>` for a short name, a 46+63-character one
    /// (`meshvm-nnn…n-028f0f11`) and one cut after a hyphen (`…aaaa-b-677fe856`).
    #[test]
    fn argo_cd_group_application_names_are_cut_as_flux_names_are() {
        assert_eq!(
            argo_group_app_name("meshvm", 2),
            "{{- $name := printf \"meshvm-%s.%s\" (index .path.segments 2) .path.basename -}}\
             {{- if gt (len $name) 63 -}}\
             {{- regexReplaceAll \"[-.]+$\" (trunc 54 $name) \"\" }}-{{ trunc 8 (sha256sum $name) }}\
             {{- else -}}{{ $name }}{{- end -}}"
        );
        assert_eq!(
            flux_name(&format!("meshvm-{}.{}", "n".repeat(46), "g".repeat(63))),
            format!("meshvm-{}-028f0f11", "n".repeat(46))
        );
        assert_eq!(
            flux_name(&format!(
                "meshvm-ns-a.{}-{}",
                "a".repeat(40),
                "b".repeat(20)
            )),
            format!("meshvm-ns-a.{}-b-677fe856", "a".repeat(40))
        );
    }

    #[test]
    fn long_flux_names_are_cut_with_a_hash_and_stay_distinct() {
        assert_eq!(flux_name("meshvm-ns.group"), "meshvm-ns.group");
        let a = flux_name(&format!("meshvm-{}.{}", "n".repeat(63), "a".repeat(63)));
        let b = flux_name(&format!("meshvm-{}.{}", "n".repeat(63), "b".repeat(63)));
        assert_eq!(a.len(), 63);
        assert_ne!(a, b);
        // A cut that would end on '.' or '-' does not leave it before the hash.
        let dotted = flux_name(&format!("meshvm-{}.{}", "n".repeat(46), "g".repeat(63)));
        assert!(!dotted.contains(".-") && !dotted.contains("--"), "{dotted}");
    }
}
