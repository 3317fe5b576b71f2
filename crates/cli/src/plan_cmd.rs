//! `theseus snapshot` and `theseus plan`: capture a cluster, plan a migration. Neither changes
//! anything in the cluster (`get` and `list` only).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use clap::{Args, ValueEnum};
use theseus_cluster::{CaptureOptions, ClientOptions, Connection, DEFAULT_PAGE_SIZE};
use theseus_etcd::{Etcd, EtcdConfig};
use theseus_model::snapshot::{EtcdCluster, EtcdMember};
use theseus_model::{ClusterSnapshot, Migration};

use crate::BadInput;

/// kubectl's global flags that say which cluster to talk to.
#[derive(Args, Debug, Clone, Default)]
pub struct ClusterFlags {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then the
    /// in-cluster service account).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current-context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// The Kubean/Kubespray inventory ConfigMap as NAMESPACE/NAME, when it is not found by
    /// itself (default: the hostsConfRef of a clusters.kubean.io object, or a *-hosts-conf
    /// ConfigMap in kubean-system that names this cluster's nodes).
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub inventory: Option<String>,
    /// Items per list request (kubectl's --chunk-size); later pages follow the continue token.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PAGE_SIZE)]
    pub chunk_size: u32,
}

/// `theseus snapshot`.
#[derive(Args, Debug)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub cluster: ClusterFlags,
    /// Where to write the snapshot (versioned JSON, `apiVersion: theseus.io/v1alpha1`); `-`
    /// writes it to standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// etcd client URLs, comma-separated (etcdctl's flag): also record the etcd members (name,
    /// URLs, learner, leader, health, the node each runs on), which the planner uses for quorum.
    #[arg(long = "endpoints", value_delimiter = ',', value_name = "URLS")]
    pub etcd_endpoints: Vec<String>,
    /// CA bundle that signed etcd's server certificates (kubeadm: /etc/kubernetes/pki/etcd/ca.crt).
    #[arg(long, value_name = "FILE", requires = "etcd_endpoints")]
    pub cacert: Option<PathBuf>,
    /// etcd client certificate (kubeadm: /etc/kubernetes/pki/etcd/healthcheck-client.crt).
    #[arg(long, value_name = "FILE", requires = "etcd_endpoints")]
    pub cert: Option<PathBuf>,
    /// etcd client key.
    #[arg(long, value_name = "FILE", requires = "etcd_endpoints")]
    pub key: Option<PathBuf>,
}

/// Output formats of `theseus plan`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanFormat {
    /// The human report, shaped like `kubeadm upgrade plan`.
    Table,
    /// The plan document (stable schema: waves, findings, estimate).
    Json,
    /// The same document as YAML.
    Yaml,
}

/// `theseus plan`.
#[derive(Args, Debug)]
pub struct PlanArgs {
    /// The migration spec (`kind: Migration`, YAML); `-` reads standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
    /// Plan offline from a snapshot written by `theseus snapshot` instead of the live cluster.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["kubeconfig", "context", "inventory"])]
    pub snapshot: Option<PathBuf>,
    #[command(flatten)]
    pub cluster: ClusterFlags,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = PlanFormat::Table)]
    pub output: PlanFormat,
}

fn bad(message: String) -> anyhow::Error {
    anyhow!(BadInput(message))
}

async fn connect(flags: &ClusterFlags) -> Result<Connection> {
    connect_with(flags, false).await
}

/// A client for the flags' cluster. `no_retry`: turn off kube-rs's retry of 429/503 (the engine
/// must see an eviction's 429 at once: it is a PodDisruptionBudget saying no).
pub async fn connect_with(flags: &ClusterFlags, no_retry: bool) -> Result<Connection> {
    let opts = ClientOptions {
        kubeconfig: flags.kubeconfig.clone(),
        context: flags.context.clone(),
        no_retry,
    };
    theseus_cluster::connect(&opts)
        .await
        .map_err(|e| bad(e.to_string()))
}

/// Captures the cluster the flags name; a failure says where it was talking to.
pub async fn capture(flags: &ClusterFlags) -> Result<(ClusterSnapshot, Connection)> {
    let conn = connect(flags).await?;
    let opts = CaptureOptions {
        page_size: flags.chunk_size,
        source: conn.context.clone().or_else(|| Some("in-cluster".into())),
        captured_at: None,
        inventory: flags.inventory.clone(),
    };
    let snapshot = theseus_cluster::capture(&conn.client, &opts)
        .await
        .with_context(|| {
            format!(
                "cannot capture the cluster at {}{}",
                conn.server,
                conn.context
                    .as_ref()
                    .map(|c| format!(" (context {c})"))
                    .unwrap_or_default()
            )
        })?;
    Ok((snapshot, conn))
}

/// "7 nodes (3 control-plane), 75 pods, 4 PodDisruptionBudgets".
fn summary(s: &ClusterSnapshot) -> String {
    let cp = s.control_plane.control_plane_node_names(&s.nodes).len();
    let etcd = s
        .etcd
        .as_ref()
        .map(|e| format!(", {} etcd members", e.members.len()))
        .unwrap_or_default();
    format!(
        "{} nodes ({cp} control-plane), {} pods, {} PodDisruptionBudgets{etcd}",
        s.nodes.len(),
        s.pods.len(),
        s.pod_disruption_budgets.len()
    )
}

