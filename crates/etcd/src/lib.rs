//! theseus-etcd: etcd operations over etcd-client. The only crate that uses etcd-client.
