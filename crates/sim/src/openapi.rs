//! OpenAPI v3: the `/openapi/v3` index and one small document per group version.
//!
//! Why this exists: with its default `--validate=strict`, kubectl (1.27 and later, checked
//! against 1.33) asks the server's OpenAPI, before `create`, `apply` or `replace`, whether the
//! PATCH operation of the object's kind declares the `fieldValidation` query parameter. If it
//! does, kubectl leaves validation to the server (it sends `fieldValidation=Strict`) and skips
//! client-side schema validation. If both `/openapi/v3` and `/openapi/v2` answer 404, kubectl
//! does not fall back: it fails with `error validating data: failed to download openapi: the
//! server could not find the requested resource` unless the user adds `--validate=false`. So a
//! 404 is not an option, and we serve what kube-apiserver serves, minus the schemas:
//!
//! - `GET /openapi/v3`: `{"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=…"}, …}}`
//!   with one entry per served group version, custom resources included.
//! - `GET /openapi/v3/api/v1`, `/openapi/v3/apis/<group>/<version>`: an OpenAPI 3.0 document with
//!   the resource and subresource paths, each operation carrying `x-kubernetes-action`,
//!   `x-kubernetes-group-version-kind` and the query parameters the real server declares (so
//!   `fieldValidation` on create, update and patch), and the patch media types it accepts
//!   (strategic merge for built-in kinds only). With `?hash=` the document is immutable and
//!   cacheable, and a stale hash redirects to the current one, as kube-apiserver does.
//!
//! There are no component schemas for kinds. Consequences, all matching what kubectl does for a
//! kind whose schema it cannot find: `kubectl apply` computes its three-way strategic merge patch
//! from the types compiled into kubectl (custom resources: a JSON merge patch); `kubectl explain`
//! has nothing to explain. `/openapi/v2` stays a 404: kubectl 1.33 only falls back to it when v3
//! fails, and tolerates its absence for patch computation.
//!
//! `fieldValidation` is accepted but not enforced: without schemas the simulator cannot tell an
//! unknown field from a known one, so `Strict` behaves like `Ignore`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::registry::ResourceInfo;
use crate::server::{ApiServer, value_response};

/// Serves `GET /openapi/v3[/<rest>]`; `rest` is the path after `/openapi/v3`, split on `/`.
pub fn serve_v3(
    server: &Arc<ApiServer>,
    method: &Method,
    rest: &[&str],
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    if method != Method::GET {
        return Err(ApiError::method_not_allowed());
    }
    let resources = server.registry.all();
    if rest.is_empty() {
        return Ok(index(&resources, &server.config.version));
    }
    let (group, version) = match rest {
        ["api", "v1"] => ("", "v1"),
        ["apis", g, v] => (*g, *v),
        _ => return Err(ApiError::no_route()),
    };
    let served: Vec<&ResourceInfo> = resources
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if served.is_empty() {
        return Err(ApiError::no_route());
    }
    let doc = document(group, version, &served, &server.config.version);
    let bytes = serde_json::to_vec(&doc).unwrap_or_default();
    let hash = content_hash(&bytes);
    let mut resp = match query.get("hash") {
        Some(h) if *h != hash => {
            let mut r = StatusCode::MOVED_PERMANENTLY.into_response();
            if let Ok(loc) = HeaderValue::from_str(&relative_url(group, version, &hash)) {
                r.headers_mut().insert(http::header::LOCATION, loc);
            }
            return Ok(r);
        }
        Some(_) => {
            let mut r = crate::server::json_response(StatusCode::OK, bytes);
            let h = r.headers_mut();
            h.insert(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("public, immutable"),
            );
            h.insert(http::header::VARY, HeaderValue::from_static("Accept"));
            r
        }
        None => crate::server::json_response(StatusCode::OK, bytes),
    };
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{hash}\"")) {
        resp.headers_mut().insert(http::header::ETAG, etag);
    }
    Ok(resp)
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn relative_url(group: &str, version: &str, hash: &str) -> String {
    format!("/openapi/v3/{}?hash={hash}", gv_path(group, version))
}

/// The `/openapi/v3` index: every served group version with the URL of its current document.
fn index(resources: &[ResourceInfo], server_version: &str) -> Response {
    let mut gvs: Vec<(&str, &str)> = Vec::new();
    for r in resources {
        if !gvs.contains(&(r.group.as_str(), r.version.as_str())) {
            gvs.push((&r.group, &r.version));
        }
    }
    let mut paths = Map::new();
    for (g, v) in gvs {
        let served: Vec<&ResourceInfo> = resources
            .iter()
            .filter(|r| r.group == g && r.version == v)
            .collect();
        let doc = document(g, v, &served, server_version);
        let hash = content_hash(&serde_json::to_vec(&doc).unwrap_or_default());
        paths.insert(
            gv_path(g, v),
            json!({"serverRelativeURL": relative_url(g, v, &hash)}),
        );
    }
    value_response(StatusCode::OK, &json!({"paths": paths}))
}

