//! `capture`: reads a cluster into a [`ClusterSnapshot`]. Only `get` and `list`: nothing in the
//! cluster changes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, ObjectList};
use theseus_model::KubeVersion;
use theseus_model::snapshot::{
    COMPONENT_APISERVER, COMPONENT_CONTROLLER_MANAGER, COMPONENT_ETCD, COMPONENT_SCHEDULER,
    ClusterSnapshot, ControlPlane, ControlPlaneComponent, ControllerRef, Inventory, KubeadmConfig,
    SnapshotMetadata, WorkloadKind,
};
use theseus_model::sources::{
    SourceError, image_version, parse_cluster_info_server, parse_inventory, parse_kubeadm_config,
};

use crate::convert;
use crate::error::{CaptureError, request_error};

/// Items per list request, as kubectl (`--chunk-size`).
pub const DEFAULT_PAGE_SIZE: u32 = 500;

/// The resources a capture reads (`get`, `list`), as `kubectl create clusterrole --resource`
/// takes them.
pub const RBAC_RESOURCES: &str = "nodes,pods,namespaces,services,configmaps,replicasets.apps,deployments.apps,statefulsets.apps,daemonsets.apps,jobs.batch,poddisruptionbudgets.policy";

/// Namespace where Kubean keeps cluster inventories (`<cluster>-hosts-conf`).
pub const KUBEAN_NAMESPACE: &str = "kubean-system";

/// How to capture.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// Items per list request (`limit`; later pages follow the `continue` token). 0 means
    /// [`DEFAULT_PAGE_SIZE`].
    pub page_size: u32,
    /// Where the snapshot comes from (kubeconfig context, scenario), recorded in
    /// `metadata.source`.
    pub source: Option<String>,
    /// RFC 3339 time recorded in `metadata.capturedAt`; none: now.
    pub captured_at: Option<String>,
    /// The Kubean/Kubespray inventory ConfigMap as `namespace/name`. None: found by itself (the
    /// `hostsConfRef` of a `clusters.kubean.io` object, or a `*-hosts-conf` ConfigMap in
    /// `kubean-system`, whichever names the cluster's nodes).
    pub inventory: Option<String>,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            page_size: DEFAULT_PAGE_SIZE,
            source: None,
            captured_at: None,
            inventory: None,
        }
    }
}

/// Lists every page of a list request.
async fn paged<T, F, Fut>(
    page_size: u32,
    verb_resource: (&'static str, &str),
    mut fetch: F,
) -> Result<Vec<T>, CaptureError>
where
    T: Clone,
    F: FnMut(ListParams) -> Fut,
    Fut: Future<Output = Result<ObjectList<T>, kube::Error>>,
{
    let page = if page_size == 0 {
        DEFAULT_PAGE_SIZE
    } else {
        page_size
    };
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    let mut restarts = 0;
    loop {
        let mut lp = ListParams::default().limit(page);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        match fetch(lp).await {
            Ok(list) => {
                out.extend(list.items);
                match list.metadata.continue_ {
                    Some(t) if !t.is_empty() => token = Some(t),
                    _ => return Ok(out),
                }
            }
            // The continue token expired (compaction): start the list again, as kubectl does.
            Err(kube::Error::Api(s)) if s.code == 410 && token.is_some() && restarts < 3 => {
                restarts += 1;
                out.clear();
                token = None;
            }
            Err(e) => return Err(request_error(e, verb_resource.0, verb_resource.1, None)),
        }
    }
}

async fn list_all<K>(client: &Client, resource: &str, page: u32) -> Result<Vec<K>, CaptureError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::all(client.clone());
    paged(page, ("list", resource), |lp| {
        let api = api.clone();
        async move { api.list(&lp).await }
    })
    .await
}

/// A ConfigMap, or none if it does not exist.
async fn get_config_map(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<ConfigMap>, CaptureError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    match api.get_opt(name).await {
        Ok(cm) => Ok(cm),
        Err(e) => Err(request_error(e, "get", "configmaps", Some(ns))),
    }
}

