//! Label selectors, node selectors, taints and tolerations, with the matching rules of
//! Kubernetes (`metav1.LabelSelector`, `v1.NodeSelector`, `v1.Toleration`).
//!
//! These are the scheduling predicates the planner evaluates; the types mirror the Kubernetes API
//! field names so that capture code can fill them field by field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Labels of an object.
pub type Labels = BTreeMap<String, String>;

/// `metav1.LabelSelector`. An empty selector matches everything (as in `policy/v1` PDBs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Every pair must be present.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: Labels,
    /// Every requirement must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One requirement of a [`LabelSelector`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    /// Label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: SelectorOperator,
    /// Values for `In` and `NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// Operators of label selector requirements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SelectorOperator {
    /// The label's value is one of `values`.
    In,
    /// The label is absent or its value is none of `values`.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl LabelSelectorRequirement {
    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            SelectorOperator::In => value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            SelectorOperator::NotIn => value.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
        }
    }
}

impl LabelSelector {
    /// A selector from `matchLabels` pairs only.
    pub fn from_labels<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        LabelSelector {
            match_labels: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            match_expressions: Vec::new(),
        }
    }

    /// Whether the selector has no requirement at all (matches everything).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }
}

impl LabelSelector {
    /// Parses the string form of a label selector, as `kubectl --selector` takes it:
    /// comma-separated `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`.
    pub fn parse(text: &str) -> Result<LabelSelector, String> {
        let mut sel = LabelSelector::default();
        let mut rest = text.trim();
        while !rest.is_empty() {
            // One requirement ends at a comma outside parentheses.
            let mut depth = 0usize;
            let mut end = rest.len();
            for (i, c) in rest.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => depth = depth.saturating_sub(1),
                    ',' if depth == 0 => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
            }
            let term = rest[..end].trim();
            rest = rest.get(end + 1..).unwrap_or("").trim();
            if term.is_empty() {
                return Err(format!("empty requirement in selector {text:?}"));
            }
            let valid_key = |k: &str| {
                !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            };
            let req = |key: &str, operator, values: Vec<String>| LabelSelectorRequirement {
                key: key.to_string(),
                operator,
                values,
            };
            let set_values = |v: &str| -> Result<Vec<String>, String> {
                let inner = v
                    .trim()
                    .strip_prefix('(')
                    .and_then(|v| v.strip_suffix(')'))
                    .ok_or_else(|| format!("expected (a,b,...) in {term:?}"))?;
                Ok(inner
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect())
            };
            if let Some(k) = term.strip_prefix('!') {
                let k = k.trim();
                if !valid_key(k) {
                    return Err(format!("invalid key in {term:?}"));
                }
                sel.match_expressions
                    .push(req(k, SelectorOperator::DoesNotExist, vec![]));
            } else if let Some((k, v)) = term.split_once("!=") {
                if !valid_key(k.trim()) {
                    return Err(format!("invalid key in {term:?}"));
                }
                sel.match_expressions.push(req(
                    k.trim(),
                    SelectorOperator::NotIn,
                    vec![v.trim().to_string()],
                ));
            } else if let Some((k, v)) = term.split_once('=') {
                let v = v.strip_prefix('=').unwrap_or(v);
                if !valid_key(k.trim()) {
                    return Err(format!("invalid key in {term:?}"));
                }
                sel.match_labels
                    .insert(k.trim().to_string(), v.trim().to_string());
            } else if let Some((k, v)) = term.split_once(" notin ") {
                sel.match_expressions
                    .push(req(k.trim(), SelectorOperator::NotIn, set_values(v)?));
            } else if let Some((k, v)) = term.split_once(" in ") {
                sel.match_expressions
                    .push(req(k.trim(), SelectorOperator::In, set_values(v)?));
            } else if valid_key(term) {
                sel.match_expressions
                    .push(req(term, SelectorOperator::Exists, vec![]));
            } else {
                return Err(format!("cannot parse {term:?} in selector {text:?}"));
            }
        }
        Ok(sel)
    }
}

/// Required node affinity: `requiredDuringSchedulingIgnoredDuringExecution`. The terms are ORed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSelector {
    /// A node matches if it matches any term.
    pub node_selector_terms: Vec<NodeSelectorTerm>,
}

/// One term of a [`NodeSelector`]: every requirement must hold. An empty term matches nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSelectorTerm {
    /// Requirements on node labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<NodeSelectorRequirement>,
    /// Requirements on node fields; only `metadata.name` exists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_fields: Vec<NodeSelectorRequirement>,
}

