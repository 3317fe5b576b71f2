//! The API server: one axum [`Router`] that serves the Kubernetes REST API from a [`Store`].
//!
//! Used in-process as a tower service (`kube::Client::new(router, "default")`, no sockets, works on
//! a paused tokio clock) and on a loopback TCP port for real clients such as kubectl.

use crate::json::Ptr;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::registry::{Registry, ResourceInfo, api_resources};
use crate::store::{MemoryStore, ObjectKey, Store};

/// Largest request body accepted (the real API server's limit is 3 MiB for most objects).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Settings of one simulated API server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Reported by `/version` (`v1.33.4`).
    pub version: String,
    /// Watch events kept per resource; older resourceVersions answer 410 Gone.
    pub history_limit: usize,
    /// Interval between watch bookmarks when the client allows them.
    pub bookmark_interval: std::time::Duration,
    /// Wall-clock time at which the simulated clock starts (fixed for deterministic runs).
    pub start_time: Option<DateTime<Utc>>,
    /// Seed for uids and generated names.
    pub seed: u64,
    /// Address clients should use, reported by `/api` (set by `serve`).
    pub advertise_address: String,
    /// How long Events live (kube-apiserver's `--event-ttl`, 1 h); enforced by
    /// [`ApiServer::expire_events`], which the living simulation runs every minute.
    pub event_ttl: std::time::Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            version: "v1.33.4".to_string(),
            history_limit: 10_000,
            bookmark_interval: std::time::Duration::from_secs(60),
            start_time: None,
            seed: 1,
            advertise_address: "127.0.0.1:6443".to_string(),
            event_ttl: std::time::Duration::from_secs(3600),
        }
    }
}

/// Simulated wall clock: a fixed start plus tokio's (possibly paused) elapsed time.
#[derive(Debug)]
pub struct Clock {
    base: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl Clock {
    pub fn new(base: DateTime<Utc>) -> Self {
        Clock {
            base,
            start: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.start);
        self.base + chrono::Duration::from_std(elapsed).unwrap_or_default()
    }

    /// RFC 3339 with second precision, as Kubernetes writes `metav1.Time`.
    pub fn timestamp(&self) -> String {
        format_time(self.now())
    }

    /// Like [`Clock::timestamp`] with microseconds, as `metav1.MicroTime`.
    pub fn micro_timestamp(&self) -> String {
        self.now().to_rfc3339_opts(SecondsFormat::Micros, true)
    }
}

pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Deterministic generator for uids, generated names and cluster IPs.
#[derive(Debug)]
pub(crate) struct Ids {
    state: u64,
    next_ip: u32,
}

/// One step of splitmix64: the simulator's only source of pseudo-randomness, so that a seed fixes
/// every choice.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Ids {
    fn next(&mut self) -> u64 {
        splitmix64(&mut self.state)
    }

    pub(crate) fn uid(&mut self) -> String {
        let a = self.next();
        let b = self.next();
        let bytes: Vec<u8> = a.to_be_bytes().into_iter().chain(b.to_be_bytes()).collect();
        let mut b16 = [0u8; 16];
        b16.copy_from_slice(&bytes);
        b16[6] = (b16[6] & 0x0f) | 0x40;
        b16[8] = (b16[8] & 0x3f) | 0x80;
        uuid::Uuid::from_bytes(b16).to_string()
    }

    /// Five characters from the alphabet the real API server uses for `generateName`.
    pub(crate) fn suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut n = self.next();
        (0..5)
            .map(|_| {
                let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
                n /= ALPHABET.len() as u64;
                c
            })
            .collect()
    }

    /// Next service ClusterIP from 10.96.0.0/12 (10.96.0.1 is the `kubernetes` service).
    pub(crate) fn cluster_ip(&mut self) -> String {
        self.next_ip += 1;
        let n = self.next_ip;
        format!("10.96.{}.{}", (n >> 8) & 0xff, n & 0xff)
    }
}

/// Shared state of one API server.
pub struct ApiServer {
    pub store: Arc<dyn Store>,
    pub registry: Registry,
    pub clock: Clock,
    pub config: ServerConfig,
    pub(crate) ids: Mutex<Ids>,
    /// Events in creation order with their revision, for the TTL (as etcd leases do it).
    events: Mutex<std::collections::VecDeque<(tokio::time::Instant, ObjectKey, u64)>>,
    /// Injected faults (API errors and latency, dropped watches, slow kubelets).
    pub faults: crate::faults::Faults,
    /// Parsed selectors of PodDisruptionBudgets for the eviction subresource, by budget, with
    /// the selector they were parsed from (a budget's status changes far more often than it).
    pub(crate) pdb_selectors: crate::eviction::SelectorCache,
}