fn key(meta: &ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

/// (kind, namespace, name) of an intermediate controller.
type ObjectKey = (&'static str, String, String);

/// Owner chains through the intermediate controllers: ReplicaSet → Deployment (or another
/// controller, e.g. an Argo Rollout), Job → CronJob.
#[derive(Default)]
struct Owners {
    /// (kind, namespace, name) → its controller (kind, name), or none for a top controller.
    up: HashMap<ObjectKey, Option<(String, String)>>,
}

impl Owners {
    fn add(&mut self, kind: &'static str, meta: &ObjectMeta) {
        let (ns, name) = key(meta);
        let owner = controller_of(meta).map(|o| (o.kind.clone(), o.name.clone()));
        self.up.insert((kind, ns, name), owner);
    }

    /// The top controller of an object owned by `(kind, name)` in `ns`. The chain is followed
    /// through ReplicaSets and Jobs only: a Deployment, StatefulSet or DaemonSet is the workload
    /// whose replicas the planner counts, even when an operator owns it.
    fn top(&self, ns: &str, kind: &str, name: &str) -> (String, String) {
        let (mut kind, mut name) = (kind.to_string(), name.to_string());
        for _ in 0..8 {
            let step: &'static str = match kind.as_str() {
                "ReplicaSet" => "ReplicaSet",
                "Job" => "Job",
                _ => break,
            };
            match self.up.get(&(step, ns.to_string(), name.clone())) {
                Some(Some((k, n))) => {
                    kind = k.clone();
                    name = n.clone();
                }
                _ => break,
            }
        }
        (kind, name)
    }

    fn has_controller(&self, kind: &'static str, meta: &ObjectMeta) -> bool {
        let (ns, name) = key(meta);
        matches!(self.up.get(&(kind, ns, name)), Some(Some(_)))
    }
}

const COMPONENTS: [&str; 4] = [
    COMPONENT_APISERVER,
    COMPONENT_CONTROLLER_MANAGER,
    COMPONENT_SCHEDULER,
    COMPONENT_ETCD,
];

/// The control-plane component a kube-system pod runs, by kubeadm's `component` label or, for
/// other installers, by its name (`kube-apiserver-<node>`).
fn component_of(p: &Pod) -> Option<&'static str> {
    let meta = &p.metadata;
    if meta.namespace.as_deref() != Some("kube-system") {
        return None;
    }
    let node = p.spec.as_ref()?.node_name.as_deref()?;
    if let Some(c) = meta.labels.as_ref().and_then(|l| l.get("component"))
        && let Some(found) = COMPONENTS.iter().find(|x| *x == c)
    {
        return Some(found);
    }
    let name = meta.name.as_deref()?;
    COMPONENTS
        .iter()
        .find(|c| name == format!("{c}-{node}"))
        .copied()
}

fn component_record(p: &Pod, component: &str) -> Option<ControlPlaneComponent> {
    let spec = p.spec.as_ref()?;
    let container = spec
        .containers
        .iter()
        .find(|c| c.name == component)
        .or_else(|| spec.containers.first());
    let image = container.and_then(|c| c.image.clone());
    Some(ControlPlaneComponent {
        component: component.to_string(),
        node: spec.node_name.clone()?,
        version: image.as_deref().and_then(image_version),
        image,
    })
}

