//! Connection settings with etcdctl's names: `--endpoints`, `--cacert`, `--cert`, `--key`,
//! `--dial-timeout`, `--command-timeout`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// How to reach a cluster. Field names follow etcdctl's flags.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// Client URLs (`https://10.0.0.1:2379`) or `host:port`; the scheme defaults to https when a
    /// CA or client certificate is given, http otherwise.
    pub endpoints: Vec<String>,
    /// CA bundle that signed the servers' certificates (`--cacert`).
    pub cacert: Option<PathBuf>,
    /// Client certificate (`--cert`), with `key`.
    pub cert: Option<PathBuf>,
    /// Client key (`--key`).
    pub key: Option<PathBuf>,
    /// How long to wait for a connection (`--dial-timeout`, etcdctl's default 2 s).
    pub dial_timeout: Duration,
    /// How long one request may take (`--command-timeout`, etcdctl's default 5 s).
    pub command_timeout: Duration,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["127.0.0.1:2379".to_string()],
            cacert: None,
            cert: None,
            key: None,
            dial_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(5),
        }
    }
}

impl EtcdConfig {
    /// A configuration for these endpoints with etcdctl's default timeouts and no TLS.
    pub fn new<S: AsRef<str>>(endpoints: &[S]) -> Self {
        EtcdConfig {
            endpoints: endpoints.iter().map(|e| e.as_ref().to_string()).collect(),
            ..EtcdConfig::default()
        }
    }

    /// True when TLS material was given.
    pub fn tls_enabled(&self) -> bool {
        self.cacert.is_some() || self.cert.is_some()
    }
}

/// TLS material read from the files named in an [`EtcdConfig`].
#[derive(Clone, Debug)]
pub(crate) struct TlsMaterial {
    pub ca: Option<Vec<u8>>,
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    pub cacert_path: Option<PathBuf>,
}

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|source| Error::ReadFile {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") {
        return Err(Error::InvalidInput(format!(
            "{what} {} is not a PEM file (no \"-----BEGIN\" line)",
            path.display()
        )));
    }
    Ok(bytes)
}

impl TlsMaterial {
    pub(crate) fn load(cfg: &EtcdConfig) -> Result<Option<Self>> {
        if !cfg.tls_enabled() && cfg.key.is_none() {
            return Ok(None);
        }
        let ca = cfg
            .cacert
            .as_deref()
            .map(|p| read_pem("CA certificate (--cacert)", p))
            .transpose()?;
        let identity = match (&cfg.cert, &cfg.key) {
            (Some(c), Some(k)) => Some((
                read_pem("client certificate (--cert)", c)?,
                read_pem("client key (--key)", k)?,
            )),
            (None, None) => None,
            (Some(_), None) => {
                return Err(Error::InvalidInput(
                    "--cert needs --key (the client certificate's private key)".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(Error::InvalidInput(
                    "--key needs --cert (the client certificate)".into(),
                ));
            }
        };
        Ok(Some(TlsMaterial {
            ca,
            identity,
            cacert_path: cfg.cacert.clone(),
        }))
    }

    pub(crate) fn tonic(&self) -> tonic::transport::ClientTlsConfig {
        let mut tls = tonic::transport::ClientTlsConfig::new();
        if let Some(ca) = &self.ca {
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(ca));
        }
        if let Some((c, k)) = &self.identity {
            tls = tls.identity(tonic::transport::Identity::from_pem(c, k));
        }
        tls
    }
}

/// A parsed `scheme://host:port` URL as etcd uses them for peers and clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdUrl {
    /// `http` or `https`.
    pub scheme: String,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl EtcdUrl {
    /// Parses `http(s)://host:port` (a trailing `/` is accepted). `what` names the flag in errors.
    pub fn parse(what: &str, s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::InvalidInput(format!(
                "{what} {s:?} is not a valid URL: {why} (expected http://HOST:PORT or https://HOST:PORT)"
            ))
        };
        let (scheme, rest) = s.split_once("://").ok_or_else(|| bad("no scheme"))?;
        if scheme != "http" && scheme != "https" {
            return Err(bad("the scheme must be http or https"));
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') || rest.contains('@') {
            return Err(bad("only scheme, host and port are allowed"));
        }
        let (host, port) = if let Some(r) = rest.strip_prefix('[') {
            let (h, p) = r.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            (
                h.to_string(),
                p.strip_prefix(':').ok_or_else(|| bad("no port"))?,
            )
        } else {
            let (h, p) = rest.rsplit_once(':').ok_or_else(|| bad("no port"))?;
            (h.to_string(), p)
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port: u16 = port.parse().map_err(|_| bad("the port is not a number"))?;
        if port == 0 {
            return Err(bad("port 0"));
        }
        Ok(EtcdUrl {
            scheme: scheme.to_string(),
            host,
            port,
        })
    }

    /// `host:port`, with brackets around an IPv6 address.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for EtcdUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority())
    }
}

/// Normalizes an endpoint as etcdctl accepts them: `host:port` gets a scheme (https when TLS is
/// configured). Returns the URL as a string.
pub fn normalize_endpoint(endpoint: &str, tls: bool) -> Result<String> {
    let e = endpoint.trim();
    if e.is_empty() {
        return Err(Error::InvalidInput(
            "--endpoints contains an empty endpoint".into(),
        ));
    }
    let full = if e.contains("://") {
        e.to_string()
    } else if tls {
        format!("https://{e}")
    } else {
        format!("http://{e}")
    };
    Ok(EtcdUrl::parse("endpoint", &full)?.to_string())
}

/// Compares two URLs the way etcd does for member URLs (ignoring a trailing `/`).
pub(crate) fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = EtcdUrl::parse("x", "https://10.0.0.1:2380").unwrap();
        assert_eq!(u.authority(), "10.0.0.1:2380");
        assert_eq!(u.to_string(), "https://10.0.0.1:2380");
        let u = EtcdUrl::parse("x", "http://[::1]:2379/").unwrap();
        assert_eq!(u.host, "::1");
        assert_eq!(u.to_string(), "http://[::1]:2379");
        for bad in [
            "10.0.0.1:2380",
            "ftp://a:1",
            "http://a",
            "http://a:b",
            "http://:1",
            "http://a:1/x",
        ] {
            let e = EtcdUrl::parse("--new-peer-url", bad)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("--new-peer-url") && e.contains("not a valid URL"),
                "{e}"
            );
        }
        assert_eq!(
            normalize_endpoint("127.0.0.1:2379", false).unwrap(),
            "http://127.0.0.1:2379"
        );
        assert_eq!(
            normalize_endpoint("127.0.0.1:2379", true).unwrap(),
            "https://127.0.0.1:2379"
        );
        assert!(normalize_endpoint("", false).is_err());
    }
}
