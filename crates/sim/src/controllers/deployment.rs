//! The Deployment controller of kube-controller-manager (`pkg/controller/deployment`): one
//! ReplicaSet per pod template (named `<deployment>-<pod-template-hash>`, the hash label added to
//! its selector and template), RollingUpdate within `maxSurge`/`maxUnavailable`, Recreate (old
//! pods gone before new ones start), proportional scaling of a rollout in progress, revision
//! annotations, pause, the Available and Progressing conditions (with the progress deadline), and
//! removal of old ReplicaSets beyond `revisionHistoryLimit`.
//!
//! Like the real controller it works only with ReplicaSets (their spec and status); the pods are
//! the ReplicaSet controller's. It reads pods only to know when a Recreate rollout may start the
//! new ones.

use crate::json::{Field, Json, Ptr, object};
use crate::tree::Tree;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::mpsc::unbounded_channel;
use tokio::task::JoinHandle;

use super::workloads::{
    Cache, FeedMsg, Key, Queue, Reconciler, adopt, annotation, controller_parts, created_at,
    delete_obj, i64_at, is_terminal, is_terminating, labels_of, owner_ref, parse_time, record,
    release, retry_later, run, scaled_value, selector_of, spawn_feed, str_at, template_hash,
    uid_of, until, write_status,
};
use crate::cluster::{Cluster, ns_name};
use crate::selector::LabelSelector;
use crate::store::StoredObject;

/// Settings of the Deployment controller.
#[derive(Clone, Debug)]
pub struct DeploymentConfig {
    /// Whether to record Events (`ScalingReplicaSet`, ...).
    pub events: bool,
}

impl Default for DeploymentConfig {
    fn default() -> Self {
        DeploymentConfig { events: true }
    }
}

const D_FEED: usize = 0;
const D_RS: usize = 1;
const D_PODS: usize = 2;
const COMPONENT: &str = "deployment-controller";

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const HASH_LABEL: &str = "pod-template-hash";

/// Annotations of a Deployment that are not copied to its ReplicaSets.
const NOT_COPIED: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];
const MAX_REV_HISTORY_CHARS: usize = 2000;

/// Starts the Deployment controller.
pub fn spawn_deployment(cluster: Cluster, cfg: DeploymentConfig) -> JoinHandle<()> {
    let (tx, rx) = unbounded_channel();
    spawn_feed(&cluster, &cluster.res.deployments, D_FEED, tx.clone());
    spawn_feed(&cluster, &cluster.res.replicasets, D_RS, tx.clone());
    spawn_feed(&cluster, &cluster.res.pods, D_PODS, tx);
    let ctl = DController {
        cluster,
        cfg,
        deps: Cache::new(None, false),
        selectors: BTreeMap::new(),
        adopt: BTreeSet::new(),
        sets: Cache::new(Some("Deployment"), true),
        pods: Cache::new(Some("ReplicaSet"), false),
        templates: HashMap::new(),
        same_template: HashMap::new(),
    };
    tokio::spawn(run(ctl, rx, 3))
}

struct DController {
    cluster: Cluster,
    cfg: DeploymentConfig,
    deps: Cache,
    selectors: BTreeMap<Key, LabelSelector>,
    /// Deployments that may have orphaned replica sets to adopt.
    adopt: BTreeSet<Key>,
    sets: Cache,
    pods: Cache,
    /// Deployment uid → (generation, its pod template normalized): a template changes only
    /// with the spec, which bumps the generation.
    templates: HashMap<String, (i64, Tree)>,
    /// ReplicaSet uid → (its generation, the deployment's uid and generation, whether their
    /// templates are equal ignoring the hash label).
    same_template: HashMap<String, (i64, String, i64, bool)>,
}

/// The sync stopped after a failed write; a retry is already queued.
struct Stop;

type Res<T> = Result<T, Stop>;

// ----------------------------------------------------------------------------------------------
// Reading deployments and replica sets

fn replicas(v: &Tree) -> i64 {
    i64_at(v, "/spec/replicas")
        .unwrap_or(1)
        .clamp(0, i64::from(i32::MAX))
}

fn st(v: &Tree, field: &str) -> i64 {
    v.field("status")
        .and_then(|s| s.field(field))
        .and_then(Json::as_i64)
        .unwrap_or(0)
        .clamp(0, i64::from(i32::MAX))
}

/// Available replicas as the rollout arithmetic uses them: never more than the set is scaled to
/// (a set scaled down whose status still counts the pods it is about to delete would otherwise
/// let the rollout take away more than `maxUnavailable`).
fn avail(rs: &Tree) -> i64 {
    st(rs, "availableReplicas").min(replicas(rs))
}

fn revision(rs: &Tree) -> i64 {
    annotation(rs, REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn is_rolling(d: &Tree) -> bool {
    str_at(d, "/spec/strategy/type") != "Recreate"
}

/// `ResolveFenceposts`: (maxSurge rounded up, maxUnavailable rounded down), never both zero.
fn fenceposts(d: &Tree) -> (i64, i64) {
    let desired = replicas(d);
    let ru = d.ptr("/spec/strategy/rollingUpdate");
    let dflt = Tree::from(json!("25%"));
    let surge_v = ru.and_then(|r| r.field("maxSurge")).unwrap_or(&dflt);
    let unavail_v = ru.and_then(|r| r.field("maxUnavailable")).unwrap_or(&dflt);
    let surge = scaled_value(Some(surge_v), desired, true, 0).max(0);
    let mut unavail = scaled_value(Some(unavail_v), desired, false, 0).max(0);
    if surge == 0 && unavail == 0 {
        unavail = 1;
    }
    (surge, unavail)
}

fn max_surge(d: &Tree) -> i64 {
    if is_rolling(d) { fenceposts(d).0 } else { 0 }
}

fn max_unavailable(d: &Tree) -> i64 {
    if !is_rolling(d) || replicas(d) == 0 {
        return 0;
    }
    fenceposts(d).1.min(replicas(d))
}

fn has_progress_deadline(d: &Tree) -> bool {
    i64_at(d, "/spec/progressDeadlineSeconds").is_some_and(|s| s != i64::from(i32::MAX))
}

fn conditions<V: Json>(status: &V) -> Vec<Value> {
    status
        .field("conditions")
        .and_then(Json::as_array)
        .map(|a| a.iter().map(Json::to_value).collect())
        .unwrap_or_default()
}

fn get_cond<'a, V: Json>(status: &'a V, type_: &str) -> Option<&'a V> {
    status
        .field("conditions")
        .and_then(Json::as_array)?
        .iter()
        .find(|c| c.field("type").and_then(Json::as_str) == Some(type_))
}

fn new_cond(type_: &str, status: &str, reason: &str, message: &str, now: &str) -> Value {
    json!({"type": type_, "status": status, "lastUpdateTime": now, "lastTransitionTime": now,
        "reason": reason, "message": message})
}