/// Reads the cluster behind `client` into a snapshot. Lists are paginated
/// ([`CaptureOptions::page_size`]) and run concurrently.
pub async fn capture(
    client: &Client,
    opts: &CaptureOptions,
) -> Result<ClusterSnapshot, CaptureError> {
    // /version first: an unreachable server or bad credentials fail here, before any list.
    let version = client
        .apiserver_version()
        .await
        .map_err(|e| request_error(e, "get", "/version", None))?;
    let page = opts.page_size;
    let (
        nodes,
        pods,
        replicasets,
        deployments,
        statefulsets,
        daemonsets,
        jobs,
        pdbs,
        services,
        namespaces,
    ) = tokio::try_join!(
        list_all::<Node>(client, "nodes", page),
        list_all::<Pod>(client, "pods", page),
        list_all::<ReplicaSet>(client, "replicasets.apps", page),
        list_all::<Deployment>(client, "deployments.apps", page),
        list_all::<StatefulSet>(client, "statefulsets.apps", page),
        list_all::<DaemonSet>(client, "daemonsets.apps", page),
        list_all::<Job>(client, "jobs.batch", page),
        list_all::<PodDisruptionBudget>(client, "poddisruptionbudgets.policy", page),
        list_all::<Service>(client, "services", page),
        async {
            // Namespaces: only their labels matter (namespaceSelector of affinity terms).
            let api: Api<Namespace> = Api::all(client.clone());
            paged(page, ("list", "namespaces"), |lp| {
                let api = api.clone();
                async move { api.list_metadata(&lp).await }
            })
            .await
        },
    )?;

    let mut owners = Owners::default();
    for r in &replicasets {
        owners.add("ReplicaSet", &r.metadata);
    }
    for j in &jobs {
        owners.add("Job", &j.metadata);
    }

    let mut snap = ClusterSnapshot {
        kubernetes_version: KubeVersion::parse(&version.git_version).ok(),
        ..ClusterSnapshot::default()
    };
    for n in &nodes {
        snap.nodes.push(convert::node(n)?);
    }
    let mut components = Vec::new();
    for p in &pods {
        let controller = controller_of(&p.metadata)
            // Mirror pods are owned by their Node: no controller recreates them elsewhere.
            .filter(|o| o.kind != "Node")
            .map(|o| {
                let ns = p.metadata.namespace.as_deref().unwrap_or_default();
                let (kind, name) = owners.top(ns, &o.kind, &o.name);
                ControllerRef {
                    kind: WorkloadKind::from(kind),
                    name,
                }
            });
        snap.pods.push(convert::pod(p, controller)?);
        if let Some(c) = component_of(p).and_then(|c| component_record(p, c)) {
            components.push(c);
        }
    }
    for d in &deployments {
        snap.workloads.push(convert::deployment(d)?);
    }
    for s in &statefulsets {
        snap.workloads.push(convert::statefulset(s)?);
    }
    for d in &daemonsets {
        snap.workloads.push(convert::daemonset(d)?);
    }
    for r in replicasets
        .iter()
        .filter(|r| !owners.has_controller("ReplicaSet", &r.metadata))
    {
        snap.workloads.push(convert::replicaset(r)?);
    }
    for j in jobs
        .iter()
        .filter(|j| !owners.has_controller("Job", &j.metadata))
    {
        snap.workloads.push(convert::job(j)?);
    }
    for p in &pdbs {
        snap.pod_disruption_budgets.push(convert::pdb(p)?);
    }
    snap.services = services.iter().map(convert::service).collect();
    snap.namespaces = namespaces
        .iter()
        .map(|n| convert::namespace(&n.metadata))
        .collect();

    let kubeadm = kubeadm_config(client).await?;
    let cluster_info_server = cluster_info(client).await?;
    let node_names: BTreeSet<&str> = snap.nodes.iter().map(|n| n.name.as_str()).collect();
    let (inventory, kubean_cluster) = match &opts.inventory {
        Some(r) => (Some(named_inventory(client, r).await?), None),
        None => discover_inventory(client, &node_names).await?,
    };

    // Control-plane nodes: by role label, by control-plane static pods, by the inventory.
    let mut cp: BTreeSet<String> = snap
        .nodes
        .iter()
        .filter(|n| n.is_control_plane())
        .map(|n| n.name.clone())
        .collect();
    cp.extend(components.iter().map(|c| c.node.clone()));
    if let Some(inv) = &inventory {
        cp.extend(
            inv.kube_control_plane
                .iter()
                .filter(|h| node_names.contains(h.as_str()))
                .cloned(),
        );
    }
    let mut control_plane = ControlPlane {
        nodes: snap
            .nodes
            .iter()
            .filter(|n| cp.contains(&n.name))
            .map(|n| n.name.clone())
            .collect(),
        components,
        kubeadm,
        cluster_info_server,
        inventory,
        ..ControlPlane::default()
    };
    // Stored only when it is a node of this cluster (an inventory named with `inventory` may
    // describe other hosts).
    if let Some((primary, source)) = control_plane
        .implied_primary(&snap.nodes)
        .filter(|(p, _)| node_names.contains(p.as_str()))
    {
        control_plane.primary = Some(primary);
        control_plane.primary_source = Some(source);
    }
    snap.metadata = SnapshotMetadata {
        captured_at: Some(
            opts.captured_at
                .clone()
                .unwrap_or_else(|| k8s_openapi::jiff::Timestamp::now().to_string()),
        ),
        source: opts.source.clone(),
        cluster_name: control_plane
            .kubeadm
            .as_ref()
            .and_then(|k| k.cluster_name.clone())
            .or(kubean_cluster),
    };
    snap.control_plane = control_plane;
    Ok(snap)
}

