//! Defaulting, create-time preparation and validation, as kube-apiserver's registry strategies and
//! admission plugins (DefaultTolerationSeconds) do them. Only the rules clients can observe are
//! modelled; each is named after the real one.

use crate::json::{Field, Json, Ptr};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::registry::ResourceInfo;
use crate::server::ApiServer;

/// The taints the node lifecycle controller puts on unhealthy nodes; pods tolerate them for 300 s
/// by default (admission plugin DefaultTolerationSeconds).
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;

fn is(info: &ResourceInfo, group: &str, resource: &str) -> bool {
    info.group == group && info.resource == resource
}

/// A lowercase RFC 1123 subdomain (most object names).
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A lowercase RFC 1123 label (namespaces, services).
pub fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && !s.contains('.') && is_dns_subdomain(s)
}

/// Object validation that clients can observe (422 Invalid).
pub fn validate(info: &ResourceInfo, obj: &Value) -> Result<(), ApiError> {
    let name = obj
        .ptr("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut causes: Vec<(String, String)> = Vec::new();
    let label_names = is(info, "", "namespaces") || is(info, "", "services");
    let ok = if info.custom || is(info, "", "events") {
        // Custom resources and events allow any path-segment-safe name.
        !name.is_empty()
            && !name.contains('/')
            && !name.contains('%')
            && name != "."
            && name != ".."
    } else if label_names {
        is_dns_label(name)
    } else {
        is_dns_subdomain(name)
    };
    if !ok {
        let what = if label_names {
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        } else {
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        };
        causes.push((
            "metadata.name".into(),
            format!("Invalid value: {name:?}: {what}"),
        ));
    }
    if let Some(labels) = obj.ptr("/metadata/labels")
        && !labels.is_null()
    {
        match labels.as_object() {
            Some(m) => {
                for (k, v) in m {
                    if !v.is_string() {
                        causes.push((
                            format!("metadata.labels.{k}"),
                            "Invalid value: label values must be strings".into(),
                        ));
                    }
                }
            }
            None => causes.push((
                "metadata.labels".into(),
                "Invalid value: must be a map of strings".into(),
            )),
        }
    }
    if is(info, "", "pods") {
        let containers = obj.ptr("/spec/containers").and_then(Value::as_array);
        if containers.is_none_or(|c| c.is_empty()) {
            causes.push(("spec.containers".into(), "Required value".into()));
        }
        for (i, c) in containers.into_iter().flatten().enumerate() {
            if c.field("name")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                causes.push((
                    format!("spec.containers[{i}].name"),
                    "Required value".into(),
                ));
            }
            if c.field("image")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                causes.push((
                    format!("spec.containers[{i}].image"),
                    "Required value".into(),
                ));
            }
        }
    }
    if matches!(info.group.as_str(), "apps")
        && let Some(r) = obj.ptr("/spec/replicas")
        && !r.is_null()
        && r.as_i64().is_none_or(|r| r < 0)
    {
        causes.push((
            "spec.replicas".into(),
            format!("Invalid value: {r}: must be greater than or equal to 0"),
        ));
    }
    if is(info, "policy", "poddisruptionbudgets")
        && obj.ptr("/spec/minAvailable").is_some_and(|v| !v.is_null())
        && obj
            .ptr("/spec/maxUnavailable")
            .is_some_and(|v| !v.is_null())
    {
        causes.push((
            "spec".into(),
            "Invalid value: minAvailable and maxUnavailable cannot be both set".into(),
        ));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&info.kind, name, &info.group, &causes))
    }
}