impl ApiServer {
    /// A server over a fresh in-memory store, with the namespaces every cluster has.
    pub async fn new(config: ServerConfig) -> Arc<Self> {
        let store = Arc::new(MemoryStore::new(config.history_limit));
        Self::with_store(config, store).await
    }

    pub async fn with_store(config: ServerConfig, store: Arc<dyn Store>) -> Arc<Self> {
        let base = config.start_time.unwrap_or_else(|| {
            DateTime::<Utc>::from_timestamp(Utc::now().timestamp(), 0).unwrap_or_default()
        });
        let server = Arc::new(ApiServer {
            store,
            registry: Registry::new(),
            clock: Clock::new(base),
            ids: Mutex::new(Ids {
                state: config.seed,
                next_ip: 1,
            }),
            faults: crate::faults::Faults::new(config.seed),
            events: Mutex::new(std::collections::VecDeque::new()),
            pdb_selectors: Default::default(),
            config,
        });
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            // Ignore AlreadyExists: a persistent store may already hold them.
            let _ = server.create_internal(obj).await;
        }
        server
    }

    pub(crate) fn event_created(&self, key: ObjectKey, revision: u64) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back((tokio::time::Instant::now(), key, revision));
    }

    /// Deletes the Events older than `event_ttl`. An Event updated since it was created (a
    /// repeated one with a higher count) lives another `event_ttl` from when this finds it
    /// updated. Returns how many went.
    pub async fn expire_events(&self) -> usize {
        let cutoff = tokio::time::Instant::now().checked_sub(self.config.event_ttl);
        let Some(cutoff) = cutoff else {
            return 0;
        };
        let expired: Vec<(ObjectKey, u64)> = {
            let mut q = self.events.lock().unwrap_or_else(|p| p.into_inner());
            let mut out = Vec::new();
            while q.front().is_some_and(|(t, _, _)| *t <= cutoff) {
                if let Some((_, k, rev)) = q.pop_front() {
                    out.push((k, rev));
                }
            }
            out
        };
        let mut n = 0;
        for (key, rev) in expired {
            match self
                .store
                .delete(&key, &crate::store::Precondition::revision(rev))
                .await
            {
                Ok(_) => n += 1,
                // Updated since: its TTL starts again.
                Err(crate::store::StoreError::Conflict { .. }) => {
                    if let Ok(cur) = self.store.get(&key).await {
                        self.event_created(key, cur.revision);
                    }
                }
                Err(_) => {}
            }
        }
        n
    }

    pub(crate) fn ids(&self) -> std::sync::MutexGuard<'_, Ids> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The axum router serving this server's API.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new().fallback(handle).with_state(self.clone())
    }

    /// Creates an object from a manifest as the API would (defaults, uid, timestamps), but keeps a
    /// given `status`: used to load scenarios, where pods are already running.
    pub async fn create_internal(&self, obj: Value) -> Result<Value, ApiError> {
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let info = self.registry.by_kind(&api_version, &kind).ok_or_else(|| {
            ApiError::bad_request(format!(
                "no resource is served for apiVersion {api_version:?} kind {kind:?} (register its CRD first)"
            ))
        })?;
        let namespace = if info.namespaced {
            Some(
                obj.ptr("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("default")
                    .to_string(),
            )
        } else {
            None
        };
        let status = obj.get("status").cloned();
        let created = crate::rest::create(
            self,
            &info,
            namespace.as_deref(),
            obj,
            &crate::rest::WriteOptions::default(),
        )
        .await?;
        match status {
            Some(status) if info.has_subresource("status") => {
                let mut with_status = created.value();
                let name = with_status
                    .ptr("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                with_status["status"] = status;
                crate::defaults::normalize(&info, &mut with_status);
                let key = ObjectKey::new(&info.key(), namespace.as_deref().unwrap_or(""), &name);
                let stored = self
                    .store
                    .update(&key, with_status, &Default::default())
                    .await
                    .map_err(|e| ApiError::from_store(e, &info.qualified(), &name))?;
                Ok(stored.value.to_value())
            }
            _ => Ok(created.value()),
        }
    }
}

/// What the client asked to receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wants {
    Object,
    /// meta.k8s.io Table; `include` is `None`, `Metadata` or `Object`.
    Table,
    /// meta.k8s.io PartialObjectMetadata(List), with its version.
    Metadata(&'static str),
}

/// Picks the first representation of the Accept header that we can produce.
pub fn negotiate(headers: &HeaderMap) -> Result<Wants, ApiError> {
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if accept.trim().is_empty() {
        return Ok(Wants::Object);
    }
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let params: HashMap<String, String> = parts
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        if !matches!(
            media.as_str(),
            "application/json" | "*/*" | "application/*" | "application/yaml"
        ) {
            continue;
        }
        match params.get("as").map(String::as_str) {
            None => return Ok(Wants::Object),
            Some("Table") if params.get("g").is_some_and(|g| g == "meta.k8s.io") => {
                return Ok(Wants::Table);
            }
            Some("PartialObjectMetadata" | "PartialObjectMetadataList")
                if params.get("g").is_some_and(|g| g == "meta.k8s.io") =>
            {
                let v = match params.get("v").map(String::as_str) {
                    Some("v1beta1") => "v1beta1",
                    _ => "v1",
                };
                return Ok(Wants::Metadata(v));
            }
            _ => continue,
        }
    }
    Err(ApiError::not_acceptable(format!(
        "only the following media types are accepted: application/json, application/json;as=Table;v=v1;g=meta.k8s.io, application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io (got {accept:?})"
    )))
}