/// An upper-case hex digest of the document, used as its `hash` (the real server uses SHA-512;
/// clients only compare it).
fn content_hash(bytes: &[u8]) -> String {
    // Two FNV-1a 64 passes with different offsets: stable across builds and platforms.
    let fnv = |offset: u64| {
        bytes.iter().fold(offset, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01B3)
        })
    };
    format!(
        "{:016X}{:016X}",
        fnv(0xCBF2_9CE4_8422_2325),
        fnv(0x8422_2325_CBF2_9CE4)
    )
}

/// `CoreV1`, `AppsV1`, `CoordinationV1`, `ApiextensionsV1`, `ExampleComV1`: the group-version
/// part of the real server's operation ids.
fn op_prefix(group: &str, version: &str) -> String {
    let group = if group.is_empty() {
        "core"
    } else {
        group.strip_suffix(".k8s.io").unwrap_or(group)
    };
    let mut out = String::new();
    for part in group.split(['.', '-']).chain(std::iter::once(version)) {
        let mut cs = part.chars();
        if let Some(c) = cs.next() {
            out.extend(c.to_uppercase());
            out.push_str(cs.as_str());
        }
    }
    out
}

fn param(name: &str, location: &str, ty: &str, description: &str) -> Value {
    let mut p = json!({"name": name, "in": location, "description": description,
        "schema": {"type": ty, "uniqueItems": true}});
    if location == "path" {
        p["required"] = json!(true);
    }
    p
}

fn query_params(names: &[&str]) -> Vec<Value> {
    names
        .iter()
        .map(|n| {
            let (ty, desc) = match *n {
                "allowWatchBookmarks" | "watch" | "sendInitialEvents" | "force"
                | "ignoreStoreReadErrorWithClusterBreakingPotential" | "orphanDependents" => {
                    ("boolean", "")
                }
                "limit" | "timeoutSeconds" | "gracePeriodSeconds" => ("integer", ""),
                "fieldValidation" => (
                    "string",
                    "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: Ignore, Warn, Strict.",
                ),
                _ => ("string", ""),
            };
            param(n, "query", ty, desc)
        })
        .collect()
}

const LIST_PARAMS: &[&str] = &[
    "allowWatchBookmarks",
    "continue",
    "fieldSelector",
    "labelSelector",
    "limit",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
    "watch",
];
const WRITE_PARAMS: &[&str] = &["dryRun", "fieldManager", "fieldValidation"];
const PATCH_PARAMS: &[&str] = &["dryRun", "fieldManager", "fieldValidation", "force"];
const DELETE_PARAMS: &[&str] = &[
    "dryRun",
    "gracePeriodSeconds",
    "ignoreStoreReadErrorWithClusterBreakingPotential",
    "orphanDependents",
    "propagationPolicy",
];

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

