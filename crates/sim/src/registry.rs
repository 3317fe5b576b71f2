//! The resources the API server serves: the built-in ones and those of registered CRDs.

use crate::json::Ptr;
use std::sync::RwLock;

use serde_json::{Value, json};

use crate::store::ResourceKey;

/// One served resource at one version.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceInfo {
    pub group: String,
    pub version: String,
    /// Plural name, as in the URL.
    pub resource: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Subresources served: "status", "scale", "eviction", "binding", "finalize".
    pub subresources: Vec<String>,
    /// Custom resources keep their CRD's printer columns for Table output.
    pub printer_columns: Vec<Value>,
    pub custom: bool,
}

impl ResourceInfo {
    pub fn key(&self) -> ResourceKey {
        ResourceKey::new(&self.group, &self.resource)
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.iter().any(|s| s == sub)
    }

    /// `deployments.apps` style name used in error messages.
    pub fn qualified(&self) -> String {
        self.key().to_string()
    }
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

type Builtin = (
    &'static str, // group
    &'static str, // version
    &'static str, // resource
    &'static str, // kind
    bool,         // namespaced
    &'static str, // short names, comma separated
    &'static str, // subresources, comma separated
);

const BUILTINS: &[Builtin] = &[
    (
        "",
        "v1",
        "namespaces",
        "Namespace",
        false,
        "ns",
        "status,finalize",
    ),
    ("", "v1", "nodes", "Node", false, "no", "status"),
    (
        "",
        "v1",
        "pods",
        "Pod",
        true,
        "po",
        "status,eviction,binding",
    ),
    ("", "v1", "services", "Service", true, "svc", "status"),
    ("", "v1", "endpoints", "Endpoints", true, "ep", ""),
    ("", "v1", "configmaps", "ConfigMap", true, "cm", ""),
    ("", "v1", "secrets", "Secret", true, "", ""),
    ("", "v1", "events", "Event", true, "ev", ""),
    (
        "",
        "v1",
        "serviceaccounts",
        "ServiceAccount",
        true,
        "sa",
        "",
    ),
    (
        "apps",
        "v1",
        "deployments",
        "Deployment",
        true,
        "deploy",
        "status,scale",
    ),
    (
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        true,
        "rs",
        "status,scale",
    ),
    (
        "apps",
        "v1",
        "statefulsets",
        "StatefulSet",
        true,
        "sts",
        "status,scale",
    ),
    (
        "apps",
        "v1",
        "daemonsets",
        "DaemonSet",
        true,
        "ds",
        "status",
    ),
    ("batch", "v1", "jobs", "Job", true, "", "status"),
    (
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        true,
        "pdb",
        "status",
    ),
    ("coordination.k8s.io", "v1", "leases", "Lease", true, "", ""),
    (
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        "crd,crds",
        "status",
    ),
];

/// Categories used by `kubectl get all`.
fn categories(group: &str, resource: &str) -> Vec<String> {
    let all = matches!(
        (group, resource),
        ("", "pods")
            | ("", "services")
            | ("apps", "deployments")
            | ("apps", "replicasets")
            | ("apps", "statefulsets")
            | ("apps", "daemonsets")
            | ("batch", "jobs")
    );
    if all {
        vec!["all".to_string()]
    } else {
        Vec::new()
    }
}

fn split(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

/// The set of served resources. Built-ins are fixed; CRDs add and remove theirs.
pub struct Registry {
    resources: RwLock<Vec<ResourceInfo>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub fn new() -> Self {
        let resources = BUILTINS
            .iter()
            .map(|(g, v, r, k, ns, short, subs)| ResourceInfo {
                group: g.to_string(),
                version: v.to_string(),
                resource: r.to_string(),
                singular: k.to_lowercase(),
                kind: k.to_string(),
                namespaced: *ns,
                short_names: split(short),
                categories: categories(g, r),
                subresources: split(subs),
                printer_columns: Vec::new(),
                custom: false,
            })
            .collect();
        Registry {
            resources: RwLock::new(resources),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<ResourceInfo>> {
        self.resources.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn lookup(&self, group: &str, version: &str, resource: &str) -> Option<ResourceInfo> {
        self.read()
            .iter()
            .find(|r| r.group == group && r.version == version && r.resource == resource)
            .cloned()
    }

    /// Resource for a kind (used when loading manifests).
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<ResourceInfo> {
        self.read()
            .iter()
            .find(|r| r.api_version() == api_version && r.kind == kind)
            .cloned()
    }

    pub fn all(&self) -> Vec<ResourceInfo> {
        self.read().clone()
    }

    /// Groups with their versions, in registration order (core group first).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for r in self.read().iter() {
            match out.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, versions)) => {
                    if !versions.contains(&r.version) {
                        versions.push(r.version.clone());
                    }
                }
                None => out.push((r.group.clone(), vec![r.version.clone()])),
            }
        }
        out
    }

