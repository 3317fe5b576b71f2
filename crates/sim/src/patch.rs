//! The three PATCH content types of the Kubernetes API server, applied to `serde_json::Value` objects:
//!
//! * `application/merge-patch+json`: RFC 7386 JSON merge patch ([`merge_patch`]);
//! * `application/json-patch+json`: RFC 6902 JSON patch ([`json_patch`]);
//! * `application/strategic-merge-patch+json`: Kubernetes strategic merge patch ([`strategic_merge_patch`]),
//!   defined for built-in kinds only ([`supports_strategic`]).
//!
//! Strategic merge patch is merge patch plus per-field list strategies (see [`field_strategy`]) and the
//! `$patch`, `$retainKeys`, `$setElementOrder/<field>` and `$deleteFromPrimitiveList/<field>` directives
//! described in k8s.io/apimachinery/pkg/util/strategicpatch. Every patch function either succeeds or
//! leaves the target untouched.

use serde_json::{Map, Value};

/// Why a patch could not be applied. The caller maps every variant to a 4xx answer.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The patch document has the wrong shape (not an object, a directive of the wrong type, a list
    /// element without its merge key, ...).
    #[error("malformed patch: {0}")]
    Malformed(String),
    /// An RFC 6902 operation failed (a `test` did not match, a path does not exist, ...).
    #[error("json patch failed: {0}")]
    JsonPatch(String),
    /// A well-formed request that this implementation (like Kubernetes) does not support.
    #[error("unsupported patch: {0}")]
    Unsupported(String),
}

type Obj = Map<String, Value>;

const PATCH_DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// RFC 7386 JSON merge patch (application/merge-patch+json). null deletes keys, objects merge recursively, anything else replaces.
/// A non-object patch replaces the whole target.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Obj::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.shift_remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// The result of [`merge_patch`] of `patch` onto a copy of `target`, built without copying the
/// parts of `target` the patch replaces or removes (a status patch does not copy the old status
/// lists it overwrites).
pub fn merge_patched(target: &Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    let Value::Object(t) = target else {
        let mut out = Value::Object(Obj::new());
        merge_patch(&mut out, patch);
        return out;
    };
    // Exactly the keys of the result: spare capacity in a map costs ~128 bytes per slot, kept for
    // as long as the object version lives.
    let added = p
        .iter()
        .filter(|(k, v)| !v.is_null() && !t.contains_key(*k))
        .count();
    let mut out = Obj::with_capacity(t.len() + added);
    for (key, value) in t {
        match p.get(key) {
            None => {
                out.insert(key.clone(), value.clone());
            }
            Some(Value::Null) => {}
            Some(pv) => {
                out.insert(key.clone(), merge_patched(value, pv));
            }
        }
    }
    for (key, value) in p {
        if !value.is_null() && !t.contains_key(key) {
            merge_patch(out.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
    Value::Object(out)
}

/// The merge patch that turns `old` into `new` where `new` is the whole wanted value (a PUT's
/// meaning): `new` with a null for every key of `old` it drops, at every level where both are
/// objects. Arrays and scalars are replaced as they are. `new` must hold no nulls (a merge patch
/// cannot set one).
pub fn replacing(old: Option<&crate::tree::Tree>, new: Value) -> Value {
    let Some(old) = old.and_then(crate::tree::Tree::as_object) else {
        return new;
    };
    let mut m = match new {
        Value::Object(m) => m,
        other => return other,
    };
    for (k, ov) in old.iter() {
        match m.get_mut(k.as_str()) {
            None => {
                m.insert(k.to_string(), Value::Null);
            }
            Some(nv) => {
                if nv.is_object() && ov.as_object().is_some() {
                    *nv = replacing(Some(ov), std::mem::take(nv));
                }
            }
        }
    }
    Value::Object(m)
}

/// RFC 6902 JSON patch (application/json-patch+json); patch must be an array of ops; use the json-patch crate (v4).
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    if !patch.is_array() {
        return Err(PatchError::Malformed(
            "a JSON patch must be an array of operations".into(),
        ));
    }
    let ops: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| PatchError::Malformed(e.to_string()))?;
    // Work on a copy so that the target is only replaced when every operation succeeded. (`patch_unsafe`
    // is safe Rust; it only skips the crate's own undo log, which a copy makes unnecessary.)
    let mut doc = target.clone();
    json_patch::patch_unsafe(&mut doc, &ops.0).map_err(|e| PatchError::JsonPatch(e.to_string()))?;
    *target = doc;
    Ok(())
}

/// Strategic merge patch (application/strategic-merge-patch+json) for built-in kinds.
/// `api_version` like "v1" or "apps/v1", `kind` like "Pod", "Node", "Deployment".
///
/// For a kind that is not built in, only the metadata list rules apply and everything else merges like
/// a merge patch. The patch must be a JSON object. A `$patch: delete` at the top level empties the object.
pub fn strategic_merge_patch(
    target: &mut Value,
    patch: &Value,
    api_version: &str,
    kind: &str,
) -> Result<(), PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::Malformed(
            "a strategic merge patch must be a JSON object".into(),
        ));
    };
    let schema = Schema {
        kind: supports_strategic(api_version, kind).then_some(kind),
    };
    let base = match target {
        Value::Object(map) => map.clone(),
        _ => Obj::new(),
    };
    let merged = schema.merge_map(base, patch, "")?;
    *target = Value::Object(merged.unwrap_or_default());
    Ok(())
}