/// `SetDeploymentCondition`: no change for the same status and reason; keeps the transition time
/// when only the reason changes.
fn set_cond(status: &mut Value, mut c: Value) {
    let type_ = str_at(&c, "/type").to_string();
    let mut conds = conditions(status);
    if let Some(cur) = conds
        .iter()
        .find(|x| x.field("type").and_then(Value::as_str) == Some(type_.as_str()))
    {
        if cur.field("status") == c.field("status") && cur.field("reason") == c.field("reason") {
            return;
        }
        if cur.field("status") == c.field("status")
            && let Some(t) = cur.field("lastTransitionTime")
        {
            c["lastTransitionTime"] = t.clone();
        }
    }
    conds.retain(|x| x.field("type").and_then(Value::as_str) != Some(type_.as_str()));
    conds.push(c);
    put_conditions(status, conds);
}

fn remove_cond(status: &mut Value, type_: &str) {
    let mut conds = conditions(status);
    let n = conds.len();
    conds.retain(|x| x.field("type").and_then(Value::as_str) != Some(type_));
    if conds.len() != n {
        put_conditions(status, conds);
    }
}

fn put_conditions(status: &mut Value, conds: Vec<Value>) {
    if let Value::Object(m) = status {
        if conds.is_empty() {
            m.remove("conditions");
        } else {
            m.insert("conditions".into(), Value::Array(conds));
        }
    }
}

/// `DeploymentComplete`.
fn deployment_complete<V: Json>(d: &Tree, status: &V) -> bool {
    let r = replicas(d);
    st_of(status, "updatedReplicas") == r
        && st_of(status, "replicas") == r
        && st_of(status, "availableReplicas") == r
        && st_of(status, "observedGeneration") >= i64_at(d, "/metadata/generation").unwrap_or(0)
}

fn st_of<V: Json>(status: &V, field: &str) -> i64 {
    status.field(field).and_then(Json::as_i64).unwrap_or(0)
}

/// `DeploymentProgressing`: more updated, fewer old, more ready or more available replicas.
fn deployment_progressing(d: &Tree, new: &Value) -> bool {
    let old = d.field("status").cloned().unwrap_or_default();
    let old_old = st_of(&old, "replicas") - st_of(&old, "updatedReplicas");
    let new_old = st_of(new, "replicas") - st_of(new, "updatedReplicas");
    st_of(new, "updatedReplicas") > st_of(&old, "updatedReplicas")
        || new_old < old_old
        || st_of(new, "readyReplicas") > st_of(&old, "readyReplicas")
        || st_of(new, "availableReplicas") > st_of(&old, "availableReplicas")
}

/// An object as the cache holds it (shared, not copied), or as this sync wrote it.
#[derive(Clone)]
struct Obj {
    shared: Arc<StoredObject>,
}

impl Obj {
    fn of(o: Arc<StoredObject>) -> Obj {
        Obj { shared: o }
    }

    /// An object that is not stored (yet).
    fn owned(v: Value) -> Obj {
        Obj {
            shared: Arc::new(StoredObject::unstored(v)),
        }
    }

    /// The object as just written.
    fn set(&mut self, o: Arc<StoredObject>) {
        self.shared = o;
    }
}

impl std::ops::Deref for Obj {
    type Target = Tree;

    fn deref(&self) -> &Tree {
        &self.shared.value
    }
}

fn sort_by_creation(list: &mut [Obj]) {
    list.sort_by(|a, b| {
        created_at(&**a)
            .cmp(&created_at(&**b))
            .then(str_at(&**a, "/metadata/name").cmp(str_at(&**b, "/metadata/name")))
    });
}

/// The replica sets of one sync: all of them sorted by creation, and which one is new.
struct Sets {
    all: Vec<Obj>,
    new: Option<usize>,
}

impl Sets {
    fn olds(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.all.len()).filter(move |i| Some(*i) != self.new)
    }

    fn new_rs(&self) -> Option<&Tree> {
        self.new.and_then(|i| self.all.get(i)).map(|o| &**o)
    }

    fn sum(&self, f: impl Fn(&Tree) -> i64) -> i64 {
        self.all.iter().map(|o| f(o)).sum()
    }
}

// ----------------------------------------------------------------------------------------------
// The controller

impl Reconciler for DController {
    fn handle(&mut self, feed: usize, msg: &FeedMsg, q: &mut Queue) {
        match feed {
            D_FEED => {
                for d in self.deps.apply(msg) {
                    match &d.new {
                        Some(n) => {
                            if let Some(sel) = selector_of(&n.value) {
                                self.selectors.insert(d.key.clone(), sel);
                            }
                            if d.old.as_ref().is_none_or(|o| {
                                o.value.ptr("/spec/selector") != n.value.ptr("/spec/selector")
                            }) {
                                self.adopt.insert(d.key.clone());
                            }
                            q.add(d.key);
                        }
                        None => {
                            self.selectors.remove(&d.key);
                            self.adopt.remove(&d.key);
                            if let Some(o) = &d.old {
                                self.templates.remove(uid_of(&o.value));
                            }
                            q.forget(&d.key);
                        }
                    }
                }
            }
            D_RS => {
                for d in self.sets.apply(msg) {
                    if d.new.is_none()
                        && let Some(o) = &d.old
                    {
                        self.same_template.remove(uid_of(&o.value));
                    }
                    for v in [&d.old, &d.new].into_iter().flatten() {
                        if let Some(("Deployment", name, _)) = controller_parts(&v.value) {
                            q.add((d.key.0.clone(), name.to_string()));
                        }
                    }
                    if let Some(n) = &d.new
                        && super::workloads::controller_of(&n.value).is_none()
                    {
                        let ns = d.key.0.clone();
                        for (k, sel) in self
                            .selectors
                            .range((ns.clone(), String::new())..)
                            .take_while(|((n, _), _)| *n == ns)
                        {
                            if !sel.is_empty() && sel.matches(labels_of(&n.value)) {
                                self.adopt.insert(k.clone());
                                q.add(k.clone());
                            }
                        }
                    }
                }
            }
            _ => {
                // Only the end of a pod matters: a Recreate rollout waits for old pods to be gone.
                for d in self.pods.apply(msg) {
                    let ended = match (&d.old, &d.new) {
                        (Some(_), None) => true,
                        (Some(o), Some(n)) => !is_terminal(&o.value) && is_terminal(&n.value),
                        _ => false,
                    };
                    if !ended {
                        continue;
                    }
                    let Some(p) = d.old.as_ref().or(d.new.as_ref()) else {
                        continue;
                    };
                    if let Some(("ReplicaSet", rs_name, _)) = controller_parts(&p.value) {
                        let rs_key = (d.key.0.clone(), rs_name.to_string());
                        if let Some(rs) = self.sets.get(&rs_key)
                            && let Some(("Deployment", dname, _)) = controller_parts(&rs.value)
                        {
                            q.add((d.key.0.clone(), dname.to_string()));
                        }
                    }
                }
            }
        }
    }

    async fn sync(&mut self, key: Key, q: &mut Queue) {
        let _ = self.sync_deployment(&key, q).await;
    }
}

