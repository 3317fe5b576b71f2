//! The verbs: get, list, watch, create, update, patch, delete, deletecollection, and the
//! subresources status, scale, binding, finalize and eviction, with kube-apiserver's semantics.

use crate::json::{Field, Json, Ptr, object};
use crate::tree::Tree;
use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use base64::Engine as _;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::registry::ResourceInfo;
use crate::selector::{FieldSelector, LabelSelector};
use crate::server::{ApiServer, Target, Wants, json_response, negotiate, value_response};
use crate::store::{EventType, ListOptions, ObjectKey, Precondition, StoreError, StoredObject};

/// How often a write is retried when it loses an optimistic-concurrency race it did not ask for.
const CONFLICT_RETRIES: usize = 16;

/// Options shared by the writing verbs.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
}

impl WriteOptions {
    fn from_query(query: &HashMap<String, String>) -> Result<Self, ApiError> {
        Ok(WriteOptions {
            dry_run: dry_run(query.get("dryRun").map(String::as_str))?,
        })
    }
}

fn dry_run(v: Option<&str>) -> Result<bool, ApiError> {
    match v {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "Invalid dry run value: {other:?}: valid values are \"All\""
        ))),
    }
}

/// What a write returns: the stored object (its serialized form is shared, not re-encoded), or,
/// for a dry run, the object that would have been stored.
#[derive(Debug)]
pub enum Written {
    Stored(Arc<StoredObject>),
    DryRun(Value),
}

impl Written {
    pub fn value(&self) -> Value {
        match self {
            Written::Stored(s) => s.value.to_value(),
            Written::DryRun(v) => v.clone(),
        }
    }

    /// The stored object; a dry run's object gets revision 0.
    pub fn into_stored(self) -> Arc<StoredObject> {
        match self {
            Written::Stored(s) => s,
            Written::DryRun(v) => Arc::new(StoredObject::unstored(v)),
        }
    }

    fn response(&self, code: StatusCode) -> Response {
        match self {
            Written::Stored(s) => json_response(code, s.json().clone()),
            Written::DryRun(v) => value_response(code, v),
        }
    }
}

pub async fn dispatch(
    server: &Arc<ApiServer>,
    method: &Method,
    target: Target,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let wants = negotiate(headers)?;
    let watch =
        target.watch_path || matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let info = &target.info;
    let ns = target.namespace.as_deref();
    let sub = target.subresource.as_deref();
    if info.namespaced && ns.is_none() && target.name.is_some() {
        return Err(ApiError::no_route());
    }
    match (method.clone(), target.name.as_deref(), sub) {
        (Method::GET, None, None) if watch => watch_resource(server, info, ns, query, wants).await,
        (Method::GET, None, None) => list(server, info, ns, query, wants).await,
        (Method::GET, Some(name), None | Some("status")) => {
            let obj = get(server, info, ns, name).await?;
            Ok(render_one(server, info, &obj, wants, query))
        }
        (Method::GET, Some(name), Some("scale")) => {
            let obj = get(server, info, ns, name).await?;
            Ok(value_response(
                StatusCode::OK,
                &scale_of(info, &obj.value.to_value()),
            ))
        }
        (Method::POST, None, None) => {
            if info.namespaced && ns.is_none() {
                return Err(ApiError::method_not_allowed());
            }
            let obj = decode_object(headers, &body)?;
            let opts = WriteOptions::from_query(query)?;
            let created = create(server, info, ns, obj, &opts).await?;
            Ok(created.response(StatusCode::CREATED))
        }
        (Method::POST, Some(name), Some("eviction")) => {
            let obj = decode_object(headers, &body)?;
            crate::eviction::evict(server, info, ns.unwrap_or(""), name, obj, query).await
        }
        (Method::POST, Some(name), Some("binding")) => {
            let obj = decode_object(headers, &body)?;
            bind(server, info, ns.unwrap_or(""), name, obj, query).await
        }
        (Method::PUT, Some(name), None | Some("status") | Some("finalize")) => {
            let obj = decode_object(headers, &body)?;
            let opts = WriteOptions::from_query(query)?;
            let (code, v) = update(server, info, ns, name, sub, obj, &opts).await?;
            Ok(v.response(code))
        }
        (Method::PUT, Some(name), Some("scale")) => {
            let obj = decode_object(headers, &body)?;
            let opts = WriteOptions::from_query(query)?;
            scale_write(server, info, ns, name, ScaleChange::Replace(obj), &opts).await
        }
        (Method::PATCH, Some(name), None | Some("status")) => {
            let patch = PatchBody::decode(headers, &body, info)?;
            let opts = WriteOptions::from_query(query)?;
            if matches!(patch.kind, PatchKind::Apply)
                && query.get("fieldManager").is_none_or(|m| m.is_empty())
            {
                return Err(ApiError::bad_request(
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                ));
            }
            let (code, v) = patch_object(server, info, ns, name, sub, &patch, &opts).await?;
            Ok(v.response(code))
        }
        (Method::PATCH, Some(name), Some("scale")) => {
            let patch = PatchBody::decode(headers, &body, info)?;
            let opts = WriteOptions::from_query(query)?;
            scale_write(server, info, ns, name, ScaleChange::Patch(patch), &opts).await
        }
        (Method::DELETE, Some(name), None) => {
            let opts = DeleteOptions::parse(query, &body)?;
            let (deleted, v) = delete(server, info, ns, name, &opts).await?;
            let code = if deleted {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            Ok(value_response(code, &v.value))
        }
        (Method::DELETE, None, None) => {
            let opts = DeleteOptions::parse(query, &body)?;
            delete_collection(server, info, ns, query, &opts).await
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

// ----------------------------------------------------------------------------------------------
// Decoding

/// Decodes a JSON or YAML request body into an object.
pub fn decode_object(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let ct = content_type(headers);
    let v: Value = match ct.as_str() {
        "" | "application/json" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the request body is not valid JSON: {e}"))
        })?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => serde_yaml::from_slice(body)
            .map_err(|e| {
                ApiError::bad_request(format!("the request body is not valid YAML: {e}"))
            })?,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object (a Kubernetes resource)",
        ));
    }
    Ok(v)
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    Json,
    Merge,
    Strategic,
    Apply,
}

pub struct PatchBody {
    pub kind: PatchKind,
    pub doc: Value,
}

