//! theseus-model: the data of theseus, as serde types. No I/O, no async.
//!
//! - [`snapshot`]: [`ClusterSnapshot`], what the planner knows about a cluster (versioned JSON).
//! - [`spec`]: [`Migration`], the migration a platform engineer asks for (YAML), with validation
//!   errors that name the field, its line and its column ([`SpecError`]).
//! - [`plan`]: [`Plan`], what the planner answers: waves, findings, estimates (stable schema, see
//!   `docs/plan-schema.md` in this crate).
//! - [`quantity`], [`version`], [`selector`]: Kubernetes quantities, versions, selectors, taints and
//!   tolerations, with the matching rules of Kubernetes.
//! - [`sources`]: pure parsers for the cluster objects the capture reads (Kubean `hosts-conf`
//!   inventory, kubeadm `ClusterConfiguration`, `cluster-info` kubeconfig).

pub mod plan;
pub mod quantity;
pub mod selector;
pub mod snapshot;
pub mod sources;
pub mod spec;
pub mod version;

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

pub use plan::{Finding, FindingCode, ObjectRef, Plan, Severity, Wave};
pub use snapshot::ClusterSnapshot;
pub use spec::{Migration, SpecError};
pub use version::KubeVersion;

/// `apiVersion` of every theseus document (snapshot, migration spec, plan).
pub const API_VERSION: &str = "theseus.io/v1alpha1";

/// An integer or a percentage, as Kubernetes' `IntOrString` in PDBs and rolling updates
/// (`3` or `"25%"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntOrPercent {
    /// An absolute number.
    Int(i64),
    /// A percentage (not limited to 100 here; users of the value check their own bounds).
    Percent(u32),
}

impl IntOrPercent {
    /// The value for a total: an absolute number as is, a percentage of `total`, rounded up or
    /// down as asked (Kubernetes rounds PDB percentages up).
    pub fn scaled(self, total: i64, round_up: bool) -> i64 {
        match self {
            IntOrPercent::Int(n) => n,
            IntOrPercent::Percent(p) => {
                let num = i128::from(p) * i128::from(total.max(0));
                let v = if round_up {
                    (num + 99) / 100
                } else {
                    num / 100
                };
                i64::try_from(v).unwrap_or(i64::MAX)
            }
        }
    }

    /// Parses `"25%"` or `"3"`.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            return p.trim().parse().ok().map(IntOrPercent::Percent);
        }
        s.parse().ok().map(IntOrPercent::Int)
    }
}

impl fmt::Display for IntOrPercent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrPercent::Int(n) => write!(f, "{n}"),
            IntOrPercent::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for IntOrPercent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            IntOrPercent::Int(n) => s.serialize_i64(*n),
            IntOrPercent::Percent(_) => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrPercent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = IntOrPercent;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a percentage such as \"25%\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrPercent, E> {
                Ok(IntOrPercent::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrPercent, E> {
                i64::try_from(v)
                    .map(IntOrPercent::Int)
                    .map_err(|_| E::custom("integer too large"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrPercent, E> {
                IntOrPercent::parse(v).ok_or_else(|| {
                    E::custom(format!(
                        "invalid value {v:?}: expected an integer or a percentage such as \"25%\""
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_or_percent() {
        assert_eq!(IntOrPercent::Percent(50).scaled(3, true), 2);
        assert_eq!(IntOrPercent::Percent(50).scaled(3, false), 1);
        assert_eq!(IntOrPercent::Int(2).scaled(10, true), 2);
        let v: IntOrPercent = serde_json::from_str("\"25%\"").unwrap();
        assert_eq!(v, IntOrPercent::Percent(25));
        let v: IntOrPercent = serde_json::from_str("3").unwrap();
        assert_eq!(v, IntOrPercent::Int(3));
        assert_eq!(
            serde_json::to_string(&IntOrPercent::Percent(10)).unwrap(),
            "\"10%\""
        );
        assert!(serde_json::from_str::<IntOrPercent>("\"x%\"").is_err());
    }
}