impl DController {
    async fn sync_deployment(&mut self, key: &Key, q: &mut Queue) -> Res<()> {
        let Some(obj) = self.deps.get(key).cloned() else {
            return Ok(());
        };
        let mut d = Obj::of(obj.clone());
        let Some(selector) = selector_of(&*d) else {
            return Ok(());
        };
        if selector.is_empty() {
            // "This deployment is selecting all pods": nothing is done but observing it.
            let g = i64_at(&*d, "/metadata/generation").unwrap_or(0);
            if st(&d, "observedGeneration") < g {
                let mut s = d.field("status").map_or_else(|| json!({}), Tree::to_value);
                s["observedGeneration"] = json!(g);
                self.write_d_status(key, &mut d, s, q).await?;
            }
            return Ok(());
        }
        let uid = uid_of(&*d).to_string();
        let deleting = is_terminating(&*d);

        // Claim replica sets: release the ones that stopped matching, adopt matching orphans.
        let owned = self.sets.owned(&uid);
        let mut list: Vec<Obj> = Vec::new();
        let mut claimed = false;
        for rs in &owned {
            if deleting || selector.matches(labels_of(&rs.value)) {
                list.push(Obj::of(rs.clone()));
                continue;
            }
            match release(
                &self.cluster,
                &self.cluster.res.replicasets,
                &rs.value,
                &uid,
            )
            .await
            {
                Ok(rev) => {
                    q.expect(key, D_RS, rev);
                    claimed = true;
                }
                Err(e) => retry_later(q, key, &e),
            }
        }
        if !deleting {
            let owner = owner_ref(&*d, "apps/v1", "Deployment");
            let orphans = if self.adopt.remove(key) {
                self.sets.orphans_in(&key.0)
            } else {
                Vec::new()
            };
            for rs in orphans {
                if is_terminating(&rs.value) || !selector.matches(labels_of(&rs.value)) {
                    continue;
                }
                match adopt(
                    &self.cluster,
                    &self.cluster.res.replicasets,
                    &rs.value,
                    owner.clone(),
                )
                .await
                {
                    Ok(rev) => {
                        q.expect(key, D_RS, rev);
                        claimed = true;
                    }
                    Err(e) => {
                        self.adopt.insert(key.clone());
                        retry_later(q, key, &e);
                    }
                }
            }
        }
        if claimed {
            return Ok(());
        }
        sort_by_creation(&mut list);

        if deleting {
            let sets = self.find_sets(&d, list);
            return self.sync_deployment_status(key, &mut d, &sets, q).await;
        }
        self.check_paused_conditions(key, &mut d, q).await?;
        if d.ptr("/spec/paused").and_then(Json::as_bool) == Some(true) {
            return self.sync_scale(key, &mut d, list, q).await;
        }
        if self.is_scaling_event(&d, &list) {
            return self.sync_scale(key, &mut d, list, q).await;
        }
        if is_rolling(&d) {
            self.rollout_rolling(key, &mut d, list, q).await
        } else {
            self.rollout_recreate(key, &mut d, list, q).await
        }
    }

    // ------------------------------------------------------------------------------------------
    // Templates and the new replica set

    /// A pod template with the API server's defaults applied (so that templates written with
    /// and without defaults compare equal).
    fn normalized(&self, template: &impl Json) -> Value {
        let mut fake = object! {
            "apiVersion" => "apps/v1",
            "kind" => "ReplicaSet",
            "metadata" => object! {"name" => "x"},
            "spec" => object! {"template" => template.to_value()},
        };
        crate::defaults::prepare_for_create(
            &self.cluster.server,
            &self.cluster.res.replicasets,
            &mut fake,
        );
        fake.pointer_mut("/spec/template")
            .map(Value::take)
            .unwrap_or_default()
    }

    /// `EqualIgnoreHash` of a deployment template (already normalized) and a set's template.
    fn equal_ignore_hash(&self, d_template: &impl Json, rs_template: &Tree) -> bool {
        let mut t = rs_template.to_value();
        if let Some(Value::Object(labels)) = t.pointer_mut("/metadata/labels") {
            labels.remove(HASH_LABEL);
        }
        let mut dt = d_template.to_value();
        if let Some(Value::Object(labels)) = dt.pointer_mut("/metadata/labels") {
            labels.remove(HASH_LABEL);
        }
        self.normalized(&t) == dt
    }

    /// `FindNewReplicaSet`: the oldest set whose template is the deployment's. Comparisons are
    /// remembered per (set, deployment) generation: templates change only with a spec.
    fn find_sets(&mut self, d: &Tree, all: Vec<Obj>) -> Sets {
        let d_uid = uid_of(d).to_string();
        let d_gen = i64_at(d, "/metadata/generation").unwrap_or(0);
        let cacheable = !d_uid.is_empty() && d_gen > 0;
        if !cacheable || self.templates.get(&d_uid).is_none_or(|(g, _)| *g != d_gen) {
            let dt = self.normalized(d.ptr("/spec/template").unwrap_or(Tree::null()));
            if !cacheable {
                let new = all.iter().position(|rs| {
                    self.equal_ignore_hash(&dt, rs.ptr("/spec/template").unwrap_or(Tree::null()))
                });
                return Sets { all, new };
            }
            self.templates
                .insert(d_uid.clone(), (d_gen, Tree::from(&dt)));
        }
        let mut new = None;
        for (i, rs) in all.iter().enumerate() {
            let rs_uid = uid_of(&**rs);
            let rs_gen = i64_at(&**rs, "/metadata/generation").unwrap_or(0);
            let known = self.same_template.get(rs_uid).and_then(|(g, du, dg, eq)| {
                (*g == rs_gen && rs_gen > 0 && *du == d_uid && *dg == d_gen).then_some(*eq)
            });
            let equal = match known {
                Some(eq) => eq,
                None => {
                    let dt = self.templates.get(&d_uid).map(|(_, t)| t);
                    let eq = dt.is_some_and(|dt| {
                        self.equal_ignore_hash(dt, rs.ptr("/spec/template").unwrap_or(Tree::null()))
                    });
                    if !rs_uid.is_empty() {
                        self.same_template
                            .insert(rs_uid.to_string(), (rs_gen, d_uid.clone(), d_gen, eq));
                    }
                    eq
                }
            };
            if equal {
                new = Some(i);
                break;
            }
        }
        Sets { all, new }
    }