/// A JSON response.
pub fn json_response(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut resp = (status, body.into()).into_response();
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

pub fn value_response(status: StatusCode, v: &impl serde::Serialize) -> Response {
    json_response(status, serde_json::to_vec(v).unwrap_or_default())
}

/// The parsed target of a resource request.
#[derive(Debug, Clone)]
pub struct Target {
    pub info: ResourceInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// Legacy `/watch/` path prefix.
    pub watch_path: bool,
}

/// The top-level request handler: never panics, always answers an object or a Status.
async fn handle(State(server): State<Arc<ApiServer>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError {
                code: 413,
                reason: "RequestEntityTooLarge",
                message: format!(
                    "the request body is larger than {MAX_BODY_BYTES} bytes or could not be read"
                ),
                details: None,
            }
            .into_response();
        }
    };
    let query = parse_query(parts.uri.query().unwrap_or(""));
    match route(
        &server,
        &parts.method,
        parts.uri.path(),
        &query,
        &parts.headers,
        body,
    )
    .await
    {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

pub fn parse_query(q: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(decode(k), decode(v));
    }
    out
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn route(
    server: &Arc<ApiServer>,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let segs: Vec<&str> = if segs == [""] { Vec::new() } else { segs };
    if segs.iter().any(|s| s.is_empty()) {
        return Err(ApiError::no_route());
    }
    match segs.as_slice() {
        ["healthz" | "readyz" | "livez", ..] => {
            return Ok((
                StatusCode::OK,
                [(http::header::CONTENT_TYPE, "text/plain")],
                "ok",
            )
                .into_response());
        }
        ["version"] => return Ok(value_response(StatusCode::OK, &version_info(server))),
        // kubectl create/apply/replace need this to validate (see the module's docs); v2 is 404.
        ["openapi", "v3", rest @ ..] => {
            return crate::openapi::serve_v3(server, method, rest, query);
        }
        ["api"] => {
            only_get(method)?;
            return Ok(value_response(
                StatusCode::OK,
                &json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                        "serverAddress": server.config.advertise_address}]}),
            ));
        }
        ["apis"] => {
            only_get(method)?;
            let groups: Vec<Value> = server
                .registry
                .groups()
                .into_iter()
                .filter(|(g, _)| !g.is_empty())
                .map(|(g, versions)| group_json(&g, &versions))
                .collect();
            return Ok(value_response(
                StatusCode::OK,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            ));
        }
        ["apis", group] => {
            only_get(method)?;
            let Some((g, versions)) = server
                .registry
                .groups()
                .into_iter()
                .find(|(g, _)| g == group)
            else {
                return Err(ApiError::no_route());
            };
            let mut v = group_json(&g, &versions);
            v["kind"] = json!("APIGroup");
            v["apiVersion"] = json!("v1");
            return Ok(value_response(StatusCode::OK, &v));
        }
        ["api", "v1"] => {
            only_get(method)?;
            return resource_list(server, "", "v1");
        }
        ["apis", group, version] => {
            only_get(method)?;
            return resource_list(server, group, version);
        }
        _ => {}
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::no_route()),
    };
    let target = parse_target(server, group, version, rest)?;
    let watch =
        target.watch_path || matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let verb = crate::faults::verb_of(method, target.name.is_some(), watch);
    let fault = match target.subresource.as_deref() {
        Some(sub) => server
            .faults
            .api(verb, &format!("{}/{sub}", target.info.resource)),
        None => server.faults.api(verb, &target.info.resource),
    };
    if !fault.delay.is_zero() {
        tokio::time::sleep(fault.delay).await;
    }
    if let Some(code) = fault.error {
        return Err(ApiError::injected(code));
    }
    crate::rest::dispatch(server, method, target, query, headers, body).await
}