/// Update rules beyond [`validate`]: fields the real server keeps immutable.
pub fn validate_update(info: &ResourceInfo, old: &Value, new: &Value) -> Result<(), ApiError> {
    let name = new
        .ptr("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if is(info, "", "pods") {
        let old_node = old
            .ptr("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        let new_node = new
            .ptr("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !old_node.is_empty() && old_node != new_node {
            return Err(ApiError::invalid(
                "Pod",
                name,
                "",
                &[("spec".into(), "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)".into())],
            ));
        }
    }
    if info.group == "apps"
        && !is(info, "apps", "daemonsets")
        && old.ptr("/spec/selector") != new.ptr("/spec/selector")
    {
        return Err(ApiError::invalid(
            &info.kind,
            name,
            &info.group,
            &[(
                "spec.selector".into(),
                "Invalid value: field is immutable".into(),
            )],
        ));
    }
    Ok(())
}

fn set_default(obj: &mut Value, ptr: &str, v: Value) {
    if obj.ptr(ptr).is_none_or(Value::is_null) {
        let mut cur = &mut *obj;
        let parts: Vec<&str> = ptr.trim_start_matches('/').split('/').collect();
        for (i, p) in parts.iter().enumerate() {
            if !cur.is_object() {
                *cur = json!({});
            }
            let last = i + 1 == parts.len();
            let Some(map) = cur.as_object_mut() else {
                return;
            };
            if last {
                map.insert((*p).to_string(), v);
                return;
            }
            cur = map.entry((*p).to_string()).or_insert_with(|| json!({}));
        }
    }
}

/// Pod spec defaults (SetDefaults_PodSpec and SetDefaults_Container).
fn default_pod_spec(spec: &mut Value) {
    set_default(spec, "/restartPolicy", json!("Always"));
    set_default(spec, "/terminationGracePeriodSeconds", json!(30));
    set_default(spec, "/dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "/schedulerName", json!("default-scheduler"));
    set_default(spec, "/securityContext", json!({}));
    set_default(spec, "/enableServiceLinks", json!(true));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                let image = c
                    .field("image")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let tag = image
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
                    .split_once(':')
                    .map(|(_, t)| t.to_string());
                let policy = if image.contains('@') || tag.as_deref().is_some_and(|t| t != "latest")
                {
                    "IfNotPresent"
                } else {
                    "Always"
                };
                set_default(c, "/imagePullPolicy", json!(policy));
                set_default(c, "/terminationMessagePath", json!("/dev/termination-log"));
                set_default(c, "/terminationMessagePolicy", json!("File"));
                set_default(c, "/resources", json!({}));
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        set_default(p, "/protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

fn qos_class(spec: &Value) -> &'static str {
    let containers = spec
        .field("containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let req = c.ptr("/resources/requests").and_then(Value::as_object);
        let lim = c.ptr("/resources/limits").and_then(Value::as_object);
        any |= req.is_some_and(|r| !r.is_empty()) || lim.is_some_and(|l| !l.is_empty());
        let full = |m: Option<&serde_json::Map<String, Value>>| {
            m.is_some_and(|m| m.contains_key("cpu") && m.contains_key("memory"))
        };
        guaranteed &= full(lim)
            && req.is_none_or(|r| r.iter().all(|(k, v)| lim.and_then(|l| l.get(k)) == Some(v)));
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Adds the default NoExecute tolerations for not-ready and unreachable nodes, unless present.
fn default_tolerations(spec: &mut Value) {
    let mut tols = spec
        .field("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let has = tols.iter().any(|t| {
            let k = t.field("key").and_then(Value::as_str);
            let e = t.field("effect").and_then(Value::as_str);
            (k == Some(key)
                || (k.is_none() && t.field("operator").and_then(Value::as_str) == Some("Exists")))
                && (e.is_none() || e == Some("NoExecute"))
        });
        if !has {
            tols.push(
                json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                "tolerationSeconds": DEFAULT_TOLERATION_SECONDS}),
            );
        }
    }
    spec["tolerations"] = Value::Array(tols);
}

fn default_template(obj: &mut Value) {
    if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
        default_pod_spec(spec);
    }
}