impl PatchBody {
    fn decode(headers: &HeaderMap, body: &[u8], info: &ResourceInfo) -> Result<Self, ApiError> {
        let ct = content_type(headers);
        let kind = match ct.as_str() {
            "application/json-patch+json" => PatchKind::Json,
            "application/merge-patch+json" => PatchKind::Merge,
            "application/strategic-merge-patch+json" => {
                if info.custom {
                    return Err(ApiError::unsupported_media_type(
                        "application/strategic-merge-patch+json (not supported for custom resources: use a JSON merge patch)",
                    ));
                }
                PatchKind::Strategic
            }
            "application/apply-patch+yaml" | "application/apply-patch+json" => PatchKind::Apply,
            other => return Err(ApiError::unsupported_media_type(other)),
        };
        let doc: Value = if kind == PatchKind::Apply {
            serde_yaml::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("the apply patch is not valid YAML: {e}"))
            })?
        } else {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?
        };
        match (kind, &doc) {
            (PatchKind::Json, Value::Array(_)) => {}
            (PatchKind::Json, _) => {
                return Err(ApiError::bad_request(
                    "a JSON patch must be an array of operations",
                ));
            }
            (_, Value::Object(_)) => {}
            _ => return Err(ApiError::bad_request("the patch must be a JSON object")),
        }
        Ok(PatchBody { kind, doc })
    }

    /// Applies the patch to `target`.
    fn apply(&self, target: &mut Value, info: &ResourceInfo) -> Result<(), ApiError> {
        let bad = |e: crate::patch::PatchError| ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("the patch could not be applied: {e}"),
            details: None,
        };
        match self.kind {
            PatchKind::Json => crate::patch::json_patch(target, &self.doc).map_err(bad),
            PatchKind::Merge => {
                crate::patch::merge_patch(target, &self.doc);
                Ok(())
            }
            // Server-side apply is approximated by a strategic merge (built-ins) or a merge
            // patch (custom resources); field ownership is not tracked.
            PatchKind::Strategic | PatchKind::Apply if !info.custom => {
                crate::patch::strategic_merge_patch(
                    target,
                    &self.doc,
                    &info.api_version(),
                    &info.kind,
                )
                .map_err(bad)
            }
            PatchKind::Strategic | PatchKind::Apply => {
                crate::patch::merge_patch(target, &self.doc);
                Ok(())
            }
        }
    }
}

// ----------------------------------------------------------------------------------------------
// Helpers on objects

pub fn meta(v: &Value) -> Option<&Map<String, Value>> {
    v.ptr("/metadata").and_then(Value::as_object)
}

fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.field("metadata").is_some_and(Value::is_object) {
        v["metadata"] = json!({});
    }
    match v.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(m) => m,
        None => unreachable!("metadata was just made an object"),
    }
}

pub fn meta_str<'a, V: Json>(v: &'a V, field: &str) -> Option<&'a str> {
    v.field("metadata")
        .and_then(|m| m.field(field))
        .and_then(Json::as_str)
}

fn key_for(info: &ResourceInfo, ns: Option<&str>, name: &str) -> ObjectKey {
    ObjectKey::new(
        &info.key(),
        if info.namespaced {
            ns.unwrap_or("")
        } else {
            ""
        },
        name,
    )
}

fn store_err(info: &ResourceInfo, name: &str) -> impl Fn(StoreError) -> ApiError {
    let q = info.qualified();
    let name = name.to_string();
    move |e| ApiError::from_store(e, &q, &name)
}

fn finalizers<V: Json>(v: &V) -> Vec<String> {
    v.ptr("/metadata/finalizers")
        .and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Json::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Kinds whose `metadata.generation` tracks spec changes.
fn tracks_generation(info: &ResourceInfo) -> bool {
    info.custom
        || matches!(
            (info.group.as_str(), info.resource.as_str()),
            ("apps", _)
                | ("batch", _)
                | ("policy", "poddisruptionbudgets")
                | ("apiextensions.k8s.io", _)
                | ("", "pods")
        )
}

/// Everything but metadata and status: the part whose change bumps the generation.
fn spec_eq(a: &Value, b: &Value) -> bool {
    equal_except(a, b, &["metadata", "status"])
}

/// Whether two objects are equal in every top-level field but `skip`, without copying them.
fn equal_except(a: &Value, b: &Value, skip: &[&str]) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let kept =
                |m: &Map<String, Value>| m.keys().filter(|k| !skip.contains(&k.as_str())).count();
            kept(x) == kept(y)
                && x.iter()
                    .filter(|(k, _)| !skip.contains(&k.as_str()))
                    .all(|(k, v)| y.get(k) == Some(v))
        }
        _ => a == b,
    }
}

/// Checks `kind`/`apiVersion` of a body against the resource and fills them in when missing.
fn check_type(info: &ResourceInfo, obj: &mut Value) -> Result<(), ApiError> {
    let want_av = info.api_version();
    match obj.field("apiVersion").and_then(Value::as_str) {
        None | Some("") => obj["apiVersion"] = json!(want_av),
        Some(av) if av == want_av => {}
        Some(av) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )));
        }
    }
    match obj.field("kind").and_then(Value::as_str) {
        None | Some("") => obj["kind"] = json!(info.kind),
        Some(k) if k == info.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "{k} in version \"{}\" cannot be handled as a {}: the kind in the request body does not match the resource",
                info.version, info.kind
            )));
        }
    }
    if obj
        .field("metadata")
        .is_some_and(|m| !m.is_object() && !m.is_null())
    {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    Ok(())
}

fn check_namespace(info: &ResourceInfo, ns: Option<&str>, obj: &mut Value) -> Result<(), ApiError> {
    let body_ns = meta_str(obj, "namespace").unwrap_or("").to_string();
    if info.namespaced {
        let url_ns = ns.unwrap_or("");
        if !body_ns.is_empty() && body_ns != url_ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        meta_mut(obj).insert("namespace".into(), json!(url_ns));
    } else {
        meta_mut(obj).remove("namespace");
    }
    Ok(())
}

// ----------------------------------------------------------------------------------------------
// get, list, watch

pub async fn get(
    server: &ApiServer,
    info: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
) -> Result<Arc<StoredObject>, ApiError> {
    server
        .store
        .get(&key_for(info, ns, name))
        .await
        .map_err(store_err(info, name))
}

fn partial_metadata(obj: &impl Json, version: &str) -> Value {
    object! {
        "kind" => "PartialObjectMetadata",
        "apiVersion" => format!("meta.k8s.io/{version}"),
        "metadata" => obj.field("metadata").map_or_else(|| object! {}, Json::to_value),
    }
}

fn table(
    server: &ApiServer,
    info: &ResourceInfo,
    items: &[&Value],
    list_meta: Value,
    query: &HashMap<String, String>,
) -> Value {
    let now = server.clock.now();
    let columns = if info.custom {
        crate::table::crd_columns(&info.printer_columns)
    } else {
        crate::table::columns(&info.group, &info.resource)
    };
    let include = query
        .get("includeObject")
        .map(String::as_str)
        .unwrap_or("Metadata");
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let cells = if info.custom {
                crate::table::crd_cells(&info.printer_columns, o, now)
            } else {
                crate::table::cells(&info.group, &info.resource, o, now)
            };
            let mut row = json!({"cells": cells});
            match include {
                "None" => {}
                "Object" => row["object"] = (*o).clone(),
                _ => row["object"] = partial_metadata(*o, "v1"),
            }
            row
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
        "columnDefinitions": columns, "rows": rows})
}

fn render_one(
    server: &ApiServer,
    info: &ResourceInfo,
    obj: &StoredObject,
    wants: Wants,
    query: &HashMap<String, String>,
) -> Response {
    match wants {
        Wants::Object => json_response(StatusCode::OK, obj.json().clone()),
        Wants::Metadata(v) => value_response(StatusCode::OK, &partial_metadata(&obj.value, v)),
        Wants::Table => {
            let meta = json!({"resourceVersion": obj.revision.to_string()});
            value_response(
                StatusCode::OK,
                &table(server, info, &[&obj.value.to_value()], meta, query),
            )
        }
    }
}