    /// `getAllReplicaSetsAndSyncRevision`: finds (or creates) the new set, brings its revision
    /// and annotations up to date and records the revision on the deployment.
    async fn sync_revision(
        &mut self,
        key: &Key,
        d: &mut Obj,
        list: Vec<Obj>,
        create: bool,
        q: &mut Queue,
    ) -> Res<Sets> {
        let mut sets = self.find_sets(d, list);
        let max_old = sets
            .olds()
            .map(|i| revision(&sets.all[i]))
            .max()
            .unwrap_or(0);
        let new_revision = max_old + 1;
        if let Some(i) = sets.new {
            // What the revision bookkeeping reads and changes of the set (not its template).
            let rs = &sets.all[i];
            let mut copy = json!({
                "metadata": {
                    "name": str_at(&**rs, "/metadata/name"),
                    "namespace": str_at(&**rs, "/metadata/namespace"),
                    "resourceVersion": str_at(&**rs, "/metadata/resourceVersion"),
                },
            });
            if let Some(a) = rs.ptr("/metadata/annotations") {
                copy["metadata"]["annotations"] = a.to_value();
            }
            if let Some(m) = rs.ptr("/spec/minReadySeconds") {
                copy["spec"] = json!({"minReadySeconds": m});
            }
            let annotations_updated = set_new_rs_annotations(d, &mut copy, new_revision, true);
            let d_min = i64_at(&**d, "/spec/minReadySeconds").unwrap_or(0);
            let min_ready_update = i64_at(&copy, "/spec/minReadySeconds").unwrap_or(0) != d_min;
            if annotations_updated || min_ready_update {
                let (ns, name) = ns_name(&copy);
                let patch = object! {
                    "metadata" => object! {
                        "annotations" => copy.ptr("/metadata/annotations").cloned().unwrap_or_default(),
                        "resourceVersion" => str_at(&copy, "/metadata/resourceVersion"),
                    },
                    "spec" => object! {"minReadySeconds" => d_min},
                };
                match self
                    .cluster
                    .merge_patch(&self.cluster.res.replicasets, ns, name, None, patch)
                    .await
                {
                    Ok(updated) => {
                        q.expect(key, D_RS, updated.revision);
                        sets.all[i].set(updated);
                        return Ok(sets);
                    }
                    Err(e) => {
                        retry_later(q, key, &e);
                        return Err(Stop);
                    }
                }
            }
            let rev = annotation(&copy, REVISION).unwrap_or("").to_string();
            // The status changes only when a Progressing condition is due (copied then).
            let needs_cond = has_progress_deadline(d)
                && d.field("status")
                    .and_then(|s| get_cond(s, "Progressing"))
                    .is_none();
            let mut status = Value::Null;
            if needs_cond {
                status = d.field("status").map_or_else(|| json!({}), Tree::to_value);
                let msg = format!(
                    "Found new replica set \"{}\"",
                    str_at(&copy, "/metadata/name")
                );
                let now = self.cluster.server.clock.timestamp();
                set_cond(
                    &mut status,
                    new_cond("Progressing", "True", "FoundNewReplicaSet", &msg, &now),
                );
            }
            self.set_d_revision(key, d, &rev, q).await?;
            if needs_cond {
                self.write_d_status(key, d, status, q).await?;
            }
            return Ok(sets);
        }
        if !create {
            return Ok(sets);
        }

        // Create the new replica set.
        let (ns, dname) = ns_name(&**d);
        let (ns, dname) = (ns.to_string(), dname.to_string());
        let template = d
            .ptr("/spec/template")
            .map(Tree::to_value)
            .unwrap_or_default();
        let collision = d.ptr("/status/collisionCount").and_then(Json::as_i64);
        let hash = template_hash(&template, collision);
        let mut new_template = template.clone();
        {
            let meta = super::workloads::entry(&mut new_template, "metadata");
            let labels = super::workloads::entry(meta, "labels");
            *super::workloads::entry(labels, HASH_LABEL) = json!(hash);
        }
        let mut selector = d
            .ptr("/spec/selector")
            .map(Tree::to_value)
            .unwrap_or_default();
        {
            let ml = super::workloads::entry(&mut selector, "matchLabels");
            *super::workloads::entry(ml, HASH_LABEL) = json!(hash);
        }
        let rs_name = format!("{dname}-{hash}");
        let labels = new_template
            .ptr("/metadata/labels")
            .cloned()
            .unwrap_or_default();
        let mut rs = object! {
            "apiVersion" => "apps/v1",
            "kind" => "ReplicaSet",
            "metadata" => object! {
                "name" => rs_name.as_str(),
                "namespace" => ns.as_str(),
                "ownerReferences" => vec![owner_ref(&**d, "apps/v1", "Deployment")],
                "labels" => labels,
            },
            "spec" => object! {
                "replicas" => 0,
                "minReadySeconds" => i64_at(&**d, "/spec/minReadySeconds").unwrap_or(0),
                "selector" => selector,
                "template" => new_template,
            },
        };
        let mut with_new = Sets {
            all: sets.all.clone(),
            new: None,
        };
        with_new.all.push(Obj::owned(rs.clone()));
        with_new.new = Some(with_new.all.len() - 1);
        let count = new_rs_new_replicas(d, &with_new);
        rs["spec"]["replicas"] = json!(count);
        set_new_rs_annotations(d, &mut rs, new_revision, false);
        let mut already_exists = false;
        let created = match self.cluster.create(&self.cluster.res.replicasets, rs).await {
            Ok(c) => {
                q.expect(key, D_RS, c.revision);
                Obj::of(c)
            }
            Err(e) if e.reason == "AlreadyExists" => {
                let existing = match self
                    .cluster
                    .get(&self.cluster.res.replicasets, &ns, &rs_name)
                    .await
                {
                    Ok(x) => Obj::of(x),
                    Err(e) => {
                        retry_later(q, key, &e);
                        return Err(Stop);
                    }
                };
                let ours = controller_parts(&*existing).is_some_and(|(_, _, u)| u == uid_of(&**d));
                let dt = self.normalized(&template);
                if ours
                    && self.equal_ignore_hash(
                        &dt,
                        existing.ptr("/spec/template").unwrap_or(Tree::null()),
                    )
                {
                    already_exists = true;
                    existing
                } else {
                    // A hash collision: count it, and the next sync computes another name.
                    let mut status = d.field("status").map_or_else(|| json!({}), Tree::to_value);
                    status["collisionCount"] = json!(collision.unwrap_or(0) + 1);
                    self.write_d_status(key, d, status, q).await?;
                    q.add_after(key.clone(), Duration::from_millis(100));
                    return Err(Stop);
                }
            }
            Err(e) => {
                let msg = format!(
                    "Failed to create new replica set \"{rs_name}\": {}",
                    e.message
                );
                if has_progress_deadline(d) && e.code != 403 {
                    let mut status = d.field("status").map_or_else(|| json!({}), Tree::to_value);
                    let now = self.cluster.server.clock.timestamp();
                    set_cond(
                        &mut status,
                        new_cond("Progressing", "False", "ReplicaSetCreateError", &msg, &now),
                    );
                    let _ = self.write_d_status(key, d, status, q).await;
                }
                record(
                    &self.cluster,
                    self.cfg.events,
                    &**d,
                    "Warning",
                    "ReplicaSetCreateError",
                    &msg,
                    COMPONENT,
                )
                .await;
                retry_later(q, key, &e);
                return Err(Stop);
            }
        };
        if !already_exists && count > 0 {
            let msg = format!("Scaled up replica set {rs_name} from 0 to {count}");
            record(
                &self.cluster,
                self.cfg.events,
                &**d,
                "Normal",
                "ScalingReplicaSet",
                &msg,
                COMPONENT,
            )
            .await;
        }
        self.set_d_revision(key, d, &new_revision.to_string(), q)
            .await?;
        if !already_exists && has_progress_deadline(d) {
            let mut status = d.field("status").map_or_else(|| json!({}), Tree::to_value);
            let msg = format!("Created new replica set \"{rs_name}\"");
            let now = self.cluster.server.clock.timestamp();
            set_cond(
                &mut status,
                new_cond("Progressing", "True", "NewReplicaSetCreated", &msg, &now),
            );
            self.write_d_status(key, d, status, q).await?;
        }
        sets.all.push(created);
        sets.new = Some(sets.all.len() - 1);
        Ok(sets)
    }