fn source_error(object: &str, e: SourceError) -> CaptureError {
    CaptureError::Invalid {
        object: object.to_string(),
        message: e.to_string(),
    }
}

/// `kube-system/kubeadm-config`, when the cluster was made by kubeadm.
async fn kubeadm_config(client: &Client) -> Result<Option<KubeadmConfig>, CaptureError> {
    const NAME: &str = "kube-system/kubeadm-config";
    let Some(cm) = get_config_map(client, "kube-system", "kubeadm-config").await? else {
        return Ok(None);
    };
    let data = cm.data.unwrap_or_default();
    match parse_kubeadm_config(&data, Some(NAME)) {
        Ok(c) => Ok(Some(c)),
        // Only a ClusterStatus, or something else: not a configuration theseus can read.
        Err(SourceError::Missing { .. }) => Ok(None),
        Err(e) => Err(source_error(&format!("ConfigMap {NAME}"), e)),
    }
}

/// The server of `kube-public/cluster-info`.
async fn cluster_info(client: &Client) -> Result<Option<String>, CaptureError> {
    let Some(cm) = get_config_map(client, "kube-public", "cluster-info").await? else {
        return Ok(None);
    };
    let Some(kubeconfig) = cm.data.as_ref().and_then(|d| d.get("kubeconfig")) else {
        return Ok(None);
    };
    parse_cluster_info_server(kubeconfig)
        .map(Some)
        .map_err(|e| source_error("ConfigMap kube-public/cluster-info", e))
}

/// The inventory text of a hosts-conf ConfigMap (`hosts.yml`, `hosts.yaml`, or its only key).
fn hosts_yml(cm: &ConfigMap) -> Option<&String> {
    let data = cm.data.as_ref()?;
    data.get("hosts.yml")
        .or_else(|| data.get("hosts.yaml"))
        .or_else(|| (data.len() == 1).then(|| data.values().next()).flatten())
}

/// The inventory the user named (`namespace/name`): it must exist and parse.
async fn named_inventory(client: &Client, reference: &str) -> Result<Inventory, CaptureError> {
    let object = format!("ConfigMap {reference}");
    let Some((ns, name)) = reference.split_once('/') else {
        return Err(CaptureError::Invalid {
            object,
            message: "the inventory must be given as namespace/name, e.g. kubean-system/centos-hosts-conf".into(),
        });
    };
    let cm = get_config_map(client, ns, name)
        .await?
        .ok_or_else(|| CaptureError::Invalid {
            object: object.clone(),
            message: "not found".into(),
        })?;
    let text = hosts_yml(&cm).ok_or_else(|| CaptureError::Invalid {
        object: object.clone(),
        message: "has no hosts.yml key".into(),
    })?;
    parse_inventory(text, Some(reference)).map_err(|e| source_error(&object, e))
}