    /// Registers the served versions of a CRD (replacing earlier registrations of it).
    /// Returns the resource infos added.
    pub fn register_crd(&self, crd: &Value) -> Result<Vec<ResourceInfo>, String> {
        let spec = crd.get("spec").ok_or("spec: Required value")?;
        let group = spec
            .get("group")
            .and_then(Value::as_str)
            .ok_or("spec.group: Required value")?;
        let names = spec.get("names").ok_or("spec.names: Required value")?;
        let plural = names
            .get("plural")
            .and_then(Value::as_str)
            .ok_or("spec.names.plural: Required value")?;
        let kind = names
            .get("kind")
            .and_then(Value::as_str)
            .ok_or("spec.names.kind: Required value")?;
        let singular = names
            .get("singular")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| kind.to_lowercase());
        let namespaced = match spec.get("scope").and_then(Value::as_str) {
            Some("Namespaced") => true,
            Some("Cluster") => false,
            other => {
                return Err(format!(
                    "spec.scope: Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\""
                ));
            }
        };
        let str_list = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        let versions = spec
            .get("versions")
            .and_then(Value::as_array)
            .filter(|v| !v.is_empty())
            .ok_or("spec.versions: Invalid value: must have exactly one version marked as storage version")?;
        let mut added = Vec::new();
        for v in versions {
            let served = v.get("served").and_then(Value::as_bool).unwrap_or(false);
            let Some(name) = v.get("name").and_then(Value::as_str) else {
                return Err("spec.versions[].name: Required value".into());
            };
            if !served {
                continue;
            }
            let mut subresources = Vec::new();
            if v.ptr("/subresources/status").is_some() {
                subresources.push("status".to_string());
            }
            added.push(ResourceInfo {
                group: group.to_string(),
                version: name.to_string(),
                resource: plural.to_string(),
                singular: singular.clone(),
                kind: kind.to_string(),
                namespaced,
                short_names: str_list(names.get("shortNames")),
                categories: str_list(names.get("categories")),
                subresources,
                printer_columns: v
                    .get("additionalPrinterColumns")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
                custom: true,
            });
        }
        let mut all = self.resources.write().unwrap_or_else(|p| p.into_inner());
        all.retain(|r| !(r.custom && r.group == group && r.resource == plural));
        all.extend(added.iter().cloned());
        Ok(added)
    }

    /// Removes a CRD's resources; returns the key of the removed resource, if any.
    pub fn unregister_crd(&self, group: &str, plural: &str) -> Option<ResourceKey> {
        let mut all = self.resources.write().unwrap_or_else(|p| p.into_inner());
        let before = all.len();
        all.retain(|r| !(r.custom && r.group == group && r.resource == plural));
        (all.len() != before).then(|| ResourceKey::new(group, plural))
    }
}

/// The `APIResource` discovery entries of one group version, subresources included.
pub fn api_resources(resources: &[ResourceInfo]) -> Vec<Value> {
    let mut out = Vec::new();
    for r in resources {
        let mut entry = json!({
            "name": r.resource,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": VERBS,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        out.push(entry);
        for sub in &r.subresources {
            let name = format!("{}/{}", r.resource, sub);
            let e = match sub.as_str() {
                "eviction" => json!({"name": name, "singularName": "", "namespaced": r.namespaced,
                    "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]}),
                "binding" => json!({"name": name, "singularName": "", "namespaced": r.namespaced,
                    "kind": "Binding", "verbs": ["create"]}),
                "scale" => json!({"name": name, "singularName": "", "namespaced": r.namespaced,
                    "group": "autoscaling", "version": "v1", "kind": "Scale",
                    "verbs": ["get", "patch", "update"]}),
                "finalize" => json!({"name": name, "singularName": "", "namespaced": r.namespaced,
                    "kind": r.kind, "verbs": ["update"]}),
                _ => json!({"name": name, "singularName": "", "namespaced": r.namespaced,
                    "kind": r.kind, "verbs": ["get", "patch", "update"]}),
            };
            out.push(e);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_and_crds() {
        let reg = Registry::new();
        let pods = reg.lookup("", "v1", "pods").unwrap();
        assert!(pods.namespaced && pods.has_subresource("eviction"));
        assert_eq!(
            reg.by_kind("apps/v1", "Deployment").unwrap().resource,
            "deployments"
        );
        assert!(reg.lookup("apps", "v1", "widgets").is_none());

        let crd = json!({"spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}}},
                         {"name": "v0", "served": false, "storage": false}]}});
        let added = reg.register_crd(&crd).unwrap();
        assert_eq!(added.len(), 1);
        let w = reg.lookup("example.com", "v1", "widgets").unwrap();
        assert!(w.custom && w.has_subresource("status") && w.singular == "widget");
        assert!(reg.lookup("example.com", "v0", "widgets").is_none());
        assert!(
            reg.groups()
                .iter()
                .any(|(g, v)| g == "example.com" && v == &["v1"])
        );
        assert!(reg.unregister_crd("example.com", "widgets").is_some());
        assert!(reg.lookup("example.com", "v1", "widgets").is_none());

        let bad = json!({"spec": {"group": "x.io", "scope": "Galaxy",
            "names": {"plural": "as", "kind": "A"}, "versions": [{"name": "v1", "served": true}]}});
        assert!(reg.register_crd(&bad).unwrap_err().contains("spec.scope"));
    }

    #[test]
    fn eviction_is_advertised_like_the_real_server() {
        let reg = Registry::new();
        let core: Vec<_> = reg
            .all()
            .into_iter()
            .filter(|r| r.group.is_empty())
            .collect();
        let list = api_resources(&core);
        let ev = list.iter().find(|e| e["name"] == "pods/eviction").unwrap();
        assert_eq!(ev["group"], "policy");
        assert_eq!(ev["version"], "v1");
        assert_eq!(ev["kind"], "Eviction");
    }
}