    // ------------------------------------------------------------------------------------------
    // Writes

    async fn set_d_revision(
        &mut self,
        key: &Key,
        d: &mut Obj,
        rev: &str,
        q: &mut Queue,
    ) -> Res<()> {
        if annotation(&**d, REVISION) == Some(rev) {
            return Ok(());
        }
        let patch = json!({"metadata": {"annotations": {REVISION: rev}}});
        match self
            .cluster
            .merge_patch(&self.cluster.res.deployments, &key.0, &key.1, None, patch)
            .await
        {
            Ok(updated) => {
                q.expect(key, D_FEED, updated.revision);
                d.set(updated);
                Ok(())
            }
            Err(e) => {
                retry_later(q, key, &e);
                Err(Stop)
            }
        }
    }

    async fn write_d_status(
        &mut self,
        key: &Key,
        d: &mut Obj,
        status: Value,
        q: &mut Queue,
    ) -> Res<()> {
        match write_status(&self.cluster, &self.cluster.res.deployments, &**d, status).await {
            Ok(Some(written)) => {
                q.expect(key, D_FEED, written.revision);
                d.set(written);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => {
                retry_later(q, key, &e);
                Err(Stop)
            }
        }
    }

    /// `scaleReplicaSet`: sets the size and the replica annotations.
    async fn scale_rs(
        &mut self,
        key: &Key,
        d: &Tree,
        rs: &mut Obj,
        new_scale: i64,
        q: &mut Queue,
    ) -> Res<bool> {
        let old_scale = replicas(rs);
        let size_needs = old_scale != new_scale;
        let desired = replicas(d);
        let max = desired + max_surge(d);
        let ann_needs = annotation(&**rs, DESIRED_REPLICAS) != Some(desired.to_string().as_str())
            || annotation(&**rs, MAX_REPLICAS) != Some(max.to_string().as_str());
        if !size_needs && !ann_needs {
            return Ok(false);
        }
        let (ns, name) = ns_name(&**rs);
        let (ns, name) = (ns.to_string(), name.to_string());
        let patch = json!({
            "metadata": {"resourceVersion": str_at(&**rs, "/metadata/resourceVersion"),
                "annotations": {DESIRED_REPLICAS: desired.to_string(), MAX_REPLICAS: max.to_string()}},
            "spec": {"replicas": new_scale},
        });
        match self
            .cluster
            .merge_patch(&self.cluster.res.replicasets, &ns, &name, None, patch)
            .await
        {
            Ok(updated) => {
                q.expect(key, D_RS, updated.revision);
                rs.set(updated);
                if size_needs {
                    let dir = if old_scale < new_scale { "up" } else { "down" };
                    let msg =
                        format!("Scaled {dir} replica set {name} from {old_scale} to {new_scale}");
                    record(
                        &self.cluster,
                        self.cfg.events,
                        d,
                        "Normal",
                        "ScalingReplicaSet",
                        &msg,
                        COMPONENT,
                    )
                    .await;
                }
                Ok(size_needs)
            }
            Err(e) => {
                retry_later(q, key, &e);
                Err(Stop)
            }
        }
    }

    /// `scaleReplicaSetAndRecordEvent`: nothing when the size is already right.
    async fn scale_and_record(
        &mut self,
        key: &Key,
        d: &Tree,
        rs: &mut Obj,
        new_scale: i64,
        q: &mut Queue,
    ) -> Res<bool> {
        if replicas(rs) == new_scale {
            return Ok(false);
        }
        self.scale_rs(key, d, rs, new_scale, q).await
    }

    // ------------------------------------------------------------------------------------------
    // Rolling update

    async fn rollout_rolling(
        &mut self,
        key: &Key,
        d: &mut Obj,
        list: Vec<Obj>,
        q: &mut Queue,
    ) -> Res<()> {
        let mut sets = self.sync_revision(key, d, list, true, q).await?;
        let Some(ni) = sets.new else {
            return Ok(());
        };
        if self.reconcile_new(key, d, &mut sets, ni, q).await? {
            return self.sync_rollout_status(key, d, &sets, q).await;
        }
        if self.reconcile_old(key, d, &mut sets, ni, q).await? {
            return self.sync_rollout_status(key, d, &sets, q).await;
        }
        if deployment_complete(d, d.field("status").unwrap_or(Tree::null())) {
            self.cleanup(key, d, &sets, q).await;
        }
        self.sync_rollout_status(key, d, &sets, q).await
    }

    async fn reconcile_new(
        &mut self,
        key: &Key,
        d: &Tree,
        sets: &mut Sets,
        ni: usize,
        q: &mut Queue,
    ) -> Res<bool> {
        let want = replicas(d);
        let cur = replicas(&sets.all[ni]);
        if cur == want {
            return Ok(false);
        }
        let target = if cur > want {
            want
        } else {
            new_rs_new_replicas(d, sets)
        };
        let mut rs = sets.all[ni].clone();
        let scaled = self.scale_and_record(key, d, &mut rs, target, q).await?;
        sets.all[ni] = rs;
        Ok(scaled)
    }

    async fn reconcile_old(
        &mut self,
        key: &Key,
        d: &Tree,
        sets: &mut Sets,
        ni: usize,
        q: &mut Queue,
    ) -> Res<bool> {
        let old_pods: i64 = sets.olds().map(|i| replicas(&sets.all[i])).sum();
        if old_pods == 0 {
            return Ok(false);
        }
        let all_pods = sets.sum(replicas);
        let min_available = replicas(d) - max_unavailable(d);
        let new = &sets.all[ni];
        let new_unavailable = replicas(new) - avail(new);
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        // Unhealthy old replicas first: they do not count towards availability anyway.
        let mut cleaned = 0i64;
        let olds: Vec<usize> = sets.olds().collect();
        for i in &olds {
            if cleaned >= max_scaled_down {
                break;
            }
            let rs = &sets.all[*i];
            let (r, a) = (replicas(rs), avail(rs));
            if r == 0 || a == r {
                continue;
            }
            let down = (max_scaled_down - cleaned).min(r - a);
            let mut rs = rs.clone();
            self.scale_and_record(key, d, &mut rs, r - down, q).await?;
            sets.all[*i] = rs;
            cleaned += down;
        }
        // Then available ones, as far as maxUnavailable allows.
        let available = sets.sum(avail);
        let mut scaled_down = 0i64;
        if available > min_available {
            let total = available - min_available;
            for i in &olds {
                if scaled_down >= total {
                    break;
                }
                let r = replicas(&sets.all[*i]);
                if r == 0 {
                    continue;
                }
                let down = r.min(total - scaled_down);
                let mut rs = sets.all[*i].clone();
                self.scale_and_record(key, d, &mut rs, r - down, q).await?;
                sets.all[*i] = rs;
                scaled_down += down;
            }
        }
        Ok(cleaned + scaled_down > 0)
    }

    // ------------------------------------------------------------------------------------------
    // Recreate

    async fn rollout_recreate(
        &mut self,
        key: &Key,
        d: &mut Obj,
        list: Vec<Obj>,
        q: &mut Queue,
    ) -> Res<()> {
        let mut sets = self.sync_revision(key, d, list.clone(), false, q).await?;
        let mut scaled = false;
        let olds: Vec<usize> = sets.olds().collect();
        for i in &olds {
            if replicas(&sets.all[*i]) == 0 {
                continue;
            }
            let mut rs = sets.all[*i].clone();
            scaled |= self.scale_and_record(key, d, &mut rs, 0, q).await?;
            sets.all[*i] = rs;
        }
        if scaled {
            return self.sync_rollout_status(key, d, &sets, q).await;
        }
        if self.old_pods_running(&sets) {
            return self.sync_rollout_status(key, d, &sets, q).await;
        }
        if sets.new.is_none() {
            sets = self.sync_revision(key, d, sets.all, true, q).await?;
        }
        if let Some(ni) = sets.new {
            let mut rs = sets.all[ni].clone();
            self.scale_and_record(key, d, &mut rs, replicas(d), q)
                .await?;
            sets.all[ni] = rs;
        }
        if deployment_complete(d, d.field("status").unwrap_or(Tree::null())) {
            self.cleanup(key, d, &sets, q).await;
        }
        self.sync_rollout_status(key, d, &sets, q).await
    }

    /// `oldPodsRunning`: old sets still report replicas, or a pod of theirs is not finished
    /// (pods being deleted count: they still run).
    fn old_pods_running(&self, sets: &Sets) -> bool {
        if sets
            .olds()
            .map(|i| st(&sets.all[i], "replicas"))
            .sum::<i64>()
            > 0
        {
            return true;
        }
        sets.olds().any(|i| {
            self.pods
                .owned(uid_of(&*sets.all[i]))
                .iter()
                .any(|p| !is_terminal(&p.value))
        })
    }

    // ------------------------------------------------------------------------------------------
    // Scaling (and paused deployments)

    /// `isScalingEvent`: an active set was sized for another number of replicas.
    fn is_scaling_event(&self, d: &Tree, list: &[Obj]) -> bool {
        let want = replicas(d);
        list.iter().filter(|rs| replicas(rs) > 0).any(|rs| {
            annotation(&**rs, DESIRED_REPLICAS)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x != want)
        })
    }