/// Label and field selectors of a request, validated against the resource.
#[derive(Clone, Default)]
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn parse(info: &ResourceInfo, query: &HashMap<String, String>) -> Result<Self, ApiError> {
        let labels =
            LabelSelector::parse(query.get("labelSelector").map(String::as_str).unwrap_or(""))
                .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields =
            FieldSelector::parse(query.get("fieldSelector").map(String::as_str).unwrap_or(""))
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
        for f in fields.fields() {
            if !field_supported(info, f) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {f}"
                )));
            }
        }
        Ok(Selectors { labels, fields })
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub fn matches(&self, obj: &Tree) -> bool {
        self.labels.matches(obj.ptr("/metadata/labels")) && self.fields.matches(obj)
    }
}

/// The field selectors the real API server supports for each resource.
fn field_supported(info: &ResourceInfo, field: &str) -> bool {
    if matches!(field, "metadata.name" | "metadata.namespace") {
        return true;
    }
    let allowed: &[&str] = match (info.group.as_str(), info.resource.as_str()) {
        ("", "pods") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "nodes") => &["spec.unschedulable"],
        ("", "namespaces") => &["status.phase"],
        ("", "secrets") => &["type"],
        ("", "events") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("apps", "replicasets") => &["status.replicas"],
        ("batch", "jobs") => &["status.successful"],
        _ => &[],
    };
    allowed.contains(&field)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: u64,
    ns: String,
    start: String,
    /// Items left after this page in the snapshot, when known (lists without selectors): later
    /// pages read the same snapshot, so they need not count again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rem: Option<usize>,
}

fn encode_continue(rv: u64, last: &Tree, rem: Option<usize>) -> String {
    let t = ContinueToken {
        v: "meta.k8s.io/v1".into(),
        rv,
        ns: meta_str(last, "namespace").unwrap_or("").into(),
        start: meta_str(last, "name").unwrap_or("").into(),
        rem,
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&t).unwrap_or_default())
}

fn decode_continue(s: &str) -> Result<ContinueToken, ApiError> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {s:?}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| bad())?;
    serde_json::from_slice(&raw).map_err(|_| bad())
}

fn parse_rv(s: &str) -> Result<u64, ApiError> {
    s.parse::<u64>().map_err(|_| {
        ApiError::bad_request(format!(
            "Invalid value: {s:?}: resourceVersion must be an integer"
        ))
    })
}

fn list_kind(info: &ResourceInfo) -> String {
    format!("{}List", info.kind)
}

async fn list(
    server: &ApiServer,
    info: &ResourceInfo,
    ns: Option<&str>,
    query: &HashMap<String, String>,
    wants: Wants,
) -> Result<Response, ApiError> {
    let selectors = Selectors::parse(info, query)?;
    let limit = match query.get("limit").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(l) => Some(l.parse::<usize>().map_err(|_| {
            ApiError::bad_request(format!("limit must be a non-negative integer, got {l:?}"))
        })?),
    };
    let mut opts = ListOptions {
        namespace: ns.map(str::to_string),
        limit,
        ..Default::default()
    };
    // Remaining items: counted once, on the first page of an unfiltered list; later pages
    // subtract what they return.
    let mut known_remaining = None;
    if let Some(token) = query.get("continue").filter(|c| !c.is_empty()) {
        let t = decode_continue(token)?;
        opts.at_revision = Some(t.rv);
        opts.after = Some((t.ns, t.start));
        known_remaining = t.rem;
    } else if let Some(rv) = query
        .get("resourceVersion")
        .filter(|r| !r.is_empty() && *r != "0")
    {
        let rv = parse_rv(rv)?;
        let current = server.store.revision();
        match query.get("resourceVersionMatch").map(String::as_str) {
            Some("Exact") => opts.at_revision = Some(rv),
            None | Some("") | Some("NotOlderThan") => {
                if rv > current {
                    return Err(ApiError {
                        code: 504,
                        reason: "Timeout",
                        message: format!(
                            "Too large resource version: {rv}, current resource version: {current}"
                        ),
                        details: None,
                    });
                }
            }
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "resourceVersionMatch: Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\""
                )));
            }
        }
    }
    if !selectors.is_empty() {
        let s = selectors.clone();
        opts.filter = Some(Arc::new(move |v: &Tree| s.matches(v)));
    }
    opts.label_pairs = selectors.labels.required_pairs();
    if info.group.is_empty() && info.resource == "pods" {
        opts.node_name = selectors
            .fields
            .required_value("spec.nodeName")
            .map(str::to_string);
    }
    opts.count_remaining = selectors.is_empty() && known_remaining.is_none();
    let result = server.store.list(&info.key(), &opts).await.map_err(|e| match e {
        StoreError::Expired { .. } if query.contains_key("continue") => ApiError::gone(
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
        ),
        StoreError::Expired { requested, oldest } => ApiError::gone(format!(
            "too old resource version: {requested} ({oldest})"
        )),
        other => ApiError::from_store(other, &info.qualified(), ""),
    })?;
    let mut list_meta = json!({"resourceVersion": result.revision.to_string()});
    if result.remaining > 0
        && let Some(last) = result.items.last()
    {
        let rem = match known_remaining {
            Some(before) => Some(before.saturating_sub(result.items.len())),
            None if selectors.is_empty() => Some(result.remaining),
            None => None,
        };
        list_meta["continue"] = json!(encode_continue(result.revision, &last.value, rem));
        if let Some(rem) = rem {
            list_meta["remainingItemCount"] = json!(rem);
        }
    }
    match wants {
        Wants::Object => {
            // Assemble from the stored serialized forms: no re-serialization of items.
            let head = json!({"kind": list_kind(info), "apiVersion": info.api_version(), "metadata": list_meta});
            let mut out = serde_json::to_vec(&head).unwrap_or_default();
            out.pop(); // the closing brace
            out.extend_from_slice(b",\"items\":[");
            let total: usize = result.items.iter().map(|o| o.json().len() + 1).sum();
            out.reserve(total + 2);
            for (i, o) in result.items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(o.json());
            }
            out.extend_from_slice(b"]}");
            Ok(json_response(StatusCode::OK, out))
        }
        Wants::Metadata(v) => {
            let items: Vec<Value> = result
                .items
                .iter()
                .map(|o| partial_metadata(&o.value, v))
                .collect();
            Ok(value_response(
                StatusCode::OK,
                &json!({"kind": "PartialObjectMetadataList", "apiVersion": format!("meta.k8s.io/{v}"),
                    "metadata": list_meta, "items": items}),
            ))
        }
        Wants::Table => {
            let values: Vec<Value> = result.items.iter().map(|o| o.value.to_value()).collect();
            let items: Vec<&Value> = values.iter().collect();
            Ok(value_response(
                StatusCode::OK,
                &table(server, info, &items, list_meta, query),
            ))
        }
    }
}

