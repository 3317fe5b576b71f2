//! Pure parsers for the cluster objects the capture reads, so that the capture code only fetches
//! ConfigMaps and hands their data here:
//!
//! - [`parse_inventory`]: a Kubean/Kubespray `hosts-conf` inventory (`hosts.yml`), groups kept in
//!   inventory order, so the first `kube_control_plane` host is the primary (runbook 000);
//! - [`parse_kubeadm_config`]: the `kube-system/kubeadm-config` ConfigMap data
//!   (`ClusterConfiguration`, or the `MasterConfiguration` of kubeadm ≤ 1.11);
//! - [`parse_cluster_info_server`]: the server of the kubeconfig in `kube-public/cluster-info`;
//! - [`image_version`]: the Kubernetes version in a control-plane image tag.

use std::collections::BTreeMap;

use serde_yaml::Value;
use thiserror::Error;

use crate::snapshot::{Inventory, InventoryHost, KubeadmConfig};
use crate::version::KubeVersion;

/// Why a cluster object could not be read.
#[derive(Debug, Error)]
pub enum SourceError {
    /// Not YAML.
    #[error("{what} is not valid YAML: {source}")]
    Yaml {
        /// Which object.
        what: &'static str,
        /// Parser error.
        source: serde_yaml::Error,
    },
    /// A required part is missing.
    #[error("{what} has no {missing}")]
    Missing {
        /// Which object.
        what: &'static str,
        /// What is missing.
        missing: &'static str,
    },
}

fn yaml(what: &'static str, text: &str) -> Result<Value, SourceError> {
    serde_yaml::from_str(text).map_err(|source| SourceError::Yaml { what, source })
}

fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_mapping().and_then(|m| m.get(key))
}

fn str_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Host names of an inventory group (`children.<group>.hosts`), in order.
fn group_hosts(children: Option<&Value>, names: &[&str]) -> Vec<String> {
    let Some(children) = children else {
        return Vec::new();
    };
    names
        .iter()
        .find_map(|n| get(children, n))
        .and_then(|g| get(g, "hosts"))
        .and_then(Value::as_mapping)
        .map(|m| m.keys().filter_map(|k| str_of(Some(k))).collect())
        .unwrap_or_default()
}