    async fn sync_scale(
        &mut self,
        key: &Key,
        d: &mut Obj,
        list: Vec<Obj>,
        q: &mut Queue,
    ) -> Res<()> {
        let mut sets = self.sync_revision(key, d, list, false, q).await?;
        self.scale(key, d, &mut sets, q).await?;
        let paused = d.ptr("/spec/paused").and_then(Json::as_bool) == Some(true);
        if paused {
            self.cleanup(key, d, &sets, q).await;
        }
        self.sync_deployment_status(key, d, &sets, q).await
    }

    /// `scale`: resizes the one active set, or spreads a change of size over all of them in
    /// proportion to their sizes (proportional scaling of a rollout in progress).
    async fn scale(&mut self, key: &Key, d: &Tree, sets: &mut Sets, q: &mut Queue) -> Res<()> {
        let want = replicas(d);
        let active: Vec<usize> = (0..sets.all.len())
            .filter(|i| replicas(&sets.all[*i]) > 0)
            .collect();
        // FindActiveOrLatest
        let target = match active.len() {
            0 if sets.all.is_empty() => None,
            0 => Some(sets.new.unwrap_or_else(|| {
                // The newest old set.
                sets.olds().last().unwrap_or(0)
            })),
            1 => Some(active[0]),
            _ => None,
        };
        if let Some(i) = target {
            if replicas(&sets.all[i]) == want {
                return Ok(());
            }
            let mut rs = sets.all[i].clone();
            self.scale_rs(key, d, &mut rs, want, q).await?;
            sets.all[i] = rs;
            return Ok(());
        }
        let saturated = sets.new_rs().is_some_and(|rs| {
            replicas(rs) == want
                && annotation(rs, DESIRED_REPLICAS) == Some(want.to_string().as_str())
                && st(rs, "availableReplicas") == want
        });
        if saturated {
            let olds: Vec<usize> = sets
                .olds()
                .filter(|i| replicas(&sets.all[*i]) > 0)
                .collect();
            for i in olds {
                let mut rs = sets.all[i].clone();
                self.scale_rs(key, d, &mut rs, 0, q).await?;
                sets.all[i] = rs;
            }
            return Ok(());
        }
        if !is_rolling(d) {
            return Ok(());
        }
        let current: i64 = active.iter().map(|i| replicas(&sets.all[*i])).sum();
        let allowed = if want > 0 { want + max_surge(d) } else { 0 };
        let to_add = allowed - current;
        let mut order = active.clone();
        order.sort_by(|a, b| {
            let (ra, rb) = (&sets.all[*a], &sets.all[*b]);
            let by_size = replicas(rb).cmp(&replicas(ra));
            let by_age = created_at(&**ra).cmp(&created_at(&**rb));
            by_size.then(if to_add > 0 { by_age.reverse() } else { by_age })
        });
        let mut sizes: BTreeMap<usize, i64> = BTreeMap::new();
        let mut added = 0i64;
        for i in &order {
            let rs = &sets.all[*i];
            let mut size = replicas(rs);
            if to_add != 0 {
                let p = proportion(rs, d, to_add, added);
                size += p;
                added += p;
            }
            sizes.insert(*i, size);
        }
        if to_add != 0
            && let Some(first) = order.first()
            && let Some(s) = sizes.get_mut(first)
        {
            *s = (*s + to_add - added).max(0);
        }
        for i in order {
            let size = sizes.get(&i).copied().unwrap_or(0).max(0);
            let mut rs = sets.all[i].clone();
            self.scale_rs(key, d, &mut rs, size, q).await?;
            sets.all[i] = rs;
        }
        Ok(())
    }

    // ------------------------------------------------------------------------------------------
    // Cleanup and status