fn watch_event_bytes(
    server: &ApiServer,
    info: &ResourceInfo,
    kind: &str,
    obj: &StoredObject,
    wants: Wants,
    query: &HashMap<String, String>,
) -> Bytes {
    let mut out = Vec::with_capacity(obj.json().len() + 32);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    match wants {
        Wants::Object => out.extend_from_slice(obj.json()),
        Wants::Metadata(v) => out.extend_from_slice(
            &serde_json::to_vec(&partial_metadata(&obj.value, v)).unwrap_or_default(),
        ),
        Wants::Table => {
            let meta = json!({"resourceVersion": obj.revision.to_string()});
            let t = table(server, info, &[&obj.value.to_value()], meta, query);
            out.extend_from_slice(&serde_json::to_vec(&t).unwrap_or_default());
        }
    }
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

fn bookmark_bytes(info: &ResourceInfo, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let ev = json!({"type": "BOOKMARK", "object": {"kind": info.kind, "apiVersion": info.api_version(), "metadata": meta}});
    let mut v = serde_json::to_vec(&ev).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn error_event(err: &ApiError) -> Bytes {
    let mut v =
        serde_json::to_vec(&json!({"type": "ERROR", "object": err.status()})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

async fn watch_resource(
    server: &Arc<ApiServer>,
    info: &ResourceInfo,
    ns: Option<&str>,
    query: &HashMap<String, String>,
    wants: Wants,
) -> Result<Response, ApiError> {
    let selectors = Selectors::parse(info, query)?;
    let bookmarks = matches!(
        query.get("allowWatchBookmarks").map(String::as_str),
        Some("true" | "1")
    );
    let timeout = match query.get("timeoutSeconds") {
        Some(t) => std::time::Duration::from_secs(t.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "timeoutSeconds must be a non-negative integer, got {t:?}"
            ))
        })?),
        None => std::time::Duration::from_secs(1800),
    };
    let timeout = match server.faults.watch_limit(&info.resource) {
        Some(limit) => timeout.min(limit),
        None => timeout,
    };
    let rv_param = query
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or("");
    let send_initial = match query.get("sendInitialEvents").map(String::as_str) {
        Some("true") => true,
        Some("false") => false,
        _ => rv_param.is_empty() || rv_param == "0",
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let mut initial = Vec::new();
    let start = if send_initial {
        let opts = ListOptions {
            namespace: ns.map(str::to_string),
            ..Default::default()
        };
        let snap = server
            .store
            .list(&info.key(), &opts)
            .await
            .map_err(|e| ApiError::from_store(e, &info.qualified(), ""))?;
        initial = snap.items;
        snap.revision
    } else {
        parse_rv(rv_param)?
    };
    let stream = server.store.watch(&info.key(), ns, start).await;
    let server = server.clone();
    let info = info.clone();
    let query = query.clone();
    tokio::spawn(async move {
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                let err = ApiError::from_store(e, &info.qualified(), "");
                let _ = tx.send(error_event(&err)).await;
                return;
            }
        };
        for obj in initial.iter().filter(|o| selectors.matches(&o.value)) {
            if tx
                .send(watch_event_bytes(
                    &server, &info, "ADDED", obj, wants, &query,
                ))
                .await
                .is_err()
            {
                return;
            }
        }
        let mut last = start;
        if send_initial && bookmarks {
            let _ = tx.send(bookmark_bytes(&info, start, true)).await;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(server.config.bookmark_interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                biased;
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = ticker.tick(), if bookmarks => {
                    // Deliver every event up to the current revision first, so the bookmark
                    // never claims a revision whose events the client has not seen.
                    let rev = server.store.revision();
                    for _ in 0..16 {
                        match stream.next().now_or_never() {
                            Some(Some(item)) => {
                                if !deliver(&server, &info, &selectors, wants, &query, &tx, item, &mut last).await {
                                    return;
                                }
                            }
                            Some(None) => return,
                            None => break,
                        }
                    }
                    if tx.send(bookmark_bytes(&info, rev.max(last), false)).await.is_err() {
                        return;
                    }
                }
                item = stream.next() => {
                    let Some(item) = item else { return };
                    if !deliver(&server, &info, &selectors, wants, &query, &tx, item, &mut last).await {
                        return;
                    }
                }
            }
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    Ok(json_response(StatusCode::OK, Body::from_stream(body)))
}

/// Sends one batch of store events through the selectors; false when the watch must end.
#[allow(clippy::too_many_arguments)]
async fn deliver(
    server: &ApiServer,
    info: &ResourceInfo,
    selectors: &Selectors,
    wants: Wants,
    query: &HashMap<String, String>,
    tx: &tokio::sync::mpsc::Sender<Bytes>,
    item: Result<Vec<Arc<crate::store::WatchEvent>>, StoreError>,
    last: &mut u64,
) -> bool {
    let events = match item {
        Ok(e) => e,
        Err(e) => {
            let err = ApiError::from_store(e, &info.qualified(), "");
            let _ = tx.send(error_event(&err)).await;
            return false;
        }
    };
    for ev in events {
        *last = ev.revision;
        let now = selectors.matches(&ev.object.value);
        let before = ev
            .previous
            .as_ref()
            .is_some_and(|p| selectors.matches(&p.value));
        let kind = match ev.kind {
            EventType::Added if now => "ADDED",
            EventType::Modified if now && before => "MODIFIED",
            EventType::Modified if now => "ADDED",
            EventType::Modified if before => "DELETED",
            EventType::Deleted if now || before => "DELETED",
            _ => continue,
        };
        if tx
            .send(watch_event_bytes(
                server, info, kind, &ev.object, wants, query,
            ))
            .await
            .is_err()
        {
            return false;
        }
    }
    true
}

// ----------------------------------------------------------------------------------------------
// create

pub async fn create(
    server: &ApiServer,
    info: &ResourceInfo,
    ns: Option<&str>,
    mut obj: Value,
    opts: &WriteOptions,
) -> Result<Written, ApiError> {
    check_type(info, &mut obj)?;
    check_namespace(info, ns, &mut obj)?;
    let mut name = meta_str(&obj, "name").unwrap_or("").to_string();
    if name.is_empty() {
        match meta_str(&obj, "generateName").filter(|g| !g.is_empty()) {
            Some(prefix) => {
                let prefix = prefix.to_string();
                name = format!("{prefix}{}", server.ids().suffix());
                meta_mut(&mut obj).insert("name".into(), json!(name));
            }
            None => {
                return Err(ApiError::invalid(
                    &info.kind,
                    "",
                    &info.group,
                    &[(
                        "metadata.name".into(),
                        "Required value: name or generateName is required".into(),
                    )],
                ));
            }
        }
    }
    crate::defaults::validate(info, &obj)?;
    if let Some(ns) = ns.filter(|_| info.namespaced) {
        let ns_info = server
            .registry
            .lookup("", "v1", "namespaces")
            .ok_or_else(|| ApiError::internal("namespaces are not registered"))?;
        match server
            .store
            .get(&ObjectKey::new(&ns_info.key(), "", ns))
            .await
        {
            Ok(nso) => {
                if nso.value.ptr("/metadata/deletionTimestamp").is_some() {
                    return Err(ApiError::forbidden(format!(
                        "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                        info.resource
                    )));
                }
            }
            Err(_) => return Err(ApiError::not_found("namespaces", ns)),
        }
    }
    if meta_str(&obj, "resourceVersion").is_some_and(|r| !r.is_empty()) {
        return Err(ApiError::internal(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    {
        let uid = server.ids().uid();
        let ts = server.clock.timestamp();
        let m = meta_mut(&mut obj);
        m.insert("uid".into(), json!(uid));
        m.insert("creationTimestamp".into(), json!(ts));
        for f in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
            "resourceVersion",
        ] {
            m.remove(f);
        }
        if tracks_generation(info) {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
    }
    crate::defaults::prepare_for_create(server, info, &mut obj);
    crate::defaults::normalize(info, &mut obj);
    if info.group == "apiextensions.k8s.io" && info.resource == "customresourcedefinitions" {
        crate::defaults::validate_crd(&obj)?;
        crate::defaults::crd_status(&mut obj);
    }
    if opts.dry_run {
        return Ok(Written::DryRun(obj));
    }
    let key = key_for(info, ns, &name);
    let stored = server
        .store
        .create(&key, obj)
        .await
        .map_err(store_err(info, &name))?;
    if info.group.is_empty() && info.resource == "events" {
        server.event_created(key, stored.revision);
    }
    if info.group == "apiextensions.k8s.io" && info.resource == "customresourcedefinitions" {
        server
            .registry
            .register_crd(&stored.value.to_value())
            .map_err(|e| {
                ApiError::invalid(
                    "CustomResourceDefinition",
                    &name,
                    &info.group,
                    &[("spec".into(), e)],
                )
            })?;
    }
    Ok(Written::Stored(stored))
}

// ----------------------------------------------------------------------------------------------
// update and patch

/// Builds the object to store from the current one and the client's, per (sub)resource rules.
fn prepare_update(info: &ResourceInfo, sub: Option<&str>, old: &Value, new: Value) -> Value {
    prepare_update_of(info, sub, old, new, false)
}

/// [`prepare_update`]; `status_only` when the caller knows that `new` differs from `old` in its
/// `status` alone (a merge patch of the status built on the current object), which spares the
/// comparisons of everything else.
fn prepare_update_of(
    info: &ResourceInfo,
    sub: Option<&str>,
    old: &Value,
    new: Value,
    status_only: bool,
) -> Value {
    if status_only && sub == Some("status") {
        let mut o = new;
        if o.field("status").is_some_and(Value::is_null)
            && let Some(m) = o.as_object_mut()
        {
            m.shift_remove("status");
        }
        // Metadata and spec are the current ones: nothing immutable changed, no new generation.
        crate::defaults::normalize(info, &mut o);
        return o;
    }
    let mut out = match sub {
        Some("status") if equal_except(old, &new, &["status"]) => {
            // The common case (a status patch applied to a copy of the object): only the status
            // differs, so the client's object is already the result.
            let mut o = new;
            if o.field("status").is_some_and(Value::is_null)
                && let Some(m) = o.as_object_mut()
            {
                m.shift_remove("status");
            }
            o
        }
        Some("status") => {
            let mut new = new;
            let status = new
                .as_object_mut()
                .and_then(|m| m.remove("status"))
                .filter(|s| !s.is_null());
            let mut o = Map::new();
            let mut status = status;
            if let Some(m) = old.as_object() {
                for (k, v) in m {
                    if k == "status" {
                        if let Some(s) = status.take() {
                            o.insert(k.clone(), s);
                        }
                    } else {
                        o.insert(k.clone(), v.clone());
                    }
                }
            }
            if let Some(s) = status {
                o.insert("status".into(), s);
            }
            Value::Object(o)
        }
        Some("finalize") => {
            let mut o = old.clone();
            o["spec"]["finalizers"] = new.ptr("/spec/finalizers").cloned().unwrap_or(json!([]));
            o
        }
        _ => {
            let mut o = new;
            if info.has_subresource("status") {
                match old.field("status") {
                    Some(s) => o["status"] = s.clone(),
                    None => {
                        if let Some(m) = o.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            if info.group.is_empty() && info.resource == "namespaces" {
                // spec.finalizers only change through the finalize subresource.
                if let Some(spec) = old.field("spec") {
                    o["spec"] = spec.clone();
                }
            }
            o
        }
    };
    // Immutable and server-owned metadata.
    let empty = Map::new();
    let old_meta = meta(old).unwrap_or(&empty);
    let m = meta_mut(&mut out);
    for f in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "namespace",
        "name",
        "generation",
    ] {
        match old_meta.get(f) {
            Some(v) => {
                m.insert(f.into(), v.clone());
            }
            None => {
                m.remove(f);
            }
        }
    }
    m.remove("managedFields");
    crate::defaults::normalize(info, &mut out);
    if tracks_generation(info) && !spec_eq(old, &out) {
        let g = old_meta
            .field("generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
        meta_mut(&mut out).insert("generation".into(), json!(g));
    }
    out
}

/// Whether an update may create a missing object (kube-apiserver's AllowCreateOnUpdate).
fn create_on_update(info: &ResourceInfo) -> bool {
    matches!(
        (info.group.as_str(), info.resource.as_str()),
        ("", "endpoints") | ("", "events") | ("coordination.k8s.io", "leases")
    )
}

pub async fn update(
    server: &ApiServer,
    info: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
    mut obj: Value,
    opts: &WriteOptions,
) -> Result<(StatusCode, Written), ApiError> {
    check_type(info, &mut obj)?;
    check_namespace(info, ns, &mut obj)?;
    match meta_str(&obj, "name") {
        None | Some("") => {
            meta_mut(&mut obj).insert("name".into(), json!(name));
        }
        Some(n) if n == name => {}
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
    }
    let wanted_rv = match meta_str(&obj, "resourceVersion").filter(|r| !r.is_empty()) {
        Some(r) => Some(parse_rv(r)?),
        None => None,
    };
    let key = key_for(info, ns, name);
    // With a resourceVersion the client asked for, a conflict is an answer, not a retry: the
    // object is used as it is instead of being copied for another attempt.
    let mut obj = Some(obj);
    for _ in 0..CONFLICT_RETRIES {
        let cur = match server.store.get(&key).await {
            Ok(c) => c,
            Err(StoreError::NotFound(_)) if sub.is_none() && create_on_update(info) => {
                let mut obj = obj.take().unwrap_or_default();
                meta_mut(&mut obj).remove("resourceVersion");
                let v = create(server, info, ns, obj, opts).await?;
                return Ok((StatusCode::CREATED, v));
            }
            Err(e) => return Err(ApiError::from_store(e, &info.qualified(), name)),
        };
        let cur_v = cur.value.to_value();
        if let Some(rv) = wanted_rv
            && rv != cur.revision
        {
            return Err(ApiError::stale(&info.qualified(), name));
        }
        let body = match (wanted_rv, &mut obj) {
            (Some(_), o) => o.take().unwrap_or_default(),
            (None, Some(o)) => o.clone(),
            (None, None) => Value::Null,
        };
        let new = prepare_update(info, sub, &cur_v, body);
        crate::defaults::validate(info, &new)?;
        crate::defaults::validate_update(info, &cur_v, &new)?;
        if opts.dry_run {
            return Ok((StatusCode::OK, Written::DryRun(new)));
        }
        match write_back(server, info, &key, new, cur.revision).await {
            Ok(v) => return Ok((StatusCode::OK, Written::Stored(v))),
            Err(StoreError::Conflict { .. }) if wanted_rv.is_none() => continue,
            Err(e) => return Err(ApiError::from_store(e, &info.qualified(), name)),
        }
    }
    Err(ApiError::stale(&info.qualified(), name))
}

/// Stores an updated object; completes a pending deletion once nothing holds it any more.
pub(crate) async fn write_back(
    server: &ApiServer,
    info: &ResourceInfo,
    key: &ObjectKey,
    new: Value,
    rev: u64,
) -> Result<Arc<StoredObject>, StoreError> {
    let done = meta(&new).is_some_and(|m| {
        m.contains_key("deletionTimestamp")
            && m.field("deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                == 0
    }) && finalizers(&new).is_empty()
        && !holds_namespace(info, &new);
    let stored = server
        .store
        .update(key, new, &Precondition::revision(rev))
        .await?;
    if done {
        let gone = server
            .store
            .delete(key, &Precondition::revision(stored.revision))
            .await?;
        after_delete(server, info, &gone.value).await;
        return Ok(gone);
    }
    Ok(stored)
}

/// For a merge patch of nothing but `part` and, optionally, the resourceVersion:
/// `Some(the resourceVersion asked for)`; otherwise None. The spec must be an object; the status
/// may be anything, or absent.
fn part_patch_precondition<'a>(doc: &'a Value, part: &str) -> Option<Option<&'a str>> {
    let m = doc.as_object()?;
    if part == "spec" && !m.field("spec").is_some_and(Value::is_object) {
        return None;
    }
    let mut rv = None;
    for (k, v) in m {
        match k.as_str() {
            k if k == part => {}
            "metadata" => {
                let meta = v.as_object()?;
                if meta.keys().any(|k| k != "resourceVersion") {
                    return None;
                }
                rv = match meta.field("resourceVersion") {
                    None => None,
                    Some(r) => Some(r.as_str()?),
                };
            }
            _ => return None,
        }
    }
    Some(rv)
}

/// A namespace is held by its spec finalizers until the namespace controller releases it.
fn holds_namespace<V: Json>(info: &ResourceInfo, v: &V) -> bool {
    info.group.is_empty()
        && info.resource == "namespaces"
        && v.ptr("/spec/finalizers")
            .and_then(Json::as_array)
            .is_some_and(|a| !a.is_empty())
}

pub async fn patch_object(
    server: &ApiServer,
    info: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
    patch: &PatchBody,
    opts: &WriteOptions,
) -> Result<(StatusCode, Written), ApiError> {
    let key = key_for(info, ns, name);
    for _ in 0..CONFLICT_RETRIES {
        let cur = match server.store.get(&key).await {
            Ok(c) => c,
            Err(StoreError::NotFound(_)) if patch.kind == PatchKind::Apply && sub.is_none() => {
                let mut obj = patch.doc.clone();
                meta_mut(&mut obj).insert("name".into(), json!(name));
                let v = create(server, info, ns, obj, opts).await?;
                return Ok((StatusCode::CREATED, v));
            }
            Err(e) => return Err(ApiError::from_store(e, &info.qualified(), name)),
        };
        // A merge patch of nothing but the status of a status subresource, and at most the
        // resourceVersion as a precondition.
        let status_pre = if sub == Some("status") && patch.kind == PatchKind::Merge {
            part_patch_precondition(&patch.doc, "status")
        } else {
            None
        };
        let status_only = status_pre.is_some();
        // Patches applied to the stored tree, without a copy; `Some(the resourceVersion asked
        // for)` when this patch is one of them, checked once below. Both leave metadata alone, so
        // nothing that validation, immutability or graceful deletion reads changes (a deleted
        // object takes the general path).
        // - The hot path (kubelets' and controllers' status writes): a status patch shares
        //   metadata, spec and every unchanged part of the status.
        // - Lease renewals: a merge patch of the spec. A Lease has no generation, no status
        //   subresource and nothing in its spec that the API server validates, so the patch
        //   applies to the stored tree as it is.
        let deleting = cur.value.ptr("/metadata/deletionTimestamp").is_some();
        let tree_pre = if opts.dry_run || deleting {
            None
        } else if status_only {
            status_pre
        } else if patch.kind == PatchKind::Merge
            && sub.is_none()
            && info.group == "coordination.k8s.io"
            && info.resource == "leases"
        {
            part_patch_precondition(&patch.doc, "spec")
        } else {
            None
        };
        let on_tree = match tree_pre {
            Some(rv) => {
                if rv.is_some_and(|r| r != cur.revision.to_string()) {
                    return Err(ApiError::stale(&info.qualified(), name));
                }
                let merged = cur.value.merge_patched(&patch.doc);
                Some(
                    if status_only && merged.field("status").is_some_and(Tree::is_null) {
                        merged.without("status")
                    } else {
                        merged
                    },
                )
            }
            None => None,
        };
        if let Some(merged) = on_tree
            && !crate::defaults::needs_normalize(info, &merged)
        {
            let pre = Precondition::revision(cur.revision);
            match server.store.update_tree(&key, merged, &pre).await {
                Ok(v) => return Ok((StatusCode::OK, Written::Stored(v))),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_store(e, &info.qualified(), name)),
            }
        }
        let cur_v = cur.value.to_value();
        let mut patched = if patch.kind == PatchKind::Merge {
            crate::patch::merge_patched(&cur_v, &patch.doc)
        } else {
            let mut p = cur_v.clone();
            patch.apply(&mut p, info)?;
            p
        };
        if !patched.is_object() {
            return Err(ApiError::bad_request(
                "the patch replaced the object with a non-object",
            ));
        }
        let cur_rv = cur.revision.to_string();
        let asked_rv = meta_str(&patched, "resourceVersion").map(str::to_string);
        let pinned = asked_rv.as_deref().is_some_and(|r| r != cur_rv);
        if pinned {
            return Err(ApiError::stale(&info.qualified(), name));
        }
        check_type(info, &mut patched)?;
        let new = prepare_update_of(info, sub, &cur_v, patched, status_only);
        crate::defaults::validate(info, &new)?;
        crate::defaults::validate_update(info, &cur_v, &new)?;
        if opts.dry_run {
            return Ok((StatusCode::OK, Written::DryRun(new)));
        }
        match write_back(server, info, &key, new, cur.revision).await {
            Ok(v) => return Ok((StatusCode::OK, Written::Stored(v))),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::from_store(e, &info.qualified(), name)),
        }
    }
    Err(ApiError::stale(&info.qualified(), name))
}

// ----------------------------------------------------------------------------------------------
// scale

fn scale_of(info: &ResourceInfo, obj: &Value) -> Value {
    let selector = obj
        .ptr("/spec/selector")
        .and_then(|s| LabelSelector::from_json(s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let m = meta(obj).cloned().unwrap_or_default();
    let mut smeta = Map::new();
    for f in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = m.get(f) {
            smeta.insert(f.into(), v.clone());
        }
    }
    let _ = info;
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": smeta,
        "spec": {"replicas": obj.ptr("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)},
        "status": {
            "replicas": obj.ptr("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    })
}

enum ScaleChange {
    Replace(Value),
    Patch(PatchBody),
}

async fn scale_write(
    server: &ApiServer,
    info: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    change: ScaleChange,
    opts: &WriteOptions,
) -> Result<Response, ApiError> {
    let key = key_for(info, ns, name);
    for _ in 0..CONFLICT_RETRIES {
        let cur = get(server, info, ns, name).await?;
        let cur_v = cur.value.to_value();
        let scale = scale_of(info, &cur_v);
        let new_scale = match &change {
            ScaleChange::Replace(v) => v.clone(),
            ScaleChange::Patch(p) => {
                let mut s = scale.clone();
                // Scale is a built-in kind for strategic merge purposes.
                let scale_info = ResourceInfo {
                    custom: false,
                    kind: "Scale".into(),
                    ..info.clone()
                };
                p.apply(&mut s, &scale_info)?;
                s
            }
        };
        if let Some(rv) = meta_str(&new_scale, "resourceVersion").filter(|r| !r.is_empty())
            && parse_rv(rv)? != cur.revision
        {
            return Err(ApiError::stale(&info.qualified(), name));
        }
        let replicas = match new_scale.ptr("/spec/replicas") {
            Some(Value::Number(n))
                if n.as_i64()
                    .is_some_and(|r| (0..=i32::MAX as i64).contains(&r)) =>
            {
                n.as_i64().unwrap_or(0)
            }
            None | Some(Value::Null) => 0,
            Some(other) => {
                return Err(ApiError::invalid(
                    "Scale",
                    name,
                    "autoscaling",
                    &[(
                        "spec.replicas".into(),
                        format!("Invalid value: {other}: must be greater than or equal to 0"),
                    )],
                ));
            }
        };
        let mut new = cur_v.clone();
        new["spec"]["replicas"] = json!(replicas);
        let new = prepare_update(info, None, &cur_v, new);
        if opts.dry_run {
            return Ok(value_response(StatusCode::OK, &scale_of(info, &new)));
        }
        match write_back(server, info, &key, new, cur.revision).await {
            Ok(v) => {
                return Ok(value_response(
                    StatusCode::OK,
                    &scale_of(info, &v.value.to_value()),
                ));
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::from_store(e, &info.qualified(), name)),
        }
    }
    Err(ApiError::stale(&info.qualified(), name))
}

// ----------------------------------------------------------------------------------------------
// binding

pub async fn bind(
    server: &ApiServer,
    info: &ResourceInfo,
    ns: &str,
    name: &str,
    binding: Value,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let opts = WriteOptions::from_query(query)?;
    let node = binding
        .ptr("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                "Binding",
                name,
                "",
                &[("target.name".into(), "Required value".into())],
            )
        })?
        .to_string();
    if let Some(bname) = meta_str(&binding, "name").filter(|n| !n.is_empty() && *n != name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({bname}) does not match the name on the URL ({name})"
        )));
    }
    let key = key_for(info, Some(ns), name);
    for _ in 0..CONFLICT_RETRIES {
        let cur = get(server, info, Some(ns), name).await?;
        if cur.value.ptr("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::conflict(
                &info.qualified(),
                name,
                "pod is being deleted, cannot be assigned to a host",
            ));
        }
        if let Some(existing) = cur
            .value
            .ptr("/spec/nodeName")
            .and_then(Json::as_str)
            .filter(|n| !n.is_empty())
        {
            return Err(ApiError::conflict(
                &info.qualified(),
                name,
                &format!("pod {name} is already assigned to node \"{existing}\""),
            ));
        }
        // The new version shares everything but the node name and the conditions.
        let cond = Tree::from(json!({"type": "PodScheduled", "status": "True",
            "lastProbeTime": null, "lastTransitionTime": server.clock.timestamp()}));
        let mut conds: Vec<Tree> = cur
            .value
            .ptr("/status/conditions")
            .and_then(Tree::as_array)
            .unwrap_or_default()
            .iter()
            .filter(|c| c["type"] != "PodScheduled")
            .cloned()
            .collect();
        conds.push(cond);
        let new = cur
            .value
            .with_at(&["spec", "nodeName"], Tree::from(json!(node)))
            .with_at(&["status", "conditions"], Tree::list(conds));
        if opts.dry_run {
            return Ok(value_response(StatusCode::CREATED, &success_status()));
        }
        match server
            .store
            .update_tree(&key, new, &Precondition::revision(cur.revision))
            .await
        {
            Ok(_) => return Ok(value_response(StatusCode::CREATED, &success_status())),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::from_store(e, &info.qualified(), name)),
        }
    }
    // Lost every race: say so rather than claim a binding that did not happen.
    Err(ApiError::stale(&info.qualified(), name))
}

pub fn success_status() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
}

// ----------------------------------------------------------------------------------------------
// delete

/// `metav1.DeleteOptions` from the body and the query.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    pub grace_period: Option<i64>,
    pub propagation: Option<String>,
    pub precondition: Precondition,
    pub dry_run: bool,
}

