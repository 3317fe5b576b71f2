//! The `Migration` spec: what a platform engineer asks theseus to do, as YAML.
//!
//! ```yaml
//! apiVersion: theseus.io/v1alpha1
//! kind: Migration
//! metadata:
//!   name: centos-to-ubuntu
//! spec:
//!   operation:
//!     osMigration:
//!       targetOsImage: Ubuntu 22.04.4 LTS
//!   nodes:
//!     roles: [control-plane, worker]
//!   strategy:
//!     type: removeBeforeAdd
//!     maxUnavailable: auto
//!     maxUnavailableCap: 20%
//!   drain:
//!     deleteEmptyDirData: true
//!   provider:
//!     type: kubean
//!     kubean: {cluster: centos}
//! ```
//!
//! Every field is camelCase, unknown fields are errors, and everything but `operation` has a
//! default (see each type). [`Migration::from_yaml`] parses and validates; its [`SpecError`]
//! names each bad field by path, line and column. `crates/model/docs/migration-spec.md` is the
//! reference for users.

mod locate;
mod types;
mod validate;

pub use locate::locate;
pub use types::*;
pub use validate::{FieldError, PathSeg, SpecError};