/// Writes `text` to `path` through a temporary file, so a failed write leaves no half file.
fn write_file(path: &Path, text: &str) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            bad(format!("cannot write {}: {e}", path.display()))
        })
}

/// `theseus snapshot`.
/// The etcd members as `theseus etcd status` sees them, for the snapshot.
async fn etcd_members(args: &SnapshotArgs, snap: &ClusterSnapshot) -> Result<EtcdCluster> {
    let etcd = Etcd::new(EtcdConfig {
        endpoints: args.etcd_endpoints.clone(),
        cacert: args.cacert.clone(),
        cert: args.cert.clone(),
        key: args.key.clone(),
        ..EtcdConfig::default()
    })
    .map_err(|e| {
        if e.is_bad_input() {
            bad(format!("etcd: {e}"))
        } else {
            anyhow!("etcd: {e}")
        }
    })?;
    let status = etcd.observe().await.map_err(|e| {
        anyhow!(
            "cannot read the etcd members from {}: {e}",
            args.etcd_endpoints.join(",")
        )
    })?;
    let node_of = |urls: &[String]| {
        urls.iter().find_map(|u| {
            let host = theseus_model::snapshot::endpoint_host(u);
            snap.nodes
                .iter()
                .find(|n| n.has_address(host) || n.name == host)
                .map(|n| n.name.clone())
        })
    };
    let members = status
        .members
        .iter()
        .map(|m| EtcdMember {
            id: format!("{:x}", m.member.id.0),
            name: m.member.name.clone(),
            peer_urls: m.member.peer_urls.clone(),
            client_urls: m.member.client_urls.clone(),
            is_learner: m.member.is_learner,
            healthy: m.is_up(),
            leader: status.leader == Some(m.member.id),
            node: node_of(&m.member.peer_urls),
        })
        .collect();
    let version = status
        .members
        .iter()
        .find_map(|m| m.status.as_ref().map(|s| s.version.clone()));
    Ok(EtcdCluster {
        endpoints: args.etcd_endpoints.clone(),
        members,
        version,
    })
}

pub async fn snapshot(args: SnapshotArgs) -> Result<()> {
    let (mut snap, conn) = capture(&args.cluster).await?;
    if !args.etcd_endpoints.is_empty() {
        snap.etcd = Some(etcd_members(&args, &snap).await?);
    }
    let mut json = snap
        .to_json_pretty()
        .context("cannot encode the snapshot")?;
    json.push('\n');
    let what = conn.context.as_deref().unwrap_or(&conn.server);
    if args.output.as_os_str() == "-" {
        print!("{json}");
        eprintln!("snapshot of {what}: {}", summary(&snap));
    } else {
        write_file(&args.output, &json)?;
        println!(
            "snapshot of {what} written to {}: {}",
            args.output.display(),
            summary(&snap)
        );
    }
    Ok(())
}

fn read_input(path: &Path, what: &str) -> Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| bad(format!("cannot read the {what} from standard input: {e}")))?;
        return Ok(buf);
    }
    std::fs::read(path).map_err(|e| bad(format!("cannot read the {what} {}: {e}", path.display())))
}

/// Reads and validates a migration spec; every problem names its field, line and column.
pub fn read_migration(path: &Path) -> Result<Migration> {
    let bytes = read_input(path, "migration spec")?;
    let name = if path.as_os_str() == "-" {
        "<stdin>".to_string()
    } else {
        path.display().to_string()
    };
    let text = String::from_utf8(bytes)
        .map_err(|_| bad(format!("{name}: the migration spec is not UTF-8 text")))?;
    Migration::from_yaml(&text).map_err(|e| {
        let n = e.errors.len();
        bad(format!(
            "invalid migration spec {name} ({n} problem{}); nothing was done:\n{}",
            if n == 1 { "" } else { "s" },
            e.render(&name).trim_end()
        ))
    })
}

/// Reads a snapshot file written by `theseus snapshot`.
pub fn read_snapshot(path: &Path) -> Result<ClusterSnapshot> {
    let bytes = read_input(path, "snapshot")?;
    ClusterSnapshot::from_json_slice(&bytes).map_err(|e| bad(format!("{}: {e}", path.display())))
}

/// `theseus plan`. Exit code 0 when the plan can run, 1 when an error finding blocks it, 2 for a
/// bad spec or snapshot.
pub async fn plan(args: PlanArgs) -> Result<()> {
    // The spec first: a bad spec is reported before anyone waits for a cluster.
    let migration = read_migration(&args.file)?;
    let snapshot = match &args.snapshot {
        Some(path) => read_snapshot(path)?,
        None => capture(&args.cluster).await?.0,
    };
    let plan = theseus_plan::plan(&snapshot, &migration);
    match args.output {
        PlanFormat::Table => print!("{}", theseus_plan::render_text(&plan)),
        PlanFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&plan).context("cannot encode the plan")?
        ),
        PlanFormat::Yaml => print!(
            "{}",
            serde_yaml::to_string(&plan).context("cannot encode the plan")?
        ),
    }
    if plan.is_blocked() {
        let n = plan
            .findings_of(theseus_model::plan::Severity::Error)
            .count();
        return Err(anyhow!(
            "the plan is blocked by {n} error finding{}; nothing was changed",
            if n == 1 { "" } else { "s" }
        ));
    }
    Ok(())
}