impl DeleteOptions {
    pub fn parse(query: &HashMap<String, String>, body: &[u8]) -> Result<Self, ApiError> {
        let mut o = DeleteOptions::default();
        let trimmed = String::from_utf8_lossy(body);
        if !trimmed.trim().is_empty() {
            let v: Value = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("DeleteOptions is not valid JSON: {e}"))
            })?;
            o = Self::from_json(&v)?;
        }
        if let Some(g) = query.get("gracePeriodSeconds") {
            o.grace_period = Some(g.parse().map_err(|_| {
                ApiError::bad_request(format!("gracePeriodSeconds must be an integer, got {g:?}"))
            })?);
        }
        if let Some(p) = query.get("propagationPolicy") {
            o.propagation = Some(p.clone());
        }
        if query.contains_key("dryRun") {
            o.dry_run = dry_run(query.get("dryRun").map(String::as_str))?;
        }
        o.check()?;
        Ok(o)
    }

    pub fn from_json(v: &Value) -> Result<Self, ApiError> {
        if !v.is_object() && !v.is_null() {
            return Err(ApiError::bad_request("DeleteOptions must be a JSON object"));
        }
        let mut o = DeleteOptions {
            grace_period: v.field("gracePeriodSeconds").and_then(Value::as_i64),
            propagation: v
                .field("propagationPolicy")
                .and_then(Value::as_str)
                .map(str::to_string),
            ..Default::default()
        };
        if v.field("orphanDependents").and_then(Value::as_bool) == Some(true) {
            o.propagation = Some("Orphan".into());
        }
        if let Some(p) = v.field("preconditions") {
            o.precondition.uid = p.field("uid").and_then(Value::as_str).map(str::to_string);
            if let Some(rv) = p.field("resourceVersion").and_then(Value::as_str) {
                o.precondition.resource_version = Some(parse_rv(rv)?);
            }
        }
        if let Some(d) = v.field("dryRun").and_then(Value::as_array) {
            for x in d {
                o.dry_run |= dry_run(x.as_str())?;
            }
        }
        o.check()?;
        Ok(o)
    }

    fn check(&self) -> Result<(), ApiError> {
        match self.propagation.as_deref() {
            None | Some("Orphan" | "Background" | "Foreground") => Ok(()),
            Some(p) => Err(ApiError::invalid(
                "DeleteOptions",
                "",
                "meta.k8s.io",
                &[(
                    "propagationPolicy".into(),
                    format!(
                        "Unsupported value: {p:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
                    ),
                )],
            )),
        }
    }
}

