//! The pod eviction subresource, with kube-apiserver's rules (pkg/registry/core/pod/storage,
//! eviction.go): PodDisruptionBudgets are consulted, a budget with no disruptions allowed answers
//! 429 TooManyRequests, an allowed eviction is recorded in the budget's `disruptedPods` before the
//! pod is deleted.

use crate::json::{Field, Ptr};
use crate::tree::Tree;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::registry::ResourceInfo;
use crate::rest::{self, DeleteOptions, meta_str};
use crate::selector::LabelSelector;
use crate::server::{ApiServer, value_response};
use crate::store::{ListOptions, ObjectKey, Precondition, StoreError, StoredObject};

/// Refuse evictions once this many are recorded but not yet seen by the disruption controller.
pub const MAX_DISRUPTED_POD_SIZE: usize = 2000;
const RETRIES: usize = 20;
const VIOLATION: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

/// Pods in these states were already disrupted (or never ran): the budget does not apply.
fn can_ignore_pdb(pod: &Tree) -> bool {
    matches!(
        pod.ptr("/status/phase").and_then(Tree::as_str),
        Some("Succeeded" | "Failed" | "Pending")
    ) || pod.ptr("/metadata/deletionTimestamp").is_some()
}

fn terminal_or_deleting(pod: &Tree) -> bool {
    matches!(
        pod.ptr("/status/phase").and_then(Tree::as_str),
        Some("Succeeded" | "Failed")
    ) || pod.ptr("/metadata/deletionTimestamp").is_some()
}

fn success() -> Response {
    value_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    )
}

fn still_processing(pdb: &str) -> ApiError {
    ApiError::too_many_requests(
        VIOLATION,
        10,
        Some(format!(
            "The disruption budget {pdb} is still being processed by the server."
        )),
    )
}

