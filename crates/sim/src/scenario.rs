//! Scenario files: the objects a simulated cluster starts with.
//!
//! For now a scenario is a YAML stream of Kubernetes manifests (several documents, a YAML list, or
//! `kind: List` objects). An empty file is an empty cluster.

use serde_json::Value;

use crate::server::ApiServer;

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: document {doc}: not valid YAML: {source}")]
    Yaml {
        path: String,
        doc: usize,
        source: serde_yaml::Error,
    },
    #[error("{path}: document {doc}: {message}")]
    Object {
        path: String,
        doc: usize,
        message: String,
    },
}

/// Parses manifests from YAML text. `path` only names the source in errors.
pub fn parse_manifests(path: &str, text: &str) -> Result<Vec<Value>, ScenarioError> {
    let mut out = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc = i + 1;
        let v: Value =
            serde::Deserialize::deserialize(de).map_err(|source| ScenarioError::Yaml {
                path: path.to_string(),
                doc,
                source,
            })?;
        flatten(path, doc, v, &mut out)?;
    }
    Ok(out)
}

fn flatten(path: &str, doc: usize, v: Value, out: &mut Vec<Value>) -> Result<(), ScenarioError> {
    match v {
        Value::Null => Ok(()),
        Value::Array(items) => items
            .into_iter()
            .try_for_each(|i| flatten(path, doc, i, out)),
        Value::Object(ref m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
            let items = m
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            items
                .into_iter()
                .try_for_each(|i| flatten(path, doc, i, out))
        }
        Value::Object(ref m) => {
            for f in ["apiVersion", "kind"] {
                if !m.get(f).is_some_and(Value::is_string) {
                    return Err(ScenarioError::Object {
                        path: path.to_string(),
                        doc,
                        message: format!("a manifest needs a string `{f}` field"),
                    });
                }
            }
            out.push(v);
            Ok(())
        }
        _ => Err(ScenarioError::Object {
            path: path.to_string(),
            doc,
            message: "expected a Kubernetes manifest (a mapping with apiVersion and kind)".into(),
        }),
    }
}

/// Creates the manifests in dependency order: CRDs, namespaces, then everything else. Returns
/// the number of objects created.
pub async fn load(server: &ApiServer, manifests: Vec<Value>) -> Result<usize, String> {
    let rank = |v: &Value| match v.get("kind").and_then(Value::as_str) {
        Some("CustomResourceDefinition") => 0,
        Some("Namespace") => 1,
        _ => 2,
    };
    let mut sorted = manifests;
    sorted.sort_by_key(rank);
    let n = sorted.len();
    for obj in sorted {
        let what = format!(
            "{} {}",
            obj.get("kind").and_then(Value::as_str).unwrap_or("?"),
            obj.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("?")
        );
        match server.create_internal(obj).await {
            Ok(_) => {}
            // The well-known namespaces exist already; a scenario may list them too.
            Err(e) if e.code == 409 && what.starts_with("Namespace ") => {}
            Err(e) => return Err(format!("{what}: {}", e.message)),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_lists_and_errors() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: b}\n---\nkind: List\napiVersion: v1\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: c}}\n---\n";
        let m = parse_manifests("s.yaml", text).unwrap();
        assert_eq!(m.len(), 3);
        assert!(parse_manifests("s.yaml", "").unwrap().is_empty());
        let e = parse_manifests("s.yaml", "kind: Pod\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("s.yaml: document 1") && e.contains("apiVersion"),
            "{e}"
        );
        let e = parse_manifests("s.yaml", "a: [\n").unwrap_err().to_string();
        assert!(e.contains("not valid YAML"), "{e}");
    }
}