/// Deletes one object with kube-apiserver's graceful-deletion and finalizer rules.
/// Returns whether it is gone now, and the object (last state, or the state pending deletion;
/// unstored for a dry run).
pub async fn delete(
    server: &ApiServer,
    info: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    opts: &DeleteOptions,
) -> Result<(bool, Arc<StoredObject>), ApiError> {
    let key = key_for(info, ns, name);
    let q = info.qualified();
    for _ in 0..CONFLICT_RETRIES {
        let cur = get(server, info, ns, name).await?;
        if let Some(uid) = &opts.precondition.uid {
            let actual = meta_str(&cur.value, "uid").unwrap_or("");
            if actual != uid {
                return Err(ApiError::conflict(
                    &q,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                    ),
                ));
            }
        }
        if let Some(rv) = opts.precondition.resource_version
            && rv != cur.revision
        {
            return Err(ApiError::conflict(
                &q,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    cur.revision
                ),
            ));
        }
        let mut fins = finalizers(&cur.value);
        match opts.propagation.as_deref() {
            Some("Foreground") if !fins.iter().any(|f| f == "foregroundDeletion") => {
                fins.push("foregroundDeletion".into())
            }
            Some("Orphan") if !fins.iter().any(|f| f == "orphan") => fins.push("orphan".into()),
            _ => {}
        }
        let is_pod = info.group.is_empty() && info.resource == "pods";
        let grace = if is_pod {
            pod_grace(&cur.value, opts.grace_period)
        } else {
            0
        };
        let now = server.clock.now();
        let already = cur.value.ptr("/metadata/deletionTimestamp").is_some();
        let held = !fins.is_empty() || holds_namespace(info, &cur.value);
        if already {
            let cur_grace = cur
                .value
                .ptr("/metadata/deletionGracePeriodSeconds")
                .and_then(Tree::as_i64)
                .unwrap_or(0);
            if grace >= cur_grace && fins == finalizers(&cur.value) {
                return Ok((false, cur));
            }
        }
        if grace == 0 && !held {
            if opts.dry_run {
                return Ok((true, cur));
            }
            match server
                .store
                .delete(&key, &Precondition::revision(cur.revision))
                .await
            {
                Ok(gone) => {
                    after_delete(server, info, &gone.value).await;
                    return Ok((true, gone));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_store(e, &q, name)),
            }
        }
        // The new version shares everything but what the deletion sets.
        let when = crate::server::format_time(now + chrono::Duration::seconds(grace));
        let mut new = cur
            .value
            .with_at(&["metadata", "deletionTimestamp"], Tree::from(json!(when)))
            .with_at(
                &["metadata", "deletionGracePeriodSeconds"],
                Tree::from(json!(grace)),
            );
        if !fins.is_empty() {
            new = new.with_at(&["metadata", "finalizers"], Tree::from(json!(fins)));
        }
        if info.group.is_empty() && info.resource == "namespaces" {
            new = new.with_at(&["status", "phase"], Tree::from(json!("Terminating")));
        }
        if opts.dry_run {
            return Ok((false, Arc::new(StoredObject::unstored(new.to_value()))));
        }
        match server
            .store
            .update_tree(&key, new, &Precondition::revision(cur.revision))
            .await
        {
            Ok(s) => return Ok((false, s)),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::from_store(e, &q, name)),
        }
    }
    Err(ApiError::stale(&q, name))
}

