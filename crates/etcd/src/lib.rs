//! theseus-etcd: etcd operations against real etcd: health, safe member replacement, migration of
//! every member, snapshot save/status/restore, defragmentation and alarms. The only crate that uses
//! etcd-client.
//!
//! Entry point: [`Etcd`], a handle on one cluster built from an [`EtcdConfig`] (etcdctl's flags).
//! Per-member calls (status, move-leader, snapshot, defragment, alarms) go through a
//! single-endpoint [`MemberClient`]. Every wait has a timeout and names what it waited for. Time
//! comes only from tokio.

pub mod bolt;
pub mod client;
pub mod cluster;
pub mod config;
pub mod error;
pub mod health;
pub mod hooks;
pub mod local;
pub mod maintenance;
pub mod migrate;
pub mod replace;
pub mod snapshot;

pub use client::{Alarm, EndpointStatus, HashKv, Member, MemberClient, MemberId, MemberList};
pub use cluster::{Etcd, Probe};
pub use config::{EtcdConfig, EtcdUrl};
pub use error::{Error, Result, Step};
pub use health::{ClusterStatus, MemberStatus, Verdict, fault_tolerance, quorum};
pub use hooks::{CommandHooks, MemberHooks, StartSpec, StopReason, StopSpec};
pub use local::{LocalCluster, LocalLauncher, LocalOptions};
pub use maintenance::{DefragResult, NamedAlarm, alarm_disarm, alarm_list, defragment_all};
pub use migrate::{HashKvCheck, MigrateEntry, MigrateReport, hash_kv_check, migrate};
pub use replace::{Event, NewMember, Progress, ReplaceOptions, ReplaceReport, replace_member};
pub use snapshot::{
    RestoreOptions, RestoreReport, RestoreTool, SaveOptions, SavedSnapshot, SnapshotInfo,
    snapshot_restore, snapshot_save, snapshot_status,
};