/// A requirement on a node label or field.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSelectorRequirement {
    /// Label key, or `metadata.name` in `matchFields`.
    pub key: String,
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`, `Gt` or `Lt`.
    pub operator: NodeSelectorOperator,
    /// Values; one integer for `Gt`/`Lt`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// Operators of node selector requirements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeSelectorOperator {
    /// Value is one of `values`.
    In,
    /// Absent, or value is none of `values`.
    NotIn,
    /// Present.
    Exists,
    /// Absent.
    DoesNotExist,
    /// Value, an integer, is greater than `values[0]`.
    Gt,
    /// Value, an integer, is less than `values[0]`.
    Lt,
}

impl NodeSelectorRequirement {
    fn matches_value(&self, value: Option<&str>) -> bool {
        let int_cmp = |ord: std::cmp::Ordering| {
            let (Some(v), Some(bound)) = (value, self.values.first()) else {
                return false;
            };
            match (v.parse::<i64>(), bound.parse::<i64>()) {
                (Ok(v), Ok(b)) => v.cmp(&b) == ord,
                _ => false,
            }
        };
        match self.operator {
            NodeSelectorOperator::In => value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            NodeSelectorOperator::NotIn => {
                value.is_none_or(|v| !self.values.iter().any(|x| x == v))
            }
            NodeSelectorOperator::Exists => value.is_some(),
            NodeSelectorOperator::DoesNotExist => value.is_none(),
            NodeSelectorOperator::Gt => int_cmp(std::cmp::Ordering::Greater),
            NodeSelectorOperator::Lt => int_cmp(std::cmp::Ordering::Less),
        }
    }
}

impl NodeSelectorTerm {
    /// Whether a node with these labels and this name satisfies the term.
    pub fn matches(&self, labels: &Labels, node_name: &str) -> bool {
        if self.match_expressions.is_empty() && self.match_fields.is_empty() {
            return false;
        }
        self.match_expressions
            .iter()
            .all(|r| r.matches_value(labels.get(&r.key).map(String::as_str)))
            && self.match_fields.iter().all(|r| {
                let field = (r.key == "metadata.name").then_some(node_name);
                r.matches_value(field)
            })
    }

    /// Whether the term looks at the node's identity (its name or hostname label).
    pub fn is_node_specific(&self) -> bool {
        !self.match_fields.is_empty()
            || self
                .match_expressions
                .iter()
                .any(|r| r.key == crate::snapshot::LABEL_HOSTNAME)
    }
}

impl NodeSelector {
    /// Whether a node with these labels and this name satisfies any term.
    pub fn matches(&self, labels: &Labels, node_name: &str) -> bool {
        self.node_selector_terms
            .iter()
            .any(|t| t.matches(labels, node_name))
    }
}

/// Effect of a taint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TaintEffect {
    /// New pods that do not tolerate it are not scheduled.
    NoSchedule,
    /// The scheduler avoids the node.
    PreferNoSchedule,
    /// Not scheduled, and running pods that do not tolerate it are evicted.
    NoExecute,
}

/// `v1.Taint`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Taint {
    /// Key.
    pub key: String,
    /// Value (may be empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Effect.
    pub effect: TaintEffect,
}

impl Taint {
    /// Whether the taint keeps pods that do not tolerate it off the node.
    pub fn repels(&self) -> bool {
        matches!(
            self.effect,
            TaintEffect::NoSchedule | TaintEffect::NoExecute
        )
    }
}

/// Operator of a toleration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TolerationOperator {
    /// Key and value must be equal (the default).
    #[default]
    Equal,
    /// Any value; with an empty key, any taint.
    Exists,
}

/// `v1.Toleration`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Toleration {
    /// Taint key; empty with `Exists` tolerates every taint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `Equal` (default) or `Exists`.
    #[serde(default)]
    pub operator: TolerationOperator,
    /// Value for `Equal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Effect tolerated; none means all effects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
    /// For `NoExecute`: how long the pod stays after the taint appears.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

impl Toleration {
    /// Whether this toleration tolerates `taint` (Kubernetes' `ToleratesTaint`).
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if self.effect.is_some_and(|e| e != taint.effect) {
            return false;
        }
        let key = self.key.as_deref().unwrap_or("");
        if !key.is_empty() && key != taint.key {
            return false;
        }
        match self.operator {
            TolerationOperator::Exists => true,
            TolerationOperator::Equal => {
                key == taint.key
                    && self.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
            }
        }
    }
}

