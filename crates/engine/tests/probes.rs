//! The probes a run against a real cluster samples (`engine::HttpProbes`): HTTP GET over plain
//! HTTP and over TLS (whom an `https://` probe trusts), and TCP connect. Real servers on
//! 127.0.0.1, real time (a few seconds).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use theseus_engine::{Availability, HttpProbes};
use theseus_model::spec::Probe;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Answers every request on a connection with 200 (`tls`: after a TLS handshake).
async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            answer(stream).await;
                        }
                    }
                    None => answer(tcp).await,
                }
            });
        }
    });
    port
}

async fn answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            if s.write_all(reply).await.is_err() {
                return;
            }
        }
    }
}

fn acceptor(cert: &Path, key: &Path) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

fn probe(yaml: &str) -> Probe {
    serde_yaml::from_str(yaml).unwrap()
}

/// Samples for a little over three intervals; (requests, failures) per probe name.
async fn sample(probes: &[Probe]) -> std::collections::BTreeMap<String, (u64, u64)> {
    let running = HttpProbes::start(probes).unwrap();
    tokio::time::sleep(Duration::from_millis(3300)).await;
    running
        .totals()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.name, (r.requests, r.failures)))
        .collect()
}

#[tokio::test]
async fn https_probes_trust_their_ca_file_the_system_roots_or_anything_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let certs = theseus_etcd::local::generate_test_certs(&dir.path().join("pki")).unwrap();
    let port = serve(Some(acceptor(&certs.server_cert, &certs.server_key))).await;
    let url = format!("https://127.0.0.1:{port}/healthz");
    let ca = certs.ca.display().to_string();
    let other = certs.other_ca.display().to_string();
    let probes = [
        probe(&format!(
            "{{name: own-ca, http: {{url: '{url}', caFile: '{ca}'}}}}"
        )),
        probe(&format!(
            "{{name: other-ca, http: {{url: '{url}', caFile: '{other}'}}}}"
        )),
        // A private CA is not among the system's roots.
        probe(&format!("{{name: system, http: {{url: '{url}'}}}}")),
        probe(&format!(
            "{{name: insecure, http: {{url: '{url}', insecureSkipTlsVerify: true}}}}"
        )),
    ];
    let got = sample(&probes).await;
    let (requests, failures) = got["own-ca"];
    assert!(requests >= 3, "{got:?}");
    assert_eq!(failures, 0, "{got:?}");
    let (requests, failures) = got["insecure"];
    assert!(requests >= 3, "{got:?}");
    assert_eq!(failures, 0, "{got:?}");
    for name in ["other-ca", "system"] {
        let (requests, failures) = got[name];
        assert!(requests >= 3, "{got:?}");
        assert_eq!(
            failures, requests,
            "{name} must fail the handshake: {got:?}"
        );
    }
}

#[tokio::test]
async fn http_and_tcp_probes_count_what_answers() {
    let port = serve(None).await;
    // A port nobody listens on: bound, then released.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let probes = [
        probe(&format!(
            "{{name: up, http: {{url: 'http://127.0.0.1:{port}/'}}}}"
        )),
        probe(&format!(
            "{{name: wrong-status, http: {{url: 'http://127.0.0.1:{port}/', expectStatus: 204}}}}"
        )),
        probe(&format!(
            "{{name: down, http: {{url: 'http://127.0.0.1:{closed}/'}}}}"
        )),
        probe(&format!(
            "{{name: tcp-up, tcp: {{address: '127.0.0.1:{port}'}}}}"
        )),
        probe(&format!(
            "{{name: tcp-down, tcp: {{address: '127.0.0.1:{closed}'}}}}"
        )),
    ];
    let got = sample(&probes).await;
    for name in ["up", "tcp-up"] {
        let (requests, failures) = got[name];
        assert!(requests >= 3 && failures == 0, "{name}: {got:?}");
    }
    for name in ["wrong-status", "down", "tcp-down"] {
        let (requests, failures) = got[name];
        assert!(requests >= 3 && failures == requests, "{name}: {got:?}");
    }
}

#[test]
fn a_ca_file_that_cannot_be_used_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-ca.pem");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    for (file, says) in [
        (&missing, "cannot read the CA file"),
        (&empty, "holds no usable certificate"),
    ] {
        let p = probe(&format!(
            "{{name: shop, http: {{url: 'https://127.0.0.1:1/', caFile: '{}'}}}}",
            file.display()
        ));
        let err = match HttpProbes::start(&[p]) {
            Ok(_) => panic!("{} was accepted", file.display()),
            Err(e) => e,
        };
        assert!(err.starts_with("probe shop: "), "{err}");
        assert!(err.contains(says), "{err}");
        assert!(err.contains(&file.display().to_string()), "{err}");
        assert!(err.contains("caFile"), "{err}");
    }
}