/// The grace period of a pod deletion: requested, else the pod's own, else 30 s; zero for pods
/// that never ran on a node or already finished (they have nothing to stop).
fn pod_grace<V: Json>(pod: &V, requested: Option<i64>) -> i64 {
    let unbound = pod
        .ptr("/spec/nodeName")
        .and_then(Json::as_str)
        .is_none_or(str::is_empty);
    let terminal = matches!(
        pod.ptr("/status/phase").and_then(Json::as_str),
        Some("Succeeded" | "Failed")
    );
    if unbound || terminal {
        return 0;
    }
    let g = requested
        .or_else(|| {
            pod.ptr("/spec/terminationGracePeriodSeconds")
                .and_then(Json::as_i64)
        })
        .unwrap_or(30);
    // Like the real server: a negative request means "as soon as possible" (1 s).
    if g < 0 { 1 } else { g }
}

/// Work that follows an object's removal from the store.
async fn after_delete(server: &ApiServer, info: &ResourceInfo, gone: &Tree) {
    if info.group == "apiextensions.k8s.io" && info.resource == "customresourcedefinitions" {
        let group = gone.ptr("/spec/group").and_then(Json::as_str).unwrap_or("");
        let plural = gone
            .ptr("/spec/names/plural")
            .and_then(Json::as_str)
            .unwrap_or("");
        if let Some(key) = server.registry.unregister_crd(group, plural)
            && let Ok(all) = server.store.list(&key, &ListOptions::default()).await
        {
            for o in all.items {
                let k = ObjectKey::new(
                    &key,
                    o.namespace(),
                    meta_str(&o.value, "name").unwrap_or(""),
                );
                let _ = server.store.delete(&k, &Precondition::default()).await;
            }
        }
    }
}

async fn delete_collection(
    server: &ApiServer,
    info: &ResourceInfo,
    ns: Option<&str>,
    query: &HashMap<String, String>,
    opts: &DeleteOptions,
) -> Result<Response, ApiError> {
    let selectors = Selectors::parse(info, query)?;
    let list_opts = ListOptions {
        namespace: ns.map(str::to_string),
        ..Default::default()
    };
    let all = server
        .store
        .list(&info.key(), &list_opts)
        .await
        .map_err(|e| ApiError::from_store(e, &info.qualified(), ""))?;
    let mut items = Vec::new();
    for o in all.items.iter().filter(|o| selectors.matches(&o.value)) {
        let name = meta_str(&o.value, "name").unwrap_or("").to_string();
        let ons = o.namespace().to_string();
        match delete(
            server,
            info,
            if ons.is_empty() { None } else { Some(&ons) },
            &name,
            opts,
        )
        .await
        {
            Ok((_, v)) => items.push(v.value.to_value()),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(value_response(
        StatusCode::OK,
        &json!({"kind": list_kind(info), "apiVersion": info.api_version(),
            "metadata": {"resourceVersion": server.store.revision().to_string()}, "items": items}),
    ))
}