fn operation(
    op_id: String,
    action: &str,
    gvk: &Value,
    params: Vec<Value>,
    body: Option<Vec<&str>>,
) -> Value {
    let mut op = json!({
        "operationId": op_id,
        "parameters": params,
        "responses": {"200": {"description": "OK"}, "401": {"description": "Unauthorized"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
    });
    if let Some(types) = body {
        let content: Map<String, Value> = types
            .into_iter()
            .map(|t| (t.to_string(), json!({"schema": {"type": "object"}})))
            .collect();
        op["requestBody"] = json!({"content": content, "required": true});
    }
    op
}

fn patch_types(info: &ResourceInfo) -> Vec<&'static str> {
    let mut t = vec![
        "application/apply-patch+yaml",
        "application/json-patch+json",
        "application/merge-patch+json",
    ];
    if !info.custom {
        t.push("application/strategic-merge-patch+json");
    }
    t
}

/// The OpenAPI 3.0 document of one group version.
fn document(
    group: &str,
    version: &str,
    resources: &[&ResourceInfo],
    server_version: &str,
) -> Value {
    let prefix = op_prefix(group, version);
    let base = format!("/{}", gv_path(group, version));
    let pretty = param(
        "pretty",
        "query",
        "string",
        "If 'true', then the output is pretty printed.",
    );
    let mut paths = Map::new();
    for r in resources {
        let kind_gvk = gvk(group, version, &r.kind);
        let scope = if r.namespaced { "Namespaced" } else { "" };
        let (collection, mut common) = if r.namespaced {
            (
                format!("{base}/namespaces/{{namespace}}/{}", r.resource),
                vec![param(
                    "namespace",
                    "path",
                    "string",
                    "object name and auth scope, such as for teams and projects",
                )],
            )
        } else {
            (format!("{base}/{}", r.resource), Vec::new())
        };
        common.push(pretty.clone());
        let all = |p: &[&str]| query_params(p);
        let mut deletecollection = all(DELETE_PARAMS);
        deletecollection.extend(all(LIST_PARAMS));
        paths.insert(
            collection.clone(),
            json!({
                "get": operation(format!("list{prefix}{scope}{}", r.kind), "list", &kind_gvk, all(LIST_PARAMS), None),
                "post": operation(format!("create{prefix}{scope}{}", r.kind), "post", &kind_gvk, all(WRITE_PARAMS), Some(vec!["*/*"])),
                "delete": operation(format!("deletecollection{prefix}{scope}{}", r.kind), "deletecollection", &kind_gvk, deletecollection, Some(vec!["*/*"])),
                "parameters": common,
            }),
        );
        if r.namespaced {
            paths.insert(
                format!("{base}/{}", r.resource),
                json!({
                    "get": operation(format!("list{prefix}{}ForAllNamespaces", r.kind), "list", &kind_gvk, all(LIST_PARAMS), None),
                    "parameters": [pretty.clone()],
                }),
            );
        }
        let mut item_params = vec![param(
            "name",
            "path",
            "string",
            &format!("name of the {}", r.kind),
        )];
        item_params.extend(common.iter().cloned());
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({
                "get": operation(format!("read{prefix}{scope}{}", r.kind), "get", &kind_gvk, Vec::new(), None),
                "put": operation(format!("replace{prefix}{scope}{}", r.kind), "put", &kind_gvk, all(WRITE_PARAMS), Some(vec!["*/*"])),
                "patch": operation(format!("patch{prefix}{scope}{}", r.kind), "patch", &kind_gvk, all(PATCH_PARAMS), Some(patch_types(r))),
                "delete": operation(format!("delete{prefix}{scope}{}", r.kind), "delete", &kind_gvk, all(DELETE_PARAMS), Some(vec!["*/*"])),
                "parameters": item_params,
            }),
        );
        for sub in &r.subresources {
            let sub_camel = {
                let mut cs = sub.chars();
                cs.next()
                    .map(|c| c.to_uppercase().collect::<String>() + cs.as_str())
                    .unwrap_or_default()
            };
            let path = format!("{collection}/{{name}}/{sub}");
            let id = |verb: &str| format!("{verb}{prefix}{scope}{}{sub_camel}", r.kind);
            let item = match sub.as_str() {
                "eviction" => json!({
                    "post": operation(id("create"), "post", &gvk("policy", "v1", "Eviction"), all(WRITE_PARAMS), Some(vec!["*/*"])),
                }),
                "binding" => json!({
                    "post": operation(id("create"), "post", &gvk("", "v1", "Binding"), all(WRITE_PARAMS), Some(vec!["*/*"])),
                }),
                "finalize" => json!({
                    "put": operation(id("replace"), "put", &kind_gvk, all(WRITE_PARAMS), Some(vec!["*/*"])),
                }),
                _ => {
                    let sub_gvk = if sub == "scale" {
                        gvk("autoscaling", "v1", "Scale")
                    } else {
                        kind_gvk.clone()
                    };
                    // Scale is a built-in kind: strategic merge applies to it for any resource.
                    let types = if sub == "scale" {
                        patch_types(&ResourceInfo {
                            custom: false,
                            ..(*r).clone()
                        })
                    } else {
                        patch_types(r)
                    };
                    json!({
                        "get": operation(id("read"), "get", &sub_gvk, Vec::new(), None),
                        "put": operation(id("replace"), "put", &sub_gvk, all(WRITE_PARAMS), Some(vec!["*/*"])),
                        "patch": operation(id("patch"), "patch", &sub_gvk, all(PATCH_PARAMS), Some(types)),
                    })
                }
            };
            let mut item = item;
            item["parameters"] = json!(item_params);
            paths.insert(path, item);
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": server_version},
        "paths": paths,
        "components": {"schemas": {}},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    #[test]
    fn patch_operations_declare_field_validation() {
        let reg = Registry::new();
        let all = reg.all();
        let pods: Vec<&ResourceInfo> = all.iter().filter(|r| r.group.is_empty()).collect();
        let doc = document("", "v1", &pods, "v1.33.4");
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Pod");
        assert_eq!(patch["operationId"], "patchCoreV1NamespacedPod");
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
        );
        assert!(
            patch["requestBody"]["content"]
                .get("application/strategic-merge-patch+json")
                .is_some()
        );
        let evict = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/eviction"]["post"];
        assert_eq!(evict["x-kubernetes-group-version-kind"]["group"], "policy");
        assert!(doc["paths"].get("/api/v1/nodes/{name}/status").is_some());
        assert_eq!(op_prefix("coordination.k8s.io", "v1"), "CoordinationV1");
        assert_eq!(op_prefix("example.com", "v1alpha1"), "ExampleComV1alpha1");
    }
}