/// Built-in kinds by API group ("" is the core group). Strategic merge patch is defined for these only.
const BUILTIN_KINDS: &[(&str, &str)] = &[
    ("", "Pod"),
    ("", "Node"),
    ("", "Namespace"),
    ("", "Service"),
    ("", "Endpoints"),
    ("", "ConfigMap"),
    ("", "Secret"),
    ("", "Event"),
    ("events.k8s.io", "Event"),
    ("", "ServiceAccount"),
    ("apps", "Deployment"),
    ("apps", "ReplicaSet"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("batch", "Job"),
    ("batch", "CronJob"),
    ("policy", "PodDisruptionBudget"),
    ("policy", "Eviction"),
    ("coordination.k8s.io", "Lease"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("autoscaling", "Scale"),
];

/// Whether strategic merge patch is defined for this kind (built-in kinds: true; others e.g. custom resources: false, caller answers 415).
///
/// The group is taken from `api_version` ("apps/v1" -> "apps", "v1" -> core), so a custom resource that
/// happens to be called "Pod" is not mistaken for a built-in. An empty `api_version` matches by kind alone.
pub fn supports_strategic(api_version: &str, kind: &str) -> bool {
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    BUILTIN_KINDS
        .iter()
        .any(|&(g, k)| k == kind && (api_version.is_empty() || g == group))
}

/// How a field is merged by strategic merge patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldStrategy {
    /// The patch value replaces the field (the default for lists; an explicit entry makes a map atomic).
    Replace,
    /// A list of objects merged element-wise by the value of this key.
    MergeKey(&'static str),
    /// A list of scalars merged as a set union (`patchStrategy:"merge"` without a merge key).
    MergePrimitive,
}

/// Where a rule applies.
#[derive(Clone, Copy, Debug)]
enum Scope {
    /// Every object, custom resources included.
    AnyKind,
    /// One built-in kind; the path is from the object root.
    Kind(&'static str),
    /// Every PodSpec: the path is relative to the PodSpec (see [`POD_SPEC_AT`]).
    PodSpec,
    /// Every container of a PodSpec (see [`CONTAINER_LISTS`]); the path is relative to the container.
    Container,
}

use FieldStrategy::{MergeKey, MergePrimitive, Replace};
use Scope::{AnyKind, Container, Kind, PodSpec};

/// Strategy of list (and a few map) fields, one rule a line.
///
/// Source of truth: the `patchStrategy` / `patchMergeKey` struct tags in k8s.io/api (core/v1, apps/v1,
/// batch/v1, policy/v1 `types.go`) and k8s.io/apimachinery `ObjectMeta`. A field without a tag is
/// `Replace` for lists and merged for maps; explicit `Replace` rules for lists only document a
/// deliberate absence of a tag. Paths are field names joined by '.'; list elements add no segment.
const RULES: &[(Scope, &str, FieldStrategy)] = &[
    (AnyKind, "metadata.ownerReferences", MergeKey("uid")),
    (AnyKind, "metadata.finalizers", MergePrimitive),
    (PodSpec, "containers", MergeKey("name")),
    (PodSpec, "initContainers", MergeKey("name")),
    (PodSpec, "ephemeralContainers", MergeKey("name")),
    (PodSpec, "volumes", MergeKey("name")),
    (PodSpec, "imagePullSecrets", MergeKey("name")),
    (PodSpec, "hostAliases", MergeKey("ip")),
    (
        PodSpec,
        "topologySpreadConstraints",
        MergeKey("topologyKey"),
    ),
    (PodSpec, "schedulingGates", MergeKey("name")),
    (PodSpec, "resourceClaims", MergeKey("name")),
    (PodSpec, "tolerations", Replace),
    (Container, "env", MergeKey("name")),
    (Container, "ports", MergeKey("containerPort")),
    (Container, "volumeMounts", MergeKey("mountPath")),
    (Container, "volumeDevices", MergeKey("devicePath")),
    (Container, "envFrom", Replace),
    (Container, "args", Replace),
    (Container, "command", Replace),
    (Kind("Pod"), "status.conditions", MergeKey("type")),
    (Kind("Pod"), "status.podIPs", MergeKey("ip")),
    (Kind("Pod"), "status.hostIPs", MergeKey("ip")),
    (
        Kind("Pod"),
        "status.resourceClaimStatuses",
        MergeKey("name"),
    ),
    (Kind("Pod"), "status.containerStatuses", Replace),
    (Kind("Pod"), "status.initContainerStatuses", Replace),
    (Kind("Pod"), "status.ephemeralContainerStatuses", Replace),
    (Kind("Node"), "spec.podCIDRs", MergePrimitive),
    (Kind("Node"), "spec.taints", Replace),
    (Kind("Node"), "status.conditions", MergeKey("type")),
    (Kind("Node"), "status.addresses", MergeKey("type")),
    (Kind("Node"), "status.images", Replace),
    (Kind("Namespace"), "spec.finalizers", Replace),
    (Kind("Namespace"), "status.conditions", MergeKey("type")),
    (Kind("Service"), "spec.ports", MergeKey("port")),
    (Kind("Service"), "status.conditions", MergeKey("type")),
    (Kind("ServiceAccount"), "secrets", MergeKey("name")),
    (Kind("Endpoints"), "subsets", Replace),
    (Kind("Deployment"), "status.conditions", MergeKey("type")),
    (Kind("ReplicaSet"), "status.conditions", MergeKey("type")),
    (Kind("StatefulSet"), "status.conditions", MergeKey("type")),
    (Kind("DaemonSet"), "status.conditions", MergeKey("type")),
    (Kind("Job"), "status.conditions", MergeKey("type")),
    (
        Kind("PodDisruptionBudget"),
        "status.conditions",
        MergeKey("type"),
    ),
    (Kind("PodDisruptionBudget"), "spec.selector", Replace),
];

/// Where each built-in kind holds its PodSpec.
const POD_SPEC_AT: &[(&str, &str)] = &[
    ("Pod", "spec"),
    ("Deployment", "spec.template.spec"),
    ("ReplicaSet", "spec.template.spec"),
    ("StatefulSet", "spec.template.spec"),
    ("DaemonSet", "spec.template.spec"),
    ("Job", "spec.template.spec"),
    ("CronJob", "spec.jobTemplate.spec.template.spec"),
];

/// The PodSpec lists whose elements are containers.
const CONTAINER_LISTS: &[&str] = &["containers", "initContainers", "ephemeralContainers"];

/// The strategy of the field at `path` ('.'-joined field names) in an object of `kind`, if a rule names it.
/// `kind` is `None` for kinds that are not built in: only [`Scope::AnyKind`] rules apply to them.
pub fn field_strategy(kind: Option<&str>, path: &str) -> Option<FieldStrategy> {
    let in_pod_spec = kind.and_then(|kind| {
        POD_SPEC_AT
            .iter()
            .find(|(k, _)| *k == kind)
            .and_then(|(_, prefix)| path.strip_prefix(prefix)?.strip_prefix('.'))
    });
    let in_container = in_pod_spec.and_then(|rel| {
        CONTAINER_LISTS
            .iter()
            .find_map(|list| rel.strip_prefix(list)?.strip_prefix('.'))
    });
    RULES
        .iter()
        .find(|(scope, rule_path, _)| match scope {
            AnyKind => path == *rule_path,
            Kind(k) => kind == Some(*k) && path == *rule_path,
            PodSpec => in_pod_spec == Some(*rule_path),
            Container => in_container == Some(*rule_path),
        })
        .map(|(_, _, strategy)| *strategy)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn malformed<T>(message: impl Into<String>) -> Result<T, PatchError> {
    Err(PatchError::Malformed(message.into()))
}

fn is_directive(key: &str) -> bool {
    key == PATCH_DIRECTIVE
        || key == RETAIN_KEYS
        || key.starts_with(SET_ELEMENT_ORDER)
        || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
}

/// The value compared when ordering or matching list elements: the merge key's value if there is one.
fn identity<'a>(value: &'a Value, key: Option<&str>) -> &'a Value {
    key.and_then(|key| value.get(key)).unwrap_or(value)
}

/// Strategic merge of one object; `kind` is `Some` for built-in kinds only.
struct Schema<'a> {
    kind: Option<&'a str>,
}

impl Schema<'_> {
    fn strategy(&self, path: &str) -> Option<FieldStrategy> {
        field_strategy(self.kind, path)
    }

    /// Merges `patch` into `orig`; `None` means the map is deleted (`$patch: delete`).
    fn merge_map(&self, mut orig: Obj, patch: &Obj, path: &str) -> Result<Option<Obj>, PatchError> {
        match patch.get(PATCH_DIRECTIVE) {
            None => {}
            Some(Value::String(d)) if d == "merge" => {}
            Some(Value::String(d)) if d == "replace" => orig.clear(),
            Some(Value::String(d)) if d == "delete" => return Ok(None),
            Some(other) => {
                return malformed(format!("unknown $patch directive {other} at '{path}'"));
            }
        }
        for (key, value) in patch {
            let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) else {
                continue;
            };
            let Value::Array(remove) = value else {
                return malformed(format!("{key} at '{path}' must be a list"));
            };
            if let Some(Value::Array(list)) = orig.get_mut(field) {
                list.retain(|item| !remove.contains(item));
            }
        }
        for (key, value) in patch {
            if is_directive(key) {
                continue;
            }
            if value.is_null() {
                orig.shift_remove(key);
                continue;
            }
            let child = join(path, key);
            let old = orig.get_mut(key).map(std::mem::take);
            match self.merge_value(old, value, &child)? {
                Some(merged) => match orig.get_mut(key) {
                    Some(slot) => *slot = merged,
                    None => {
                        orig.insert(key.clone(), merged);
                    }
                },
                None => {
                    orig.shift_remove(key);
                }
            }
        }
        for (key, value) in patch {
            let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER) else {
                continue;
            };
            let Value::Array(order) = value else {
                return malformed(format!("{key} at '{path}' must be a list"));
            };
            let merge_key = match self.strategy(&join(path, field)) {
                Some(MergeKey(k)) => Some(k),
                _ => None,
            };
            if let Some(Value::Array(list)) = orig.get_mut(field) {
                reorder(list, order, merge_key);
            }
        }
        if let Some(retain) = patch.get(RETAIN_KEYS) {
            let keys = match retain {
                Value::Array(keys) => keys.iter().map(Value::as_str).collect::<Option<Vec<_>>>(),
                _ => None,
            };
            let Some(keys) = keys else {
                return malformed(format!("$retainKeys at '{path}' must be a list of strings"));
            };
            orig.retain(|key, _| keys.contains(&key.as_str()));
        }
        Ok(Some(orig))
    }

    /// Merges a patch value into the old value of a field; `None` means the field is removed.
    fn merge_value(
        &self,
        old: Option<Value>,
        patch: &Value,
        path: &str,
    ) -> Result<Option<Value>, PatchError> {
        match patch {
            Value::Null => Ok(None),
            Value::Object(patch) => {
                let base = match old {
                    Some(Value::Object(map)) if self.strategy(path) != Some(Replace) => map,
                    _ => Obj::new(),
                };
                Ok(self.merge_map(base, patch, path)?.map(Value::Object))
            }
            Value::Array(items) => match self.strategy(path) {
                Some(MergeKey(key)) => self.merge_list(old, items, Some(key), path).map(Some),
                Some(MergePrimitive) => self.merge_list(old, items, None, path).map(Some),
                Some(Replace) | None => Ok(Some(patch.clone())),
            },
            scalar => Ok(Some(scalar.clone())),
        }
    }

    /// Merges a list with a merge strategy: by `key` for lists of objects, as a set union otherwise.
    fn merge_list(
        &self,
        old: Option<Value>,
        patch: &[Value],
        key: Option<&'static str>,
        path: &str,
    ) -> Result<Value, PatchError> {
        let mut list = match old {
            Some(Value::Array(list)) => list,
            _ => Vec::new(),
        };
        let mut items = Vec::with_capacity(patch.len());
        let mut replace = false;
        for item in patch {
            let Some(directive) = item.get(PATCH_DIRECTIVE) else {
                items.push(item);
                continue;
            };
            match directive.as_str() {
                Some("replace") => replace = true,
                Some("delete") => {
                    let Some(value) = key.and_then(|k| item.get(k)) else {
                        return malformed(format!(
                            "$patch: delete in '{path}' needs the list's merge key"
                        ));
                    };
                    list.retain(|old| key.and_then(|k| old.get(k)) != Some(value));
                }
                Some("merge") => {
                    return Err(PatchError::Unsupported(format!(
                        "$patch: merge in list '{path}'"
                    )));
                }
                _ => {
                    return malformed(format!(
                        "unknown $patch directive {directive} in list '{path}'"
                    ));
                }
            }
        }
        if replace {
            list.clear();
        }
        match key {
            Some(key) => {
                for item in items {
                    let Value::Object(item) = item else {
                        return malformed(format!(
                            "list '{path}' merged by '{key}' holds a non-object"
                        ));
                    };
                    let Some(value) = item.get(key) else {
                        return malformed(format!(
                            "element of '{path}' lacks its merge key '{key}'"
                        ));
                    };
                    match list.iter().position(|old| old.get(key) == Some(value)) {
                        Some(pos) => {
                            let base = match std::mem::take(&mut list[pos]) {
                                Value::Object(map) => map,
                                _ => Obj::new(),
                            };
                            match self.merge_map(base, item, path)? {
                                Some(merged) => list[pos] = Value::Object(merged),
                                None => {
                                    list.remove(pos);
                                }
                            }
                        }
                        None => {
                            if let Some(new) = self.merge_map(Obj::new(), item, path)? {
                                list.push(Value::Object(new));
                            }
                        }
                    }
                }
            }
            None => {
                let mut union: Vec<Value> = Vec::with_capacity(list.len() + items.len());
                for item in list.into_iter().chain(items.into_iter().cloned()) {
                    if !union.contains(&item) {
                        union.push(item);
                    }
                }
                list = union;
            }
        }
        Ok(Value::Array(list))
    }
}