/// Parses a Kubean/Kubespray inventory (`hosts.yml` of the `hosts-conf` ConfigMap).
/// `config_map` is recorded as `namespace/name`.
pub fn parse_inventory(
    hosts_yml: &str,
    config_map: Option<&str>,
) -> Result<Inventory, SourceError> {
    const WHAT: &str = "the inventory";
    let doc = yaml(WHAT, hosts_yml)?;
    let all = get(&doc, "all").ok_or(SourceError::Missing {
        what: WHAT,
        missing: "`all` group",
    })?;
    let hosts = get(all, "hosts")
        .and_then(Value::as_mapping)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| {
                    Some(InventoryHost {
                        name: str_of(Some(k))?,
                        ip: str_of(get(v, "ip")),
                        access_ip: str_of(get(v, "access_ip")),
                        ansible_host: str_of(get(v, "ansible_host")),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let children = get(all, "children");
    Ok(Inventory {
        config_map: config_map.map(str::to_string),
        hosts,
        kube_control_plane: group_hosts(
            children,
            &["kube_control_plane", "kube_master", "kube-master"],
        ),
        kube_node: group_hosts(children, &["kube_node", "kube-node"]),
        etcd: group_hosts(children, &["etcd"]),
    })
}

/// Parses the data of the `kubeadm-config` ConfigMap (key `ClusterConfiguration`, or
/// `MasterConfiguration` for kubeadm ≤ 1.11).
pub fn parse_kubeadm_config(
    data: &BTreeMap<String, String>,
    config_map: Option<&str>,
) -> Result<KubeadmConfig, SourceError> {
    const WHAT: &str = "kubeadm-config";
    let text = data
        .get("ClusterConfiguration")
        .or_else(|| data.get("MasterConfiguration"))
        .ok_or(SourceError::Missing {
            what: WHAT,
            missing: "ClusterConfiguration",
        })?;
    let mut config = parse_cluster_configuration(text)?;
    config.config_map = config_map.map(str::to_string);
    Ok(config)
}

/// Parses one kubeadm `ClusterConfiguration` (or `MasterConfiguration`) document.
pub fn parse_cluster_configuration(text: &str) -> Result<KubeadmConfig, SourceError> {
    let doc = yaml("the kubeadm ClusterConfiguration", text)?;
    let api = get(&doc, "api");
    let endpoint = str_of(get(&doc, "controlPlaneEndpoint"))
        .filter(|s| !s.is_empty())
        .or_else(|| {
            str_of(api.and_then(|a| get(a, "controlPlaneEndpoint"))).filter(|s| !s.is_empty())
        })
        .or_else(|| {
            let addr = str_of(api.and_then(|a| get(a, "advertiseAddress")))?;
            let port =
                str_of(api.and_then(|a| get(a, "bindPort"))).unwrap_or_else(|| "6443".into());
            Some(format!("{addr}:{port}"))
        });
    let external_etcd_endpoints = get(&doc, "etcd")
        .and_then(|e| get(e, "external"))
        .and_then(|e| get(e, "endpoints"))
        .and_then(Value::as_sequence)
        .map(|s| s.iter().filter_map(|v| str_of(Some(v))).collect())
        .unwrap_or_default();
    Ok(KubeadmConfig {
        config_map: None,
        kubernetes_version: str_of(get(&doc, "kubernetesVersion"))
            .and_then(|v| KubeVersion::parse(&v).ok()),
        control_plane_endpoint: endpoint,
        cluster_name: str_of(get(&doc, "clusterName")),
        external_etcd_endpoints,
    })
}

/// The `server` of the first cluster in the kubeconfig of the `cluster-info` ConfigMap
/// (`data.kubeconfig`).
pub fn parse_cluster_info_server(kubeconfig: &str) -> Result<String, SourceError> {
    const WHAT: &str = "cluster-info";
    let doc = yaml(WHAT, kubeconfig)?;
    get(&doc, "clusters")
        .and_then(Value::as_sequence)
        .and_then(|s| s.first())
        .and_then(|c| get(c, "cluster"))
        .and_then(|c| str_of(get(c, "server")))
        .ok_or(SourceError::Missing {
            what: WHAT,
            missing: "clusters[0].cluster.server",
        })
}

/// The version in an image tag: `registry.k8s.io/kube-apiserver:v1.33.4` → `v1.33.4`. Images
/// without a version tag (digests, `latest`) give `None`.
pub fn image_version(image: &str) -> Option<KubeVersion> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let (_, tag) = last.split_once(':')?;
    KubeVersion::parse(tag).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTS: &str = r#"
all:
  hosts:
    centos-master1: {ip: 10.6.212.11, access_ip: 10.6.212.11, ansible_host: 10.6.212.11}
    centos-master2: {ip: 10.6.212.12}
    centos-worker1: {ip: 10.6.212.21}
  children:
    kube_control_plane:
      hosts: {centos-master2: null, centos-master1: null}
    kube_node:
      hosts:
        centos-worker1: null
    etcd:
      hosts: {centos-master1: null, centos-master2: null}
"#;

    #[test]
    fn inventory_keeps_order() {
        let inv = parse_inventory(HOSTS, Some("kubean-system/centos-hosts-conf")).unwrap();
        assert_eq!(inv.kube_control_plane, ["centos-master2", "centos-master1"]);
        assert_eq!(inv.kube_node, ["centos-worker1"]);
        assert_eq!(inv.etcd, ["centos-master1", "centos-master2"]);
        assert_eq!(inv.hosts[0].ip.as_deref(), Some("10.6.212.11"));
        assert!(parse_inventory("foo: [", None).is_err());
        assert!(parse_inventory("other: {}", None).is_err());
    }

    #[test]
    fn kubeadm_configs() {
        let mut data = BTreeMap::new();
        data.insert(
            "ClusterConfiguration".to_string(),
            "kind: ClusterConfiguration\nkubernetesVersion: v1.33.4\ncontrolPlaneEndpoint: 10.6.212.11:6443\nclusterName: centos\n".to_string(),
        );
        let c = parse_kubeadm_config(&data, Some("kube-system/kubeadm-config")).unwrap();
        assert_eq!(
            c.control_plane_endpoint.as_deref(),
            Some("10.6.212.11:6443")
        );
        assert_eq!(c.kubernetes_version.unwrap().to_string(), "v1.33.4");
        let old = "kind: MasterConfiguration\nkubernetesVersion: v1.11.1\napi: {advertiseAddress: 192.168.2.100, bindPort: 6443}\n";
        let c = parse_cluster_configuration(old).unwrap();
        assert_eq!(
            c.control_plane_endpoint.as_deref(),
            Some("192.168.2.100:6443")
        );
        assert!(parse_kubeadm_config(&BTreeMap::new(), None).is_err());
    }

    #[test]
    fn cluster_info_and_images() {
        let kc = "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://10.6.212.11:6443\n  name: \"\"\n";
        assert_eq!(
            parse_cluster_info_server(kc).unwrap(),
            "https://10.6.212.11:6443"
        );
        assert!(parse_cluster_info_server("clusters: []").is_err());
        assert_eq!(
            image_version("registry.k8s.io/kube-apiserver:v1.33.4")
                .unwrap()
                .to_string(),
            "v1.33.4"
        );
        assert_eq!(
            image_version("localhost:5000/k8s/kube-apiserver-arm64:v1.11.1")
                .unwrap()
                .minor,
            11
        );
        assert!(image_version("registry.k8s.io/kube-apiserver").is_none());
        assert!(image_version("etcd@sha256:abc").is_none());
    }
}