    /// `cleanupDeployment`: deletes the oldest idle sets beyond `revisionHistoryLimit`.
    async fn cleanup(&mut self, key: &Key, d: &Tree, sets: &Sets, q: &mut Queue) {
        let Some(limit) = i64_at(d, "/spec/revisionHistoryLimit") else {
            return;
        };
        if limit == i64::from(i32::MAX) {
            return;
        }
        let mut alive: Vec<&Tree> = sets
            .olds()
            .map(|i| &*sets.all[i])
            .filter(|rs| !is_terminating(*rs))
            .collect();
        let diff = alive.len() as i64 - limit.max(0);
        if diff <= 0 {
            return;
        }
        alive.sort_by(|a, b| {
            revision(a)
                .cmp(&revision(b))
                .then(created_at(*a).cmp(&created_at(*b)))
                .then(str_at(*a, "/metadata/name").cmp(str_at(*b, "/metadata/name")))
        });
        for rs in alive.into_iter().take(diff as usize) {
            let busy = st(rs, "replicas") != 0
                || replicas(rs) != 0
                || i64_at(rs, "/metadata/generation").unwrap_or(0) > st(rs, "observedGeneration");
            if busy {
                continue;
            }
            match delete_obj(&self.cluster, &self.cluster.res.replicasets, rs).await {
                Ok(rev) => q.expect(key, D_RS, rev),
                Err(e) if e.code == 404 || e.code == 409 => {}
                Err(e) => retry_later(q, key, &e),
            }
        }
    }

    /// `calculateStatus`.
    fn calculate_status(&self, d: &Tree, sets: &Sets) -> Value {
        let available = sets.sum(|r| st(r, "availableReplicas"));
        let total = sets.sum(replicas);
        let unavailable = (total - available).max(0);
        let mut s = Map::new();
        let g = i64_at(d, "/metadata/generation").unwrap_or(0);
        let fields = [
            ("observedGeneration", g),
            ("replicas", sets.sum(|r| st(r, "replicas"))),
            (
                "updatedReplicas",
                sets.new_rs().map_or(0, |r| st(r, "replicas")),
            ),
            ("readyReplicas", sets.sum(|r| st(r, "readyReplicas"))),
            ("availableReplicas", available),
            ("unavailableReplicas", unavailable),
        ];
        for (k, n) in fields {
            if n != 0 {
                s.insert(k.into(), json!(n));
            }
        }
        if let Some(c) = d.ptr("/status/collisionCount") {
            s.insert("collisionCount".into(), c.to_value());
        }
        if let Some(c) = d.ptr("/status/conditions") {
            s.insert("conditions".into(), c.to_value());
        }
        let mut status = Value::Object(s);
        let now = self.cluster.server.clock.timestamp();
        if available >= replicas(d) - max_unavailable(d) {
            set_cond(
                &mut status,
                new_cond(
                    "Available",
                    "True",
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.",
                    &now,
                ),
            );
        } else {
            set_cond(
                &mut status,
                new_cond(
                    "Available",
                    "False",
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.",
                    &now,
                ),
            );
        }
        status
    }

    async fn sync_deployment_status(
        &mut self,
        key: &Key,
        d: &mut Obj,
        sets: &Sets,
        q: &mut Queue,
    ) -> Res<()> {
        let status = self.calculate_status(d, sets);
        self.write_d_status(key, d, status, q).await
    }

    /// `syncRolloutStatus`: status plus the Progressing condition and the progress deadline.
    async fn sync_rollout_status(
        &mut self,
        key: &Key,
        d: &mut Obj,
        sets: &Sets,
        q: &mut Queue,
    ) -> Res<()> {
        let mut status = self.calculate_status(d, sets);
        let deadline = has_progress_deadline(d);
        if !deadline {
            remove_cond(&mut status, "Progressing");
        }
        // Read on the stored tree: most syncs find nothing to write.
        let old_status = d.field("status");
        let current = old_status.and_then(|s| get_cond(s, "Progressing"));
        let complete_already = st_of(&status, "replicas") == st_of(&status, "updatedReplicas")
            && current.is_some_and(|c| str_at(c, "/reason") == "NewReplicaSetAvailable");
        let now = self.cluster.server.clock.timestamp();
        let subject = match sets.new_rs() {
            Some(rs) => format!("ReplicaSet \"{}\"", str_at(rs, "/metadata/name")),
            None => format!("Deployment \"{}\"", key.1),
        };
        if deadline && !complete_already {
            if deployment_complete(d, &status) {
                let msg = format!("{subject} has successfully progressed.");
                set_cond(
                    &mut status,
                    new_cond("Progressing", "True", "NewReplicaSetAvailable", &msg, &now),
                );
            } else if deployment_progressing(d, &status) {
                let msg = format!("{subject} is progressing.");
                let mut c = new_cond("Progressing", "True", "ReplicaSetUpdated", &msg, &now);
                if let Some(cur) = current {
                    if str_at(cur, "/status") == "True"
                        && let Some(t) = cur.field("lastTransitionTime")
                    {
                        c["lastTransitionTime"] = t.to_value();
                    }
                    remove_cond(&mut status, "Progressing");
                }
                set_cond(&mut status, c);
            } else if self.timed_out(d, &status) {
                let msg = format!("{subject} has timed out progressing.");
                set_cond(
                    &mut status,
                    new_cond(
                        "Progressing",
                        "False",
                        "ProgressDeadlineExceeded",
                        &msg,
                        &now,
                    ),
                );
            }
        }
        if old_status.is_some_and(|o| *o == status) {
            // No progress to report: check again when the deadline would pass.
            if deadline
                && let Some(cur) = current
                && !deployment_complete(d, &status)
                && str_at(cur, "/reason") != "ProgressDeadlineExceeded"
                && let Some(t) = parse_time(str_at(cur, "/lastUpdateTime"))
            {
                let secs = i64_at(&**d, "/spec/progressDeadlineSeconds").unwrap_or(600);
                let after = until(&self.cluster, t + chrono::Duration::seconds(secs));
                q.add_after(key.clone(), after.max(Duration::from_secs(1)));
            }
            return Ok(());
        }
        self.write_d_status(key, d, status, q).await
    }

    /// `DeploymentTimedOut`.
    fn timed_out(&self, d: &Tree, status: &Value) -> bool {
        let Some(c) = get_cond(status, "Progressing") else {
            return false;
        };
        match str_at(c, "/reason") {
            "NewReplicaSetAvailable" => false,
            "ProgressDeadlineExceeded" => true,
            _ => {
                let Some(from) = parse_time(str_at(c, "/lastUpdateTime")) else {
                    return false;
                };
                let secs = i64_at(d, "/spec/progressDeadlineSeconds").unwrap_or(600);
                from + chrono::Duration::seconds(secs) < self.cluster.server.clock.now()
            }
        }
    }

    /// `checkPausedConditions`: Progressing Unknown while paused, and on resume.
    async fn check_paused_conditions(&mut self, key: &Key, d: &mut Obj, q: &mut Queue) -> Res<()> {
        if !has_progress_deadline(d) {
            return Ok(());
        }
        let reason = d
            .field("status")
            .and_then(|s| get_cond(s, "Progressing"))
            .map(|c| str_at(c, "/reason"));
        if reason == Some("ProgressDeadlineExceeded") {
            return Ok(());
        }
        let paused_cond = reason == Some("DeploymentPaused");
        let paused = d.ptr("/spec/paused").and_then(Json::as_bool) == Some(true);
        if paused == paused_cond {
            return Ok(());
        }
        let mut status = d.field("status").map_or_else(|| json!({}), Tree::to_value);
        let now = self.cluster.server.clock.timestamp();
        if paused && !paused_cond {
            set_cond(
                &mut status,
                new_cond(
                    "Progressing",
                    "Unknown",
                    "DeploymentPaused",
                    "Deployment is paused",
                    &now,
                ),
            );
        } else if !paused && paused_cond {
            set_cond(
                &mut status,
                new_cond(
                    "Progressing",
                    "Unknown",
                    "DeploymentResumed",
                    "Deployment is resumed",
                    &now,
                ),
            );
        } else {
            return Ok(());
        }
        self.write_d_status(key, d, status, q).await
    }
}