fn only_get(method: &Method) -> Result<(), ApiError> {
    if method == Method::GET {
        Ok(())
    } else {
        Err(ApiError::method_not_allowed())
    }
}

fn version_info(server: &ApiServer) -> Value {
    let v = server.config.version.trim_start_matches('v');
    let mut it = v.split('.');
    let major = it.next().unwrap_or("1");
    let minor = it.next().unwrap_or("0");
    json!({
        "major": major, "minor": minor,
        "emulationMajor": major, "emulationMinor": minor,
        "gitVersion": server.config.version,
        "gitCommit": "theseus-sim", "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0", "compiler": "gc",
        "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "aarch64") { "arm64" } else { "amd64" }),
    })
}

fn group_json(group: &str, versions: &[String]) -> Value {
    let gvs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    let preferred = gvs.first().cloned().unwrap_or(json!({}));
    json!({"name": group, "versions": gvs, "preferredVersion": preferred})
}

fn resource_list(server: &ApiServer, group: &str, version: &str) -> Result<Response, ApiError> {
    let resources: Vec<ResourceInfo> = server
        .registry
        .all()
        .into_iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if resources.is_empty() {
        return Err(ApiError::no_route());
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Ok(value_response(
        StatusCode::OK,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
            "resources": api_resources(&resources)}),
    ))
}

fn parse_target(
    server: &ApiServer,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Target, ApiError> {
    let (watch_path, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    let lookup = |res: &str| {
        server
            .registry
            .lookup(group, version, res)
            .ok_or_else(ApiError::no_route)
    };
    let t = |info: ResourceInfo, ns: Option<&str>, name: Option<&str>, sub: Option<&str>| Target {
        info,
        namespace: ns.map(str::to_string),
        name: name.map(str::to_string),
        subresource: sub.map(str::to_string),
        watch_path,
    };
    let target = match rest {
        // The namespaces resource itself.
        ["namespaces", name] if group.is_empty() => {
            t(lookup("namespaces")?, None, Some(name), None)
        }
        ["namespaces", name, sub @ ("status" | "finalize")] if group.is_empty() => {
            t(lookup("namespaces")?, None, Some(name), Some(sub))
        }
        ["namespaces", ns, res, tail @ ..] => {
            let info = lookup(res)?;
            if !info.namespaced {
                return Err(ApiError::no_route());
            }
            match tail {
                [] => t(info, Some(ns), None, None),
                [name] => t(info, Some(ns), Some(name), None),
                [name, sub] => t(info, Some(ns), Some(name), Some(sub)),
                _ => return Err(ApiError::no_route()),
            }
        }
        [res] => t(lookup(res)?, None, None, None),
        [res, name] => {
            let info = lookup(res)?;
            if info.namespaced {
                return Err(ApiError::no_route());
            }
            t(info, None, Some(name), None)
        }
        [res, name, sub] => {
            let info = lookup(res)?;
            if info.namespaced {
                return Err(ApiError::no_route());
            }
            t(info, None, Some(name), Some(sub))
        }
        _ => return Err(ApiError::no_route()),
    };
    if let Some(sub) = &target.subresource
        && !target.info.has_subresource(sub)
    {
        return Err(ApiError::no_route());
    }
    Ok(target)
}