/// Whether `tolerations` tolerate every taint that repels pods (NoSchedule, NoExecute).
pub fn tolerates_all(tolerations: &[Toleration], taints: &[Taint]) -> bool {
    taints
        .iter()
        .filter(|t| t.repels())
        .all(|t| tolerations.iter().any(|tol| tol.tolerates(t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        assert!(LabelSelector::default().matches(&l));
        assert!(LabelSelector::from_labels([("app", "web")]).matches(&l));
        assert!(!LabelSelector::from_labels([("app", "db")]).matches(&l));
        let req = |key: &str, operator, values: &[&str]| LabelSelector {
            match_labels: Labels::new(),
            match_expressions: vec![LabelSelectorRequirement {
                key: key.into(),
                operator,
                values: values.iter().map(|s| s.to_string()).collect(),
            }],
        };
        use SelectorOperator::*;
        assert!(req("app", In, &["web", "x"]).matches(&l));
        assert!(!req("app", NotIn, &["web"]).matches(&l));
        assert!(req("zone", NotIn, &["a"]).matches(&l));
        assert!(req("tier", Exists, &[]).matches(&l));
        assert!(req("zone", DoesNotExist, &[]).matches(&l));
        assert!(!req("zone", In, &["a"]).matches(&l));
    }

    #[test]
    fn selector_strings() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        for (text, expect) in [
            ("app=web", true),
            ("app==web,tier=front", true),
            ("app!=web", false),
            ("app in (web, db)", true),
            ("app notin (web)", false),
            ("tier", true),
            ("!tier", false),
            ("!zone", true),
        ] {
            let sel = LabelSelector::parse(text).unwrap();
            assert_eq!(sel.matches(&l), expect, "{text}");
        }
        for bad in ["app=web,,x", "a b", "k in web", "=v"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn node_selectors() {
        let l = labels(&[("disk", "ssd"), ("cores", "16")]);
        let term = |key: &str, operator, values: &[&str]| NodeSelectorTerm {
            match_expressions: vec![NodeSelectorRequirement {
                key: key.into(),
                operator,
                values: values.iter().map(|s| s.to_string()).collect(),
            }],
            match_fields: vec![],
        };
        use NodeSelectorOperator::*;
        assert!(term("cores", Gt, &["8"]).matches(&l, "n"));
        assert!(!term("cores", Lt, &["8"]).matches(&l, "n"));
        assert!(!term("cores", Gt, &["x"]).matches(&l, "n"));
        assert!(!NodeSelectorTerm::default().matches(&l, "n"));
        let sel = NodeSelector {
            node_selector_terms: vec![term("disk", In, &["hdd"]), term("disk", In, &["ssd"])],
        };
        assert!(sel.matches(&l, "n"));
        let by_name = NodeSelectorTerm {
            match_expressions: vec![],
            match_fields: vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: In,
                values: vec!["n1".into()],
            }],
        };
        assert!(by_name.matches(&l, "n1"));
        assert!(!by_name.matches(&l, "n2"));
        assert!(by_name.is_node_specific());
    }

    #[test]
    fn tolerations() {
        let taint = Taint {
            key: "node-role.kubernetes.io/control-plane".into(),
            value: None,
            effect: TaintEffect::NoSchedule,
        };
        let exists_all = Toleration {
            operator: TolerationOperator::Exists,
            ..Default::default()
        };
        assert!(exists_all.tolerates(&taint));
        let by_key = Toleration {
            key: Some(taint.key.clone()),
            operator: TolerationOperator::Exists,
            effect: Some(TaintEffect::NoSchedule),
            ..Default::default()
        };
        assert!(by_key.tolerates(&taint));
        let wrong_effect = Toleration {
            effect: Some(TaintEffect::NoExecute),
            ..by_key.clone()
        };
        assert!(!wrong_effect.tolerates(&taint));
        let equal_empty = Toleration {
            key: Some(taint.key.clone()),
            ..Default::default()
        };
        assert!(equal_empty.tolerates(&taint));
        assert!(!tolerates_all(&[], std::slice::from_ref(&taint)));
        let soft = Taint {
            effect: TaintEffect::PreferNoSchedule,
            ..taint.clone()
        };
        assert!(tolerates_all(&[], &[soft]));
        assert!(tolerates_all(&[by_key], &[taint]));
    }
}