/// `NewRSNewReplicas`: how large the new set may be now.
fn new_rs_new_replicas(d: &Tree, sets: &Sets) -> i64 {
    let want = replicas(d);
    let Some(new) = sets.new_rs() else {
        return 0;
    };
    if !is_rolling(d) {
        return want;
    }
    let current = sets.sum(replicas);
    let max_total = want + max_surge(d);
    if current >= max_total {
        return replicas(new);
    }
    let up = (max_total - current).min(want - replicas(new)).max(0);
    replicas(new) + up
}

/// `GetProportion`: a set's share of a change of size.
fn proportion(rs: &Tree, d: &Tree, to_add: i64, added: i64) -> i64 {
    if replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = rs_fraction(rs, d);
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

/// `getReplicaSetFraction`.
fn rs_fraction(rs: &Tree, d: &Tree) -> i64 {
    if replicas(d) == 0 {
        return -replicas(rs);
    }
    let deployment_replicas = replicas(d) + max_surge(d);
    let annotated = annotation(rs, MAX_REPLICAS)
        .and_then(|x| x.parse::<i64>().ok())
        .unwrap_or_else(|| st(d, "replicas"));
    if annotated <= 0 {
        return 0;
    }
    let size = (replicas(rs) * deployment_replicas) as f64 / annotated as f64;
    size.round() as i64 - replicas(rs)
}

/// `SetNewReplicaSetAnnotations`: copies the deployment's annotations, raises the revision
/// (keeping the history of revisions the set had), and for a new set the replica annotations.
fn set_new_rs_annotations(d: &Tree, rs: &mut Value, new_revision: i64, exists: bool) -> bool {
    let mut changed = false;
    let d_ann = d
        .ptr("/metadata/annotations")
        .and_then(Tree::as_object)
        .map(crate::tree::Obj::to_map)
        .unwrap_or_default();
    let meta = super::workloads::entry(rs, "metadata");
    let ann = super::workloads::entry(meta, "annotations");
    if !ann.is_object() {
        *ann = json!({});
    }
    let Value::Object(ann) = ann else {
        return false;
    };
    for (k, v) in &d_ann {
        if NOT_COPIED.contains(&k.as_str()) || ann.get(k) == Some(v) {
            continue;
        }
        ann.insert(k.clone(), v.clone());
        changed = true;
    }
    let old = ann
        .get(REVISION)
        .and_then(Value::as_str)
        .map(str::to_string);
    let old_int = match old.as_deref() {
        None | Some("") => 0,
        Some(s) => match s.parse::<i64>() {
            Ok(x) => x,
            Err(_) => return changed,
        },
    };
    if old_int < new_revision {
        ann.insert(REVISION.into(), json!(new_revision.to_string()));
        changed = true;
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            let history = ann
                .get(REVISION_HISTORY)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let value = if history.is_empty() {
                Some(old)
            } else {
                let mut parts: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old.len() + 1;
                while total > MAX_REV_HISTORY_CHARS && !parts.is_empty() {
                    total -= parts[0].len() + 1;
                    parts.remove(0);
                }
                (total <= MAX_REV_HISTORY_CHARS).then(|| {
                    parts.push(&old);
                    parts.join(",")
                })
            };
            if let Some(v) = value {
                ann.insert(REVISION_HISTORY.into(), json!(v));
            }
        }
    }
    if !exists {
        let desired = replicas(d);
        let max = desired + max_surge(d);
        ann.insert(DESIRED_REPLICAS.into(), json!(desired.to_string()));
        ann.insert(MAX_REPLICAS.into(), json!(max.to_string()));
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(replicas: i64, surge: Value, unavail: Value) -> Tree {
        Tree::from(
            json!({"spec": {"replicas": replicas, "strategy": {"type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavail}}}}),
        )
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        assert_eq!(fenceposts(&dep(10, json!("25%"), json!("25%"))), (3, 2));
        assert_eq!(fenceposts(&dep(3, json!("25%"), json!("25%"))), (1, 0));
        assert_eq!(fenceposts(&dep(4, json!(0), json!(0))), (0, 1));
        assert_eq!(fenceposts(&dep(4, json!(2), json!("50%"))), (2, 2));
        assert_eq!(max_unavailable(&dep(2, json!(0), json!(5))), 2);
        let recreate =
            Tree::from(json!({"spec": {"replicas": 3, "strategy": {"type": "Recreate"}}}));
        assert_eq!((max_surge(&recreate), max_unavailable(&recreate)), (0, 0));
    }

    #[test]
    fn new_set_grows_within_surge() {
        let d = dep(4, json!(1), json!(1));
        let old = json!({"spec": {"replicas": 4}});
        let new = json!({"spec": {"replicas": 0}});
        let sets = Sets {
            all: vec![Obj::owned(old), Obj::owned(new)],
            new: Some(1),
        };
        assert_eq!(new_rs_new_replicas(&d, &sets), 1);
        let sets = Sets {
            all: vec![
                Obj::owned(json!({"spec": {"replicas": 3}})),
                Obj::of(Arc::new(StoredObject::unstored(
                    json!({"spec": {"replicas": 1}}),
                ))),
            ],
            new: Some(1),
        };
        assert_eq!(new_rs_new_replicas(&d, &sets), 2);
    }

    #[test]
    fn revision_annotations_keep_history() {
        let d = Tree::from(
            json!({"metadata": {"annotations": {"team": "a", REVISION: "3"}},
            "spec": {"replicas": 2}}),
        );
        let mut rs = json!({"metadata": {"annotations": {REVISION: "1"}}});
        assert!(set_new_rs_annotations(&d, &mut rs, 4, true));
        assert_eq!(annotation(&rs, REVISION), Some("4"));
        assert_eq!(annotation(&rs, REVISION_HISTORY), Some("1"));
        assert_eq!(annotation(&rs, "team"), Some("a"));
        assert!(!set_new_rs_annotations(&d, &mut rs, 4, true));
    }

    #[test]
    fn proportional_fraction() {
        let d = dep(20, json!(3), json!(2));
        let rs = Tree::from(
            json!({"metadata": {"annotations": {MAX_REPLICAS: "13"}}, "spec": {"replicas": 5}}),
        );
        // 5 * 23 / 13 = 8.8 → 9: four more.
        assert_eq!(rs_fraction(&rs, &d), 4);
        assert_eq!(proportion(&rs, &d, 10, 8), 2);
    }
}
