//! `argocd/` and `flux/`: what makes the engines apply `mesh/` and `workloads/`. People apply
//! these once (`kubectl apply -k`); no engine applies them, so none can delete them.
//!
//! Deleting is guarded at every level, so that no single deletion (an ApplicationSet, an
//! Application, a Flux Kustomization, a directory) cascades to a whole fleet:
//! - Argo CD: generated Applications carry no resources finalizer
//!   (`preserveResourcesOnDeletion`), the ApplicationSet never deletes an Application whose
//!   directory disappeared (`applicationsSync: create-update`), and an automated sync never
//!   empties an Application (`allowEmpty: false`).
//! - Flux: `deletionPolicy: Orphan` keeps the objects of a deleted Kustomization, while
//!   `prune` still removes the objects that leave Git.
//! - Namespaces are never pruned or deleted by either engine (see `mesh.rs`).

use std::collections::BTreeMap;

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

pub const ARGOCD_NAMESPACE: &str = "argocd";
pub const FLUX_NAMESPACE: &str = "flux-system";
const IN_CLUSTER: &str = "https://kubernetes.default.svc";
const NAME_PREFIX: &str = "meshvm";

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

fn meta(name: &str, namespace: &str) -> ObjectMeta {
    let mut meta = ObjectMeta::named(name, Some(namespace));
    meta.labels = managed_labels(&BTreeMap::new());
    meta
}

/// A path inside the repository: below the fleet's `gitops.path`.
fn repo_path(fleet: &Fleet, rel: &str) -> String {
    format!("{}/{rel}", fleet.gitops.path)
}

fn sync_policy() -> SyncPolicy {
    SyncPolicy {
        automated: Some(Automated {
            prune: true,
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

/// An ApplicationSet making one Application per group directory, and the Application of
/// `mesh/`.
fn argo_cd(fleet: &Fleet, repo_url: &str, out: &mut Rendered) {
    let g = &fleet.gitops;
    // `.path.segments` of `<gitops.path>/workloads/<ns>/<group>`: the namespace's index.
    let ns_index = g.path.split('/').count() + 1;
    let namespace = format!("{{{{ index .path.segments {ns_index} }}}}");
    let mut template_meta = ObjectMeta::named(
        &format!("{NAME_PREFIX}-{namespace}.{{{{ .path.basename }}}}"),
        Some(ARGOCD_NAMESPACE),
    );
    template_meta.labels = managed_labels(&BTreeMap::new());
    let app_set = ApplicationSet::new(
        argocd::API_VERSION,
        "ApplicationSet",
        meta(&format!("{NAME_PREFIX}-{WORKLOADS_DIR}"), ARGOCD_NAMESPACE),
        ApplicationSetSpec {
            go_template: true,
            go_template_options: vec!["missingkey=error".to_owned()],
            generators: vec![argocd::Generator {
                git: GitGenerator {
                    repo_url: repo_url.to_owned(),
                    revision: g.branch.clone(),
                    directories: vec![GitDirectory {
                        path: repo_path(fleet, &format!("{WORKLOADS_DIR}/*/*")),
                    }],
                },
            }],
            sync_policy: Some(ApplicationSetSyncPolicy {
                applications_sync: "create-update".to_owned(),
                preserve_resources_on_deletion: true,
            }),
            template: ApplicationTemplate {
                metadata: template_meta,
                spec: ApplicationSpec {
                    project: "default".to_owned(),
                    source: Source {
                        repo_url: repo_url.to_owned(),
                        target_revision: g.branch.clone(),
                        path: "{{ .path.path }}".to_owned(),
                    },
                    destination: argocd::Destination {
                        server: IN_CLUSTER.to_owned(),
                        namespace: Some(namespace),
                    },
                    sync_policy: Some(sync_policy()),
                },
            },
        },
    );
    let mesh_app = Application::new(
        argocd::API_VERSION,
        "Application",
        meta(&format!("{NAME_PREFIX}-{MESH_DIR}"), ARGOCD_NAMESPACE),
        ApplicationSpec {
            project: "default".to_owned(),
            source: Source {
                repo_url: repo_url.to_owned(),
                target_revision: g.branch.clone(),
                path: repo_path(fleet, MESH_DIR),
            },
            destination: argocd::Destination {
                server: IN_CLUSTER.to_owned(),
                namespace: Some(fleet.mesh.istio_namespace.clone()),
            },
            sync_policy: Some(sync_policy()),
        },
    );
    out.object(
        format!("{ARGOCD_DIR}/{}", layout::ARGOCD_APPLICATION_SET_FILE),
        &app_set,
    );
    out.object(
        format!("{ARGOCD_DIR}/{}", layout::ARGOCD_MESH_APPLICATION_FILE),
        &mesh_app,
    );
    out.kustomization(
        ARGOCD_DIR,
        [
            layout::ARGOCD_APPLICATION_SET_FILE,
            layout::ARGOCD_MESH_APPLICATION_FILE,
        ],
    );
}

/// A GitRepository and two Kustomizations: `mesh/`, then `workloads/` once `mesh` is ready.
fn flux(fleet: &Fleet, repo_url: &str, out: &mut Rendered) {
    let repo = GitRepository::new(
        flux::SOURCE_V1,
        "GitRepository",
        meta(NAME_PREFIX, FLUX_NAMESPACE),
        GitRepositorySpec {
            interval: "1m".to_owned(),
            url: repo_url.to_owned(),
            reference: GitRef {
                branch: fleet.gitops.branch.clone(),
            },
        },
    );
    let kustomization = |dir: &str, depends_on: Vec<DependsOn>| {
        flux::Kustomization::new(
            flux::KUSTOMIZE_V1,
            "Kustomization",
            meta(&format!("{NAME_PREFIX}-{dir}"), FLUX_NAMESPACE),
            KustomizationSpec {
                interval: "10m".to_owned(),
                retry_interval: "1m".to_owned(),
                timeout: "5m".to_owned(),
                path: format!("./{}", repo_path(fleet, dir)),
                prune: true,
                deletion_policy: "Orphan".to_owned(),
                source_ref: SourceRef {
                    kind: "GitRepository".to_owned(),
                    name: NAME_PREFIX.to_owned(),
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
        &kustomization(MESH_DIR, Vec::new()),
    );
    out.object(
        format!("{FLUX_DIR}/{}", layout::FLUX_WORKLOADS_FILE),
        &kustomization(
            WORKLOADS_DIR,
            vec![DependsOn {
                name: format!("{NAME_PREFIX}-{MESH_DIR}"),
            }],
        ),
    );
    out.kustomization(
        FLUX_DIR,
        [
            layout::FLUX_GIT_REPOSITORY_FILE,
            layout::FLUX_MESH_FILE,
            layout::FLUX_WORKLOADS_FILE,
        ],
    );
}
