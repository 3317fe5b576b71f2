//! Kubernetes versions (`v1.11.1`, `1.13`, `v1.28.3+k3s1`, `v1.29.0-eks-5e0fdde`).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use thiserror::Error;

/// A Kubernetes version: major, minor and an optional patch. Pre-release and build suffixes
/// (`-rc.1`, `+k3s1`, `-eks-…`) are kept for display but ignored by comparisons, which is what the
/// version skew policy needs.
#[derive(Debug, Clone, Eq)]
pub struct KubeVersion {
    /// Major version (1).
    pub major: u32,
    /// Minor version (the unit of the skew policy).
    pub minor: u32,
    /// Patch version; `None` when only `v1.13` was given.
    pub patch: Option<u32>,
    /// Anything after the numbers, such as `-rc.1` or `+k3s1`.
    pub suffix: String,
}

/// A string that is not a Kubernetes version.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "invalid Kubernetes version {0:?}: expected v<major>.<minor>[.<patch>], e.g. v1.13 or v1.28.3"
)]
pub struct VersionError(pub String);

impl KubeVersion {
    /// A version with a patch number.
    pub fn new(major: u32, minor: u32, patch: Option<u32>) -> Self {
        KubeVersion {
            major,
            minor,
            patch,
            suffix: String::new(),
        }
    }

    /// Parses `v1.11.1`, `1.13`, `v1.28.3+k3s1` or `v1.29.0-eks-5e0fdde`.
    pub fn parse(s: &str) -> Result<Self, VersionError> {
        let err = || VersionError(s.to_string());
        let t = s.trim();
        let t = t.strip_prefix('v').unwrap_or(t);
        let end = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (numbers, suffix) = t.split_at(end);
        if !suffix.is_empty() && !suffix.starts_with(['-', '+']) {
            return Err(err());
        }
        let mut parts = numbers.split('.');
        let mut next = |required: bool| -> Result<Option<u32>, VersionError> {
            match parts.next() {
                None if !required => Ok(None),
                Some(p) if !p.is_empty() && p.len() <= 9 => p.parse().map(Some).map_err(|_| err()),
                _ => Err(err()),
            }
        };
        let major = next(true)?.ok_or_else(err)?;
        let minor = next(true)?.ok_or_else(err)?;
        let patch = next(false)?;
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(KubeVersion {
            major,
            minor,
            patch,
            suffix: suffix.to_string(),
        })
    }

    /// `v1.13` (no patch, no suffix).
    pub fn minor_string(&self) -> String {
        format!("v{}.{}", self.major, self.minor)
    }

    /// Minor versions from `self` up to `other` (positive when `other` is newer). Different major
    /// versions count 100 minors per major, which keeps comparisons total without pretending a
    /// 2.x line exists.
    pub fn minors_to(&self, other: &KubeVersion) -> i64 {
        let a = i64::from(self.major) * 100 + i64::from(self.minor);
        let b = i64::from(other.major) * 100 + i64::from(other.minor);
        b - a
    }

    /// Same major and minor.
    pub fn same_minor(&self, other: &KubeVersion) -> bool {
        self.major == other.major && self.minor == other.minor
    }

    fn key(&self) -> (u32, u32, u32) {
        (self.major, self.minor, self.patch.unwrap_or(0))
    }
}

impl PartialEq for KubeVersion {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl PartialOrd for KubeVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KubeVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl std::hash::Hash for KubeVersion {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}", self.major, self.minor)?;
        if let Some(p) = self.patch {
            write!(f, ".{p}")?;
        }
        f.write_str(&self.suffix)
    }
}

impl FromStr for KubeVersion {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KubeVersion::parse(s)
    }
}

impl Serialize for KubeVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KubeVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = KubeVersion;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Kubernetes version such as v1.13 or v1.28.3")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KubeVersion, E> {
                KubeVersion::parse(v).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<KubeVersion, E> {
                Err(E::custom(format!(
                    "the version {v} was read as a number: quote it, e.g. \"v{v}\""
                )))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let v = KubeVersion::parse("v1.11.1").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 11, Some(1)));
        let v = KubeVersion::parse("1.13").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 13, None));
        let v = KubeVersion::parse("v1.28.3+k3s1").unwrap();
        assert_eq!(v.to_string(), "v1.28.3+k3s1");
        let v = KubeVersion::parse("v1.29.0-eks-5e0fdde").unwrap();
        assert_eq!(v.patch, Some(0));
        for bad in ["", "v", "v1", "1.x", "v1.2.3.4", "latest", "v1..2", "v1.2x"] {
            assert!(KubeVersion::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn compares_and_counts_minors() {
        let a = KubeVersion::parse("v1.11.1").unwrap();
        let b = KubeVersion::parse("v1.13").unwrap();
        assert!(a < b);
        assert_eq!(a.minors_to(&b), 2);
        assert_eq!(b.minors_to(&a), -2);
        assert_eq!(
            KubeVersion::parse("v1.28.3+k3s1").unwrap(),
            KubeVersion::parse("1.28.3").unwrap()
        );
    }
}
