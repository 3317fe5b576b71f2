//! Version skew and upgrade paths, after the Kubernetes version skew policy
//! (kubernetes.io/releases/version-skew-policy):
//!
//! - HA `kube-apiserver` instances are at most one minor apart;
//! - `kubelet` is never newer than `kube-apiserver`, and at most three minors older (two for
//!   kubelets older than 1.25);
//! - the control plane is upgraded one minor at a time (kubeadm refuses to skip a minor).
//!
//! An upgrade from 1.11.1 to 1.13 is therefore two hops (1.12, 1.13). Worker kubelets need not
//! follow every hop: they move once at the end when the skew allows it, and earlier (at the last
//! hop that keeps them within the policy) when the path is longer than the skew allows.

use theseus_model::KubeVersion;

/// How many minors a kubelet may trail the API server.
pub fn max_kubelet_skew(kubelet: &KubeVersion) -> i64 {
    if kubelet.major == 1 && kubelet.minor < 25 {
        2
    } else {
        3
    }
}

/// What is wrong with a kubelet against the API servers, if anything.
pub fn kubelet_problem(kubelet: &KubeVersion, oldest_apiserver: &KubeVersion) -> Option<String> {
    let behind = kubelet.minors_to(oldest_apiserver);
    if behind < 0 {
        return Some(format!(
            "kubelet {kubelet} is newer than the API server {oldest_apiserver}"
        ));
    }
    let max = max_kubelet_skew(kubelet);
    if behind > max {
        return Some(format!(
            "kubelet {kubelet} is {behind} minors behind the API server {oldest_apiserver} (at most {max})"
        ));
    }
    None
}

/// One hop of the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// Version as shown (`v1.12.x` when the patch is left to the latest).
    pub label: String,
    /// Minor version of the hop (patch as given, if any).
    pub version: KubeVersion,
    /// Whether worker kubelets move in this hop.
    pub workers: bool,
}

/// The hops from `current` (the oldest API server) to `target`, or why there are none.
/// `path` pins intermediate versions; `oldest_kubelet` decides when workers must move.
pub fn upgrade_hops(
    current: &KubeVersion,
    target: &KubeVersion,
    path: &[KubeVersion],
    oldest_kubelet: Option<&KubeVersion>,
) -> Result<Vec<Hop>, String> {
    let minors = current.minors_to(target);
    if minors < 0 || (minors == 0 && target.patch.is_some() && target < current) {
        return Err(format!(
            "the target {target} is older than the cluster ({current}); Kubernetes does not support downgrades"
        ));
    }
    if current.major != target.major {
        return Err(format!(
            "the target {target} is another major version than the cluster ({current})"
        ));
    }
    if minors == 0 {
        if target.patch.is_some_and(|p| Some(p) > current.patch) {
            return Ok(vec![Hop {
                label: target.to_string(),
                version: target.clone(),
                workers: true,
            }]);
        }
        return Ok(Vec::new());
    }
    let mut hops = Vec::new();
    for m in (current.minor + 1)..=target.minor {
        let version = if m == target.minor {
            target.clone()
        } else if let Some(v) = path
            .iter()
            .find(|v| v.major == current.major && v.minor == m)
        {
            v.clone()
        } else {
            KubeVersion::new(current.major, m, None)
        };
        let label = if version.patch.is_none() && m != target.minor {
            format!("{}.x", version.minor_string())
        } else {
            version.to_string()
        };
        hops.push(Hop {
            label,
            version,
            workers: false,
        });
    }
    // Workers move at the last hop, and earlier whenever the next control-plane hop would put
    // them beyond the skew policy.
    let mut kubelet = oldest_kubelet.cloned().unwrap_or_else(|| current.clone());
    let n = hops.len();
    for i in 0..n {
        let last = i + 1 == n;
        let next_too_far = hops
            .get(i + 1)
            .is_some_and(|next| kubelet.minors_to(&next.version) > max_kubelet_skew(&kubelet));
        if last || next_too_far {
            hops[i].workers = true;
            kubelet = hops[i].version.clone();
        }
    }
    Ok(hops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> KubeVersion {
        KubeVersion::parse(s).unwrap()
    }

    #[test]
    fn kubeadm_1_11_to_1_13_is_two_hops() {
        let hops = upgrade_hops(&v("v1.11.1"), &v("v1.13"), &[], Some(&v("v1.11.1"))).unwrap();
        let labels: Vec<&str> = hops.iter().map(|h| h.label.as_str()).collect();
        assert_eq!(labels, ["v1.12.x", "v1.13"]);
        assert_eq!(
            hops.iter().map(|h| h.workers).collect::<Vec<_>>(),
            [false, true]
        );
    }

    #[test]
    fn long_paths_move_workers_within_the_skew() {
        // 1.28 → 1.31: three hops, kubelets may trail three minors: workers once at the end.
        let hops = upgrade_hops(&v("v1.28.3"), &v("v1.31.0"), &[], Some(&v("v1.28.3"))).unwrap();
        assert_eq!(hops.len(), 3);
        assert_eq!(hops.iter().filter(|h| h.workers).count(), 1);
        // 1.20 → 1.26: kubelets < 1.25 may trail two: workers at 1.22, 1.24, 1.26.
        let hops = upgrade_hops(&v("v1.20.0"), &v("v1.26.1"), &[], None).unwrap();
        let with_workers: Vec<String> = hops
            .iter()
            .filter(|h| h.workers)
            .map(|h| h.version.minor_string())
            .collect();
        assert_eq!(with_workers, ["v1.22", "v1.24", "v1.26"]);
    }

    #[test]
    fn pinned_paths_patches_and_downgrades() {
        let hops = upgrade_hops(&v("v1.11.1"), &v("v1.13.5"), &[v("v1.12.10")], None).unwrap();
        assert_eq!(hops[0].label, "v1.12.10");
        assert_eq!(hops[1].label, "v1.13.5");
        let patch = upgrade_hops(&v("v1.11.1"), &v("v1.11.3"), &[], None).unwrap();
        assert_eq!(patch.len(), 1);
        assert!(upgrade_hops(&v("v1.13.0"), &v("v1.12.0"), &[], None).is_err());
        assert!(
            upgrade_hops(&v("v1.13.4"), &v("v1.13.4"), &[], None)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn kubelet_skew() {
        assert!(kubelet_problem(&v("v1.30.0"), &v("v1.29.0")).is_some());
        assert!(kubelet_problem(&v("v1.26.0"), &v("v1.29.0")).is_none());
        assert!(kubelet_problem(&v("v1.25.0"), &v("v1.29.0")).is_some());
        assert!(kubelet_problem(&v("v1.22.0"), &v("v1.24.0")).is_none());
        assert!(kubelet_problem(&v("v1.21.0"), &v("v1.24.0")).is_some());
    }
}