/// `$setElementOrder`: the elements named in `order` first, in that order; the others keep their
/// relative order after them.
fn reorder(list: &mut Vec<Value>, order: &[Value], key: Option<&str>) {
    let mut rest: Vec<Option<Value>> = std::mem::take(list).into_iter().map(Some).collect();
    for wanted in order {
        let wanted = identity(wanted, key);
        let found = rest
            .iter_mut()
            .find(|slot| slot.as_ref().is_some_and(|v| identity(v, key) == wanted));
        if let Some(value) = found.and_then(Option::take) {
            list.push(value);
        }
    }
    list.extend(rest.into_iter().flatten());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacing_patch_turns_old_into_new() {
        let old = json!({"observedGeneration": 1, "disruptedPods": {"a": "t1", "b": "t2"},
            "disruptionsAllowed": 1, "conditions": [{"type": "X", "status": "True"}],
            "gone": {"x": 1}});
        let new = json!({"observedGeneration": 2, "disruptedPods": {"b": "t2", "c": "t3"},
            "disruptionsAllowed": 0, "conditions": [{"type": "X", "status": "False"}]});
        let tree = crate::tree::Tree::from(&old);
        let p = replacing(Some(&tree), new.clone());
        assert_eq!(p["disruptedPods"]["a"], Value::Null);
        assert_eq!(p["gone"], Value::Null);
        assert_eq!(merge_patched(&old, &p), new);
        // Nothing before: the new value as it is; a scalar or array replaces.
        assert_eq!(replacing(None, new.clone()), new);
        assert_eq!(replacing(Some(&tree), json!([1])), json!([1]));
        // An emptied map removes every old entry.
        let p = replacing(Some(&tree), json!({"disruptedPods": {}}));
        assert_eq!(merge_patched(&old, &p), json!({"disruptedPods": {}}));
    }
    use serde_json::json;

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn api_version(kind: &str) -> &'static str {
        match kind {
            "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => "apps/v1",
            "Job" | "CronJob" => "batch/v1",
            "Scale" => "autoscaling/v1",
            "Widget" => "example.com/v1",
            _ => "v1",
        }
    }

    /// Strategic merge patch of `target` (an object of `kind`) by `patch` gives `expected`.
    fn check(kind: &str, target: Value, patch: Value, expected: Value) {
        let mut doc = target;
        strategic_merge_patch(&mut doc, &patch, api_version(kind), kind).unwrap();
        assert_eq!(doc, expected, "{kind} patched by {patch}");
    }

    /// (kind, target, patch, expected), one strategic merge patch case a line.
    #[rustfmt::skip]
    const STRATEGIC: &[(&str, &str, &str, &str)] = &[
        // kubectl cordon, uncordon, taint (taints have no strategy: the list is replaced).
        ("Node", r#"{"spec":{"taints":[{"key":"old"}]}}"#, r#"{"spec":{"unschedulable":true}}"#, r#"{"spec":{"taints":[{"key":"old"}],"unschedulable":true}}"#),
        ("Node", r#"{"spec":{"unschedulable":true,"podCIDR":"x"}}"#, r#"{"spec":{"unschedulable":null}}"#, r#"{"spec":{"podCIDR":"x"}}"#),
        ("Node", r#"{"spec":{"taints":[{"key":"old","effect":"NoExecute"}]}}"#, r#"{"spec":{"taints":[{"effect":"NoSchedule","key":"k","value":"v"}]}}"#, r#"{"spec":{"taints":[{"effect":"NoSchedule","key":"k","value":"v"}]}}"#),
        ("Node", r#"{"spec":{"taints":[{"key":"old"}]}}"#, r#"{"spec":{"taints":null}}"#, r#"{"spec":{}}"#),
        // kubectl label / annotate, and label removal.
        ("Node", r#"{"metadata":{"name":"n","labels":{"x":"y"}}}"#, r#"{"metadata":{"labels":{"a":"b"}}}"#, r#"{"metadata":{"name":"n","labels":{"x":"y","a":"b"}}}"#),
        ("Pod", r#"{"metadata":{"name":"p","labels":{"a":"b","x":"y"}}}"#, r#"{"metadata":{"labels":{"a":null}}}"#, r#"{"metadata":{"name":"p","labels":{"x":"y"}}}"#),
        ("Widget", r#"{"metadata":{"name":"w"}}"#, r#"{"metadata":{"annotations":{"a":"b"}}}"#, r#"{"metadata":{"name":"w","annotations":{"a":"b"}}}"#),
        // kubectl scale, on the workload and on its scale subresource.
        ("Deployment", r#"{"spec":{"replicas":1,"paused":false}}"#, r#"{"spec":{"replicas":5}}"#, r#"{"spec":{"replicas":5,"paused":false}}"#),
        ("Scale", r#"{"kind":"Scale","spec":{"replicas":1}}"#, r#"{"spec":{"replicas":0}}"#, r#"{"kind":"Scale","spec":{"replicas":0}}"#),
        // kubectl rollout restart.
        ("Deployment", r#"{"spec":{"template":{"metadata":{"labels":{"app":"w"}}}}}"#,
            r#"{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"2026-01-01T00:00:00Z"}}}}}"#,
            r#"{"spec":{"template":{"metadata":{"labels":{"app":"w"},"annotations":{"kubectl.kubernetes.io/restartedAt":"2026-01-01T00:00:00Z"}}}}}"#),
        // kubectl apply: new image, container order, an env entry deleted.
        ("Deployment", r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"app:1","env":[{"name":"A","value":"1"},{"name":"B","value":"2"}]},{"name":"side","image":"side:1"}]}}}}"#,
            r#"{"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"side"},{"name":"app"}],"containers":[{"name":"app","image":"app:2","$setElementOrder/env":[{"name":"A"}],"env":[{"name":"B","$patch":"delete"}]}]}}}}"#,
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"side","image":"side:1"},{"name":"app","image":"app:2","env":[{"name":"A","value":"1"}]}]}}}}"#),
        // Status conditions merge by type; other keyed lists append new keys.
        ("Node", r#"{"status":{"conditions":[{"type":"Ready","status":"True"},{"type":"DiskPressure","status":"False"}],"addresses":[{"type":"InternalIP","address":"10.0.0.1"}]}}"#,
            r#"{"status":{"conditions":[{"type":"Ready","status":"False","reason":"KubeletDown"},{"type":"PIDPressure","status":"False"}],"addresses":[{"type":"Hostname","address":"n"}]}}"#,
            r#"{"status":{"conditions":[{"type":"Ready","status":"False","reason":"KubeletDown"},{"type":"DiskPressure","status":"False"},{"type":"PIDPressure","status":"False"}],"addresses":[{"type":"InternalIP","address":"10.0.0.1"},{"type":"Hostname","address":"n"}]}}"#),
        ("Pod", r#"{"status":{"conditions":[{"type":"Ready","status":"False"}],"containerStatuses":[{"name":"a"},{"name":"b"}]}}"#,
            r#"{"status":{"$setElementOrder/conditions":[{"type":"Ready"}],"conditions":[{"type":"Ready","status":"True"}],"containerStatuses":[{"name":"b","ready":true}]}}"#,
            r#"{"status":{"conditions":[{"type":"Ready","status":"True"}],"containerStatuses":[{"name":"b","ready":true}]}}"#),
        ("Deployment", r#"{"status":{"conditions":[{"type":"Available"}]}}"#, r#"{"status":{"conditions":[{"type":"Progressing"}]}}"#, r#"{"status":{"conditions":[{"type":"Available"},{"type":"Progressing"}]}}"#),
        ("Service", r#"{"spec":{"ports":[{"port":80,"name":"http"}]}}"#, r#"{"spec":{"ports":[{"port":443,"name":"https"}]}}"#, r#"{"spec":{"ports":[{"port":80,"name":"http"},{"port":443,"name":"https"}]}}"#),
        ("Endpoints", r#"{"subsets":[{"addresses":[{"ip":"1.1.1.1"}]}]}"#, r#"{"subsets":[]}"#, r#"{"subsets":[]}"#),
        ("Namespace", r#"{"spec":{"finalizers":["kubernetes"]}}"#, r#"{"spec":{"finalizers":["x"]}}"#, r#"{"spec":{"finalizers":["x"]}}"#),
        // Pod spec and container lists at each kind's PodSpec; args replaced, ports merged by containerPort.
        ("Pod", r#"{"spec":{"containers":[{"name":"a","ports":[{"containerPort":80}],"args":["x"]}],"tolerations":[{"key":"t"}]}}"#,
            r#"{"spec":{"containers":[{"name":"a","ports":[{"containerPort":443}],"args":["y"]},{"name":"b"}],"tolerations":[]}}"#,
            r#"{"spec":{"containers":[{"name":"a","ports":[{"containerPort":80},{"containerPort":443}],"args":["y"]},{"name":"b"}],"tolerations":[]}}"#),
        ("CronJob", r#"{"spec":{"jobTemplate":{"spec":{"template":{"spec":{"initContainers":[{"name":"i","volumeMounts":[{"mountPath":"/a"}]}]}}}}}}"#,
            r#"{"spec":{"jobTemplate":{"spec":{"template":{"spec":{"initContainers":[{"name":"i","volumeMounts":[{"mountPath":"/b"}]}]}}}}}}"#,
            r#"{"spec":{"jobTemplate":{"spec":{"template":{"spec":{"initContainers":[{"name":"i","volumeMounts":[{"mountPath":"/a"},{"mountPath":"/b"}]}]}}}}}}"#),
        ("StatefulSet", r#"{"spec":{"template":{"spec":{"volumes":[{"name":"v","emptyDir":{}}]}}}}"#, r#"{"spec":{"template":{"spec":{"volumes":[{"name":"w"}]}}}}"#, r#"{"spec":{"template":{"spec":{"volumes":[{"name":"v","emptyDir":{}},{"name":"w"}]}}}}"#),
        // A custom resource of the same shape merges lists like a merge patch.
        ("Widget", r#"{"spec":{"containers":[{"name":"a"}]}}"#, r#"{"spec":{"containers":[{"name":"b"}]}}"#, r#"{"spec":{"containers":[{"name":"b"}]}}"#),
        // Metadata lists on every kind: finalizers are a set, ownerReferences merge by uid.
        ("ConfigMap", r#"{"metadata":{"finalizers":["a","b"]}}"#, r#"{"metadata":{"finalizers":["b","c"]}}"#, r#"{"metadata":{"finalizers":["a","b","c"]}}"#),
        ("Widget", r#"{"metadata":{"finalizers":["a","b","c"]}}"#, r#"{"metadata":{"$deleteFromPrimitiveList/finalizers":["b","z"]}}"#, r#"{"metadata":{"finalizers":["a","c"]}}"#),
        ("Widget", r#"{"metadata":{"ownerReferences":[{"uid":"1","name":"x"}]}}"#, r#"{"metadata":{"ownerReferences":[{"uid":"1","controller":true},{"uid":"2"}]}}"#, r#"{"metadata":{"ownerReferences":[{"uid":"1","name":"x","controller":true},{"uid":"2"}]}}"#),
        ("Pod", r#"{"metadata":{"ownerReferences":[{"uid":"1"},{"uid":"2"}]}}"#, r#"{"metadata":{"ownerReferences":[{"uid":"1","$patch":"delete"}]}}"#, r#"{"metadata":{"ownerReferences":[{"uid":"2"}]}}"#),
        // $retainKeys drops keys not listed, after merging.
        ("Deployment", r#"{"spec":{"strategy":{"type":"RollingUpdate","rollingUpdate":{"maxSurge":1}}}}"#, r#"{"spec":{"strategy":{"$retainKeys":["type"],"type":"Recreate"}}}"#, r#"{"spec":{"strategy":{"type":"Recreate"}}}"#),
        // $patch: replace / delete / merge on maps.
        ("ConfigMap", r#"{"data":{"a":"1","b":"2"}}"#, r#"{"data":{"$patch":"replace","c":"3"}}"#, r#"{"data":{"c":"3"}}"#),
        ("ConfigMap", r#"{"data":{"a":"1"},"x":1}"#, r#"{"data":{"$patch":"delete"}}"#, r#"{"x":1}"#),
        ("ConfigMap", r#"{"data":{"a":"1"}}"#, r#"{"data":{"$patch":"merge","b":"2"}}"#, r#"{"data":{"a":"1","b":"2"}}"#),
        ("Pod", r#"{"a":1}"#, r#"{"$patch":"delete"}"#, r#"{}"#),
        // {"$patch":"replace"} inside a merged list replaces the list with the other elements.
        ("Pod", r#"{"spec":{"volumes":[{"name":"a"},{"name":"b"}]}}"#, r#"{"spec":{"volumes":[{"$patch":"replace"},{"name":"c"}]}}"#, r#"{"spec":{"volumes":[{"name":"c"}]}}"#),
        // Directives inside new elements are applied and stripped; nulls in new maps are dropped.
        ("Pod", r#"{"spec":{}}"#, r#"{"spec":{"containers":[{"name":"a","env":[{"name":"X","$patch":"delete"}],"x":null}]}}"#, r#"{"spec":{"containers":[{"name":"a","env":[]}]}}"#),
    ];

    #[test]
    fn strategic_cases() {
        for (kind, target, patch, expected) in STRATEGIC {
            check(kind, parse(target), parse(patch), parse(expected));
        }
    }

    #[test]
    fn strategic_errors_leave_target_untouched() {
        let target = json!({"spec": {"containers": [{"name": "a"}]}});
        for patch in [
            json!({"spec": {"containers": [{"image": "no-name"}]}}),
            json!({"spec": {"containers": ["a"]}}),
            json!({"spec": {"$patch": "explode"}}),
            json!({"spec": {"containers": [{"$patch": "merge"}]}}),
            json!({"metadata": {"$retainKeys": "name"}}),
            json!({"metadata": {"$setElementOrder/finalizers": 1}}),
            json!([1]),
        ] {
            let mut doc = target.clone();
            assert!(
                strategic_merge_patch(&mut doc, &patch, "v1", "Pod").is_err(),
                "{patch}"
            );
            assert_eq!(doc, target);
        }
    }

    #[test]
    fn kinds_and_rules() {
        assert!(supports_strategic("v1", "Pod"));
        assert!(supports_strategic("apps/v1", "Deployment"));
        assert!(supports_strategic("coordination.k8s.io/v1", "Lease"));
        assert!(!supports_strategic("example.com/v1", "Widget"));
        assert!(!supports_strategic("example.com/v1", "Pod"));
        assert!(!supports_strategic("v1", "Deployment"));
        let env = "spec.jobTemplate.spec.template.spec.initContainers.env";
        assert_eq!(field_strategy(Some("CronJob"), env), Some(MergeKey("name")));
        assert_eq!(field_strategy(None, "spec.containers"), None);
        assert_eq!(
            field_strategy(None, "metadata.finalizers"),
            Some(MergePrimitive)
        );
    }

    #[test]
    fn json_patch_ops() {
        let mut doc = json!({"metadata": {"labels": {"a": "b"}}, "spec": {"replicas": 1}});
        let ops = json!([
            {"op": "add", "path": "/metadata/labels/c", "value": "d"},
            {"op": "remove", "path": "/metadata/labels/a"},
            {"op": "replace", "path": "/spec/replicas", "value": 3},
            {"op": "test", "path": "/spec/replicas", "value": 3}]);
        json_patch(&mut doc, &ops).unwrap();
        assert_eq!(
            doc,
            json!({"metadata": {"labels": {"c": "d"}}, "spec": {"replicas": 3}})
        );
        let before = doc.clone();
        let failing = json!([{"op": "replace", "path": "/spec/replicas", "value": 9},
            {"op": "test", "path": "/spec/replicas", "value": 1}]);
        let result = json_patch(&mut doc, &failing);
        assert!(matches!(result, Err(PatchError::JsonPatch(_))));
        let result = json_patch(&mut doc, &json!([{"op": "remove", "path": "/nope"}]));
        assert!(matches!(result, Err(PatchError::JsonPatch(_))));
        let result = json_patch(&mut doc, &json!({"op": "add"}));
        assert!(matches!(result, Err(PatchError::Malformed(_))));
        let result = json_patch(&mut doc, &json!([{"op": "frob", "path": "/"}]));
        assert!(matches!(result, Err(PatchError::Malformed(_))));
        assert_eq!(doc, before);
    }

    /// RFC 7386 appendix A, plus merging into a non-object target: (target, patch, expected).
    #[rustfmt::skip]
    const MERGE: &[(&str, &str, &str)] = &[
        (r#"{"a":"b"}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
        (r#"{"a":"b"}"#, r#"{"b":"c"}"#, r#"{"a":"b","b":"c"}"#),
        (r#"{"a":"b"}"#, r#"{"a":null}"#, r#"{}"#),
        (r#"{"a":"b","b":"c"}"#, r#"{"a":null}"#, r#"{"b":"c"}"#),
        (r#"{"a":["b"]}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
        (r#"{"a":"c"}"#, r#"{"a":["b"]}"#, r#"{"a":["b"]}"#),
        (r#"{"a":{"b":"c"}}"#, r#"{"a":{"b":"d","c":null}}"#, r#"{"a":{"b":"d"}}"#),
        (r#"{"a":[{"b":"c"}]}"#, r#"{"a":[1]}"#, r#"{"a":[1]}"#),
        (r#"["a","b"]"#, r#"["c","d"]"#, r#"["c","d"]"#),
        (r#"{"a":"b"}"#, r#"["c"]"#, r#"["c"]"#),
        (r#"{"a":"foo"}"#, r#"null"#, r#"null"#),
        (r#"{"a":"foo"}"#, r#""bar""#, r#""bar""#),
        (r#"{"e":null}"#, r#"{"a":1}"#, r#"{"e":null,"a":1}"#),
        (r#"[1,2]"#, r#"{"a":"b","c":null}"#, r#"{"a":"b"}"#),
        (r#"{}"#, r#"{"a":{"bb":{"ccc":null}}}"#, r#"{"a":{"bb":{}}}"#),
    ];

    #[test]
    fn merge_patch_rfc7386_appendix() {
        for (target, patch, expected) in MERGE {
            let mut doc = parse(target);
            merge_patch(&mut doc, &parse(patch));
            assert_eq!(doc, parse(expected), "{target} patched by {patch}");
            let built = merge_patched(&parse(target), &parse(patch));
            assert_eq!(built, parse(expected), "{target} patched by {patch}");
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        #[rustfmt::skip]
        const KEYS: &[&str] = &["$patch", "$retainKeys", "$setElementOrder/containers", "$deleteFromPrimitiveList/finalizers",
            "metadata", "finalizers", "ownerReferences", "uid", "spec", "template", "containers", "name", "env", "a"];
        #[rustfmt::skip]
        const PLAIN_KEYS: &[&str] = &["spec", "status", "template", "containers", "conditions", "name", "type", "a", "b"];
        #[rustfmt::skip]
        const STRINGS: &[&str] = &["replace", "delete", "merge", "name", "a", "", "/a", "/a/0", "/a/-", "/spec/containers/0"];
        const KINDS: &[&str] = &["Pod", "Node", "Deployment", "CronJob", "Service", "Widget"];
        const OPS: &[&str] = &["add", "remove", "replace", "move", "copy", "test", "bogus"];

        fn json_value(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                (-2i64..3).prop_map(Value::from),
                prop::sample::select(STRINGS).prop_map(Value::from),
            ];
            leaf.prop_recursive(5, 48, 4, move |inner| {
                let entry = (
                    prop::sample::select(keys).prop_map(String::from),
                    inner.clone(),
                );
                prop_oneof![
                    prop::collection::vec(inner, 0..4).prop_map(Value::Array),
                    prop::collection::vec(entry, 0..5)
                        .prop_map(|kv| Value::Object(kv.into_iter().collect())),
                ]
            })
        }

        fn json_patch_ops() -> impl Strategy<Value = Value> {
            let select = prop::sample::select;
            let op = (select(OPS), select(STRINGS), select(STRINGS), json_value(KEYS))
                .prop_map(|(op, path, from, value)| json!({"op": op, "path": path, "from": from, "value": value}));
            prop::collection::vec(op, 0..4).prop_map(Value::Array)
        }

        proptest! {
            #[test]
            fn never_panics(target in json_value(KEYS), patch in json_value(KEYS), ops in json_patch_ops(),
                kind in prop::sample::select(KINDS)) {
                let mut doc = target.clone();
                merge_patch(&mut doc, &patch);
                let mut doc = target.clone();
                let _ = strategic_merge_patch(&mut doc, &patch, "", kind);
                let mut doc = target.clone();
                let _ = json_patch(&mut doc, &patch);
                let mut doc = target;
                let _ = json_patch(&mut doc, &ops);
            }

            #[test]
            fn merge_patched_is_merge_patch_on_a_copy(target in json_value(PLAIN_KEYS), patch in json_value(PLAIN_KEYS)) {
                let mut in_place = target.clone();
                merge_patch(&mut in_place, &patch);
                let built = merge_patched(&target, &patch);
                // Same value and the same key order.
                prop_assert_eq!(serde_json::to_string(&built).unwrap(), serde_json::to_string(&in_place).unwrap());
            }

            #[test]
            fn merge_patch_is_idempotent(target in json_value(KEYS), patch in json_value(KEYS)) {
                let mut once = target;
                merge_patch(&mut once, &patch);
                let mut twice = once.clone();
                merge_patch(&mut twice, &patch);
                prop_assert_eq!(once, twice);
            }

            #[test]
            fn strategic_is_merge_patch_for_unknown_kinds_without_directives(
                target in json_value(PLAIN_KEYS), patch in json_value(PLAIN_KEYS)) {
                prop_assume!(patch.is_object());
                let mut merged = target.clone();
                merge_patch(&mut merged, &patch);
                let mut strategic = target;
                strategic_merge_patch(&mut strategic, &patch, "example.com/v1", "Widget").unwrap();
                prop_assert_eq!(merged, strategic);
            }
        }
    }
}