/// PrepareForCreate and defaulting: reset status where the real server does, fill defaults.
pub fn prepare_for_create(server: &ApiServer, info: &ResourceInfo, obj: &mut Value) {
    let has_status = info.has_subresource("status");
    match (info.group.as_str(), info.resource.as_str()) {
        ("", "pods") => {
            if let Some(spec) = obj.get_mut("spec") {
                default_pod_spec(spec);
                default_tolerations(spec);
                set_default(spec, "/priority", json!(0));
                set_default(spec, "/serviceAccountName", json!("default"));
            }
            let qos = obj.field("spec").map(qos_class).unwrap_or("BestEffort");
            obj["status"] = json!({"phase": "Pending", "qosClass": qos});
        }
        ("", "nodes") => {
            // Nodes may set their status at creation (kubelet registration).
            set_default(obj, "/spec", json!({}));
        }
        ("", "namespaces") => {
            set_default(obj, "/spec/finalizers", json!(["kubernetes"]));
            obj["status"] = json!({"phase": "Active"});
            let name = obj
                .ptr("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            // The NamespaceDefaultLabelName feature: always set, never editable.
            if !obj["metadata"]["labels"].is_object() {
                obj["metadata"]["labels"] = json!({});
            }
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
        }
        ("", "services") => {
            set_default(obj, "/spec/type", json!("ClusterIP"));
            set_default(obj, "/spec/sessionAffinity", json!("None"));
            let headless = obj.ptr("/spec/clusterIP").and_then(Value::as_str) == Some("None");
            if !headless
                && obj
                    .ptr("/spec/clusterIP")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
            {
                let ip = server.ids().cluster_ip();
                obj["spec"]["clusterIP"] = json!(ip);
                obj["spec"]["clusterIPs"] = json!([ip]);
            }
            if let Some(ports) = obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
                for p in ports {
                    set_default(p, "/protocol", json!("TCP"));
                    if let Some(port) = p.field("port").cloned() {
                        set_default(p, "/targetPort", port);
                    }
                }
            }
            obj["status"] = json!({"loadBalancer": {}});
        }
        ("apps", "deployments") => {
            set_default(obj, "/spec/replicas", json!(1));
            set_default(
                obj,
                "/spec/strategy",
                json!({"type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
            );
            set_default(obj, "/spec/revisionHistoryLimit", json!(10));
            set_default(obj, "/spec/progressDeadlineSeconds", json!(600));
            default_template(obj);
            obj["status"] = json!({});
        }
        ("apps", "replicasets") => {
            set_default(obj, "/spec/replicas", json!(1));
            default_template(obj);
            obj["status"] = json!({"replicas": 0});
        }
        ("apps", "statefulsets") => {
            set_default(obj, "/spec/replicas", json!(1));
            set_default(obj, "/spec/podManagementPolicy", json!("OrderedReady"));
            set_default(
                obj,
                "/spec/updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            );
            set_default(obj, "/spec/revisionHistoryLimit", json!(10));
            default_template(obj);
            obj["status"] = json!({"replicas": 0, "availableReplicas": 0});
        }
        ("apps", "daemonsets") => {
            set_default(
                obj,
                "/spec/updateStrategy",
                json!({"type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
            set_default(obj, "/spec/revisionHistoryLimit", json!(10));
            default_template(obj);
            obj["status"] = json!({"currentNumberScheduled": 0, "numberMisscheduled": 0,
                "desiredNumberScheduled": 0, "numberReady": 0});
        }
        ("batch", "jobs") => {
            set_default(obj, "/spec/parallelism", json!(1));
            set_default(obj, "/spec/completions", json!(1));
            set_default(obj, "/spec/backoffLimit", json!(6));
            default_template(obj);
            obj["status"] = json!({});
        }
        ("policy", "poddisruptionbudgets") => {
            obj["status"] = json!({"disruptionsAllowed": 0, "currentHealthy": 0,
                "desiredHealthy": 0, "expectedPods": 0});
        }
        _ if has_status && info.custom => {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        _ => {}
    }
}

/// Keeps the singular and plural forms of a field in step, as the v1 conversion functions of the
/// real server do on every write: `status.podIP`/`podIPs`, `status.hostIP`/`hostIPs`,
/// `spec.podCIDR`/`podCIDRs`.
/// The (section, singular, plural, plural items are `{"ip": …}`) fields [`normalize`] keeps in step.
fn paired_fields(
    info: &ResourceInfo,
) -> &'static [(&'static str, &'static str, &'static str, bool)] {
    match (info.group.as_str(), info.resource.as_str()) {
        ("", "pods") => &[
            ("status", "podIP", "podIPs", true),
            ("status", "hostIP", "hostIPs", true),
        ],
        ("", "nodes") => &[("spec", "podCIDR", "podCIDRs", false)],
        _ => &[],
    }
}

/// Whether [`normalize`] would change `obj`.
pub fn needs_normalize<V: Json>(info: &ResourceInfo, obj: &V) -> bool {
    paired_fields(info)
        .iter()
        .any(|(section, one, many, wrapped)| {
            let Some(sec) = obj.field(section).filter(|s| s.is_object()) else {
                return false;
            };
            let single = sec
                .field(one)
                .and_then(Json::as_str)
                .is_some_and(|s| !s.is_empty());
            let first = sec
                .field(many)
                .and_then(Json::as_array)
                .and_then(|a| a.first())
                .map(|v| {
                    if *wrapped {
                        v.field("ip").and_then(Json::as_str).unwrap_or("")
                    } else {
                        v.as_str().unwrap_or("")
                    }
                });
            match (single, first) {
                (true, None) => true,
                (false, Some(ip)) => !ip.is_empty(),
                _ => false,
            }
        })
}

pub fn normalize(info: &ResourceInfo, obj: &mut Value) {
    for (section, one, many, wrapped) in paired_fields(info) {
        let Some(sec) = obj.get_mut(*section).and_then(Value::as_object_mut) else {
            continue;
        };
        let single = sec
            .get(*one)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let first = sec
            .get(*many)
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .map(|v| {
                if *wrapped {
                    v.field("ip")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                } else {
                    v.as_str().unwrap_or("").to_string()
                }
            });
        match (single, first) {
            (Some(ip), None) => {
                let item = if *wrapped {
                    json!({"ip": ip})
                } else {
                    json!(ip)
                };
                sec.insert((*many).to_string(), json!([item]));
            }
            (None, Some(ip)) if !ip.is_empty() => {
                sec.insert((*one).to_string(), json!(ip));
            }
            _ => {}
        }
    }
}

/// CRD validation beyond what the registry checks when registering.
pub fn validate_crd(obj: &Value) -> Result<(), ApiError> {
    let name = obj
        .ptr("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let group = obj.ptr("/spec/group").and_then(Value::as_str).unwrap_or("");
    let plural = obj
        .ptr("/spec/names/plural")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut causes = Vec::new();
    if group.is_empty() || plural.is_empty() {
        causes.push((
            "spec".to_string(),
            "Required value: spec.group and spec.names.plural are required".to_string(),
        ));
    } else if name != format!("{plural}.{group}") {
        causes.push((
            "metadata.name".to_string(),
            format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let versions = obj.ptr("/spec/versions").and_then(Value::as_array);
    let storage = versions.map(|v| {
        v.iter()
            .filter(|x| x.field("storage").and_then(Value::as_bool) == Some(true))
            .count()
    });
    if storage != Some(1) {
        causes.push((
            "spec.versions".to_string(),
            "Invalid value: must have exactly one version marked as storage version".to_string(),
        ));
    }
    if !matches!(
        obj.ptr("/spec/scope").and_then(Value::as_str),
        Some("Namespaced" | "Cluster")
    ) {
        causes.push((
            "spec.scope".to_string(),
            "Unsupported value: supported values: \"Cluster\", \"Namespaced\"".to_string(),
        ));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "CustomResourceDefinition",
            name,
            "apiextensions.k8s.io",
            &causes,
        ))
    }
}

/// The status the apiextensions controllers give an accepted CRD.
pub fn crd_status(obj: &mut Value) {
    let names = obj.ptr("/spec/names").cloned().unwrap_or(json!({}));
    let versions: Vec<Value> = obj
        .ptr("/spec/versions")
        .and_then(Value::as_array)
        .map(|v| v.iter().filter_map(|x| x.field("name").cloned()).collect())
        .unwrap_or_default();
    obj["status"] = json!({
        "acceptedNames": names,
        "storedVersions": versions,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found"},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
        ],
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plural_forms_follow_singular_ones() {
        let reg = crate::registry::Registry::new();
        let pods = reg.lookup("", "v1", "pods").unwrap();
        let mut p = json!({"status": {"podIP": "10.0.0.5", "hostIPs": [{"ip": "192.168.0.1"}]}});
        normalize(&pods, &mut p);
        assert_eq!(p["status"]["podIPs"], json!([{"ip": "10.0.0.5"}]));
        assert_eq!(p["status"]["hostIP"], "192.168.0.1");
        let nodes = reg.lookup("", "v1", "nodes").unwrap();
        let mut n = json!({"spec": {"podCIDR": "10.244.1.0/24"}});
        normalize(&nodes, &mut n);
        assert_eq!(n["spec"]["podCIDRs"], json!(["10.244.1.0/24"]));
    }

    #[test]
    fn names() {
        assert!(is_dns_subdomain("node-1.example.com"));
        assert!(!is_dns_subdomain("Node-1"));
        assert!(!is_dns_subdomain("-a"));
        assert!(is_dns_label("kube-system"));
        assert!(!is_dns_label("a.b"));
    }

    #[test]
    fn qos() {
        assert_eq!(
            qos_class(&json!({"containers": [{"name": "a"}]})),
            "BestEffort"
        );
        assert_eq!(
            qos_class(&json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]})),
            "Burstable"
        );
        assert_eq!(
            qos_class(
                &json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]})
            ),
            "Guaranteed"
        );
    }

    #[test]
    fn tolerations_added_once() {
        let mut spec = json!({"tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10}]});
        default_tolerations(&mut spec);
        let t = spec["tolerations"].as_array().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0]["tolerationSeconds"], 10);
        assert_eq!(t[1]["key"], "node.kubernetes.io/not-ready");
        assert_eq!(t[1]["tolerationSeconds"], 300);
    }
}