pub async fn evict(
    server: &ApiServer,
    info: &ResourceInfo,
    ns: &str,
    name: &str,
    eviction: Value,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let api_version = eviction
        .field("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("policy/v1");
    if !matches!(api_version, "policy/v1" | "policy/v1beta1") {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) is not policy/v1 or policy/v1beta1"
        )));
    }
    if eviction
        .field("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k != "Eviction")
    {
        return Err(ApiError::bad_request("not a Eviction object"));
    }
    if meta_str(&eviction, "name").unwrap_or("") != name {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let mut opts = match eviction.field("deleteOptions") {
        Some(d) if !d.is_null() => DeleteOptions::from_json(d)?,
        _ => DeleteOptions::default(),
    };
    let query_dry = DeleteOptions::parse(query, b"")?.dry_run;
    let body_dry = eviction
        .ptr("/deleteOptions/dryRun")
        .is_some_and(|d| d.as_array().is_some_and(|a| !a.is_empty()));
    if body_dry && query.contains_key("dryRun") && query_dry != opts.dry_run {
        return Err(ApiError::bad_request(
            "Non-matching dry-run options in request and content",
        ));
    }
    opts.dry_run |= query_dry;
    let client_rv = opts.precondition.resource_version.is_some();

    // Pods the budget does not protect are deleted directly.
    let mut pod = None;
    for _ in 0..RETRIES {
        let cur = rest::get(server, info, Some(ns), name).await?;
        if !can_ignore_pdb(&cur.value) {
            pod = Some(cur);
            break;
        }
        let mut o = opts.clone();
        if !terminal_or_deleting(&cur.value) && !client_rv {
            o.precondition.resource_version = Some(cur.revision);
        }
        match rest::delete(server, info, Some(ns), name, &o).await {
            Ok(_) => return Ok(success()),
            Err(e) if e.code == 409 && !client_rv => continue,
            Err(e) => return Err(e),
        }
    }
    let Some(pod) = pod else {
        return Err(ApiError::stale(&info.qualified(), name));
    };

    let pdb_info = server
        .registry
        .lookup("policy", "v1", "poddisruptionbudgets")
        .ok_or_else(|| ApiError::internal("poddisruptionbudgets are not registered"))?;
    let pdbs = matching_pdbs(server, &pdb_info, ns, &pod.value).await?;
    if pdbs.len() > 1 {
        return Err(ApiError {
            code: 500,
            reason: "",
            message: "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.".into(),
            details: None,
        });
    }
    let mut pin_rv = false;
    let mut pdb_name = String::new();
    if let Some(first) = pdbs.into_iter().next() {
        let first = &first.value;
        pdb_name = meta_str(first, "name").unwrap_or("").to_string();
        let status = |f: &str| {
            first
                .ptr(&format!("/status/{f}"))
                .and_then(Tree::as_i64)
                .unwrap_or(0)
        };
        let always_allow = first
            .ptr("/spec/unhealthyPodEvictionPolicy")
            .and_then(Tree::as_str)
            == Some("AlwaysAllow");
        if !crate::controllers::endpoints::pod_ready(&pod.value)
            && (always_allow
                || (status("currentHealthy") >= status("desiredHealthy")
                    && status("desiredHealthy") > 0))
        {
            // An unready pod does not count as healthy: evicting it costs the budget nothing.
            pin_rv = true;
        } else {
            check_and_decrement(server, &pdb_info, ns, &pdb_name, name, opts.dry_run).await?;
        }
    }

    let mut o = opts.clone();
    if pin_rv && !client_rv {
        o.precondition.resource_version = Some(pod.revision);
    }
    match rest::delete(server, info, Some(ns), name, &o).await {
        Ok(_) => Ok(success()),
        Err(e) if e.code == 409 && pin_rv && !client_rv => Err(still_processing(&pdb_name)),
        Err(e) => Err(e),
    }
}

/// The budgets of one namespace as of a spec epoch of the PodDisruptionBudgets (see
/// [`crate::store::Store::spec_epoch`]): their parsed selectors (None: matches nothing), indexed
/// by their first `matchLabels` pair, so that an eviction looks at the few budgets that can
/// select its pod instead of parsing every budget of the namespace.
#[derive(Default)]
pub(crate) struct NsBudgets {
    epoch: u64,
    selectors: BTreeMap<String, Option<LabelSelector>>,
    by_pair: BTreeMap<(String, String), Vec<String>>,
    any: Vec<String>,
}

/// Budgets by namespace, for the eviction subresource.
pub(crate) type SelectorCache =
    std::sync::Mutex<HashMap<String, NsBudgets, crate::json::FastBuild>>;

fn budgets_of(items: &[Arc<StoredObject>], epoch: u64) -> NsBudgets {
    let mut b = NsBudgets {
        epoch,
        ..Default::default()
    };
    for p in items {
        let name = meta_str(&p.value, "name").unwrap_or("").to_string();
        let raw = p.value.ptr("/spec/selector");
        // An invalid selector matches nothing; so does an empty one.
        let parsed = match raw.map(LabelSelector::from_json) {
            Some(Ok(sel)) if !sel.is_empty() => Some(sel),
            _ => None,
        };
        let pair = raw
            .and_then(|r| r.field("matchLabels"))
            .and_then(Tree::as_object)
            .and_then(|m| m.iter().next())
            .and_then(|(k, v)| Some((k.to_string(), v.as_str()?.to_string())));
        if parsed.is_some() {
            match pair {
                Some(pair) => b.by_pair.entry(pair).or_default().push(name.clone()),
                None => b.any.push(name.clone()),
            }
        }
        b.selectors.insert(name, parsed);
    }
    b
}

async fn matching_pdbs(
    server: &ApiServer,
    pdb_info: &ResourceInfo,
    ns: &str,
    pod: &Tree,
) -> Result<Vec<Arc<StoredObject>>, ApiError> {
    let res = pdb_info.key();
    let labels = pod.ptr("/metadata/labels");
    let epoch = server.store.spec_epoch(&res);
    let cached = |cache: &HashMap<String, NsBudgets, crate::json::FastBuild>| {
        epoch.is_some_and(|e| cache.get(ns).is_some_and(|b| b.epoch == e))
    };
    let fresh = cached(
        &server
            .pdb_selectors
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    if !fresh {
        let list = server
            .store
            .list(
                &res,
                &ListOptions {
                    namespace: Some(ns.to_string()),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| ApiError::from_store(e, &pdb_info.qualified(), ""))?;
        let built = budgets_of(&list.items, epoch.unwrap_or(0));
        let Some(_) = epoch else {
            // The store does not say when budgets change: match every budget now.
            return Ok(list
                .items
                .into_iter()
                .filter(|p| {
                    let name = meta_str(&p.value, "name").unwrap_or("");
                    built
                        .selectors
                        .get(name)
                        .and_then(Option::as_ref)
                        .is_some_and(|s| s.matches(labels))
                })
                .collect());
        };
        server
            .pdb_selectors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ns.to_string(), built);
    }
    // The budgets that can select the pod, in name order.
    let names: Vec<String> = {
        let cache = server
            .pdb_selectors
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Some(b) = cache.get(ns) else {
            return Ok(Vec::new());
        };
        let mut candidates: std::collections::BTreeSet<&String> = b.any.iter().collect();
        if let Some(m) = labels.and_then(Tree::as_object) {
            for (k, v) in m {
                if let Some(v) = v.as_str()
                    && let Some(names) = b.by_pair.get(&(k.to_string(), v.to_string()))
                {
                    candidates.extend(names.iter());
                }
            }
        }
        candidates
            .into_iter()
            .filter(|n| {
                b.selectors
                    .get(n.as_str())
                    .and_then(Option::as_ref)
                    .is_some_and(|s| s.matches(labels))
            })
            .cloned()
            .collect()
    };
    let mut out = Vec::new();
    for name in names {
        match server.store.get(&ObjectKey::new(&res, ns, &name)).await {
            Ok(p) => out.push(p),
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(ApiError::from_store(e, &pdb_info.qualified(), &name)),
        }
    }
    Ok(out)
}

async fn check_and_decrement(
    server: &ApiServer,
    pdb_info: &ResourceInfo,
    ns: &str,
    pdb_name: &str,
    pod_name: &str,
    dry_run: bool,
) -> Result<(), ApiError> {
    let key = ObjectKey::new(&pdb_info.key(), ns, pdb_name);
    for _ in 0..RETRIES {
        let cur = server
            .store
            .get(&key)
            .await
            .map_err(|e| ApiError::from_store(e, &pdb_info.qualified(), pdb_name))?;
        let pdb = &cur.value;
        let st = |f: &str| {
            pdb.ptr(&format!("/status/{f}"))
                .and_then(Tree::as_i64)
                .unwrap_or(0)
        };
        let generation = pdb
            .ptr("/metadata/generation")
            .and_then(Tree::as_i64)
            .unwrap_or(0);
        if st("observedGeneration") < generation {
            return Err(still_processing(pdb_name));
        }
        let allowed = st("disruptionsAllowed");
        if allowed < 0 {
            return Err(ApiError::forbidden(format!(
                "poddisruptionbudgets.policy \"{pdb_name}\" is forbidden: pdb disruptions allowed is negative"
            )));
        }
        let disrupted = pdb
            .ptr("/status/disruptedPods")
            .and_then(Tree::as_object)
            .map(|m| m.len())
            .unwrap_or(0);
        if disrupted > MAX_DISRUPTED_POD_SIZE {
            return Err(ApiError::forbidden(format!(
                "poddisruptionbudgets.policy \"{pdb_name}\" is forbidden: DisruptedPods map too big - too many evictions not confirmed by PDB controller"
            )));
        }
        if allowed == 0 {
            return Err(ApiError::too_many_requests(
                VIOLATION,
                0,
                Some(format!(
                    "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
                    st("desiredHealthy"),
                    st("currentHealthy")
                )),
            ));
        }
        if dry_run {
            return Ok(());
        }
        let mut new = pdb.to_value();
        new["status"]["disruptionsAllowed"] = json!(allowed - 1);
        if allowed - 1 == 0 {
            set_condition(&mut new, server.clock.timestamp());
        }
        if !new["status"]["disruptedPods"].is_object() {
            new["status"]["disruptedPods"] = json!({});
        }
        new["status"]["disruptedPods"][pod_name] = json!(server.clock.timestamp());
        match server
            .store
            .update(&key, new, &Precondition::revision(cur.revision))
            .await
        {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::from_store(e, &pdb_info.qualified(), pdb_name)),
        }
    }
    Err(ApiError {
        code: 504,
        reason: "Timeout",
        message: format!("couldn't update PodDisruptionBudget \"{pdb_name}\" due to conflicts"),
        details: None,
    })
}

/// The DisruptionAllowed=False condition the real helper sets when the budget reaches zero.
fn set_condition(pdb: &mut Value, now: String) {
    let generation = pdb.ptr("/metadata/generation").cloned().unwrap_or(json!(0));
    let cond = json!({"type": "DisruptionAllowed", "status": "False", "reason": "InsufficientPods",
        "message": "", "observedGeneration": generation, "lastTransitionTime": now});
    let mut conds: Vec<Value> = pdb["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c["type"] != "DisruptionAllowed")
        .collect();
    conds.push(cond);
    pdb["status"]["conditions"] = json!(conds);
}