/// Finds the Kubean inventory of this cluster: the `hostsConfRef` of each `clusters.kubean.io`
/// object and every `*-hosts-conf` ConfigMap in `kubean-system` are candidates; the one whose
/// hosts name the most nodes of this cluster wins (a Kubean management cluster holds the
/// inventories of other clusters too). Best effort: a missing CRD, namespace or permission means
/// no inventory. Returns the inventory and the Kubean cluster name.
async fn discover_inventory(
    client: &Client,
    node_names: &BTreeSet<&str>,
) -> Result<(Option<Inventory>, Option<String>), CaptureError> {
    // (namespace, name) → Kubean cluster that references it.
    let mut candidates: BTreeMap<(String, String), Option<String>> = BTreeMap::new();
    let gvk = GroupVersionKind::gvk("kubean.io", "v1alpha1", "Cluster");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "clusters");
    let clusters: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    if let Ok(list) = clusters.list(&ListParams::default()).await {
        for c in list.items {
            let r = &c.data["spec"]["hostsConfRef"];
            if let (Some(ns), Some(name)) = (r["namespace"].as_str(), r["name"].as_str()) {
                candidates.insert((ns.to_string(), name.to_string()), c.metadata.name.clone());
            }
        }
    }
    let mut maps: BTreeMap<(String, String), ConfigMap> = BTreeMap::new();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), KUBEAN_NAMESPACE);
    if let Ok(list) = api.list(&ListParams::default()).await {
        for cm in list.items {
            let k = key(&cm.metadata);
            if k.1.ends_with("-hosts-conf") {
                candidates.entry(k.clone()).or_insert(None);
            }
            maps.insert(k, cm);
        }
    }
    let mut best: Option<(usize, Inventory, Option<String>)> = None;
    for ((ns, name), cluster) in candidates {
        let cm = match maps.remove(&(ns.clone(), name.clone())) {
            Some(cm) => cm,
            None => match get_config_map(client, &ns, &name).await {
                Ok(Some(cm)) => cm,
                _ => continue,
            },
        };
        let Some(text) = hosts_yml(&cm) else { continue };
        let Ok(inv) = parse_inventory(text, Some(&format!("{ns}/{name}"))) else {
            continue;
        };
        let score = inv
            .hosts
            .iter()
            .map(|h| h.name.as_str())
            .chain(inv.kube_control_plane.iter().map(String::as_str))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|h| node_names.contains(h))
            .count();
        let cluster = cluster.or_else(|| name.strip_suffix("-hosts-conf").map(str::to_string));
        if score > 0 && best.as_ref().is_none_or(|b| score > b.0) {
            best = Some((score, inv, cluster));
        }
    }
    Ok(match best {
        Some((_, inv, cluster)) => (Some(inv), cluster),
        None => (None, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(ns: &str, name: &str, owner: Option<(&str, &str)>) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            owner_references: owner.map(|(kind, name)| {
                vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: kind.into(),
                    name: name.into(),
                    uid: "u".into(),
                    controller: Some(true),
                    block_owner_deletion: None,
                }]
            }),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn owner_chains_end_at_the_top_controller() {
        let mut o = Owners::default();
        o.add(
            "ReplicaSet",
            &meta("shop", "web-5d8f", Some(("Deployment", "web"))),
        );
        o.add("ReplicaSet", &meta("shop", "orphan-1", None));
        o.add(
            "ReplicaSet",
            &meta("shop", "canary-7", Some(("Rollout", "canary"))),
        );
        o.add(
            "Job",
            &meta("ops", "backup-2899", Some(("CronJob", "backup"))),
        );
        o.add("Job", &meta("ops", "once", None));
        let top = |ns, kind, name| o.top(ns, kind, name);
        assert_eq!(
            top("shop", "ReplicaSet", "web-5d8f"),
            ("Deployment".into(), "web".into())
        );
        assert_eq!(
            top("shop", "ReplicaSet", "orphan-1"),
            ("ReplicaSet".into(), "orphan-1".into())
        );
        assert_eq!(
            top("shop", "ReplicaSet", "canary-7"),
            ("Rollout".into(), "canary".into())
        );
        assert_eq!(
            top("ops", "Job", "backup-2899"),
            ("CronJob".into(), "backup".into())
        );
        assert_eq!(top("ops", "Job", "once"), ("Job".into(), "once".into()));
        // Same name in another namespace, or an owner not listed: stops where it is.
        assert_eq!(
            top("other", "ReplicaSet", "web-5d8f"),
            ("ReplicaSet".into(), "web-5d8f".into())
        );
        assert_eq!(
            top("shop", "StatefulSet", "redis"),
            ("StatefulSet".into(), "redis".into())
        );
        assert!(o.has_controller("ReplicaSet", &meta("shop", "web-5d8f", None)));
        assert!(!o.has_controller("ReplicaSet", &meta("shop", "orphan-1", None)));
    }
}
