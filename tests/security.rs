//! Mutual TLS with real processes on loopback: a federation runs over mTLS while three intruders try to join at
//! once — a site whose certificate comes from a foreign CA, a node presenting site-0's certificate while claiming
//! to be site-1 (a stolen identity), and a site with a valid certificate but the wrong cookie. None may join.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{contributors, serial, Fed};
use histofed::cluster::{self, tls::TlsMaterial, Security};

const LIMIT: Duration = Duration::from_secs(240);

#[test]
fn intruders_are_refused_and_never_join_an_mtls_federation() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    histofed::certs::issue_all(&certs, 2).unwrap();
    let foreign = tmp.path().join("foreign");
    histofed::certs::issue_all(&foreign, 2).unwrap();
    let tls_line = format!("tls_dir = \"{}\"\n", certs.display());
    let mut fed = Fed::new(tmp.path(), 2, 2, "min_sites = 1\njoin_timeout_secs = 5", "");
    let text = std::fs::read_to_string(&fed.config).unwrap().replace("[cluster]\n", &format!("[cluster]\n{tls_line}"));
    std::fs::write(&fed.config, text).unwrap();
    let cfg = histofed::config::Config::load(&fed.config).unwrap();
    let addr = cluster::resolve(&cfg.cluster.server_addr).unwrap();

    fed.start_server();
    fed.start_site(0);
    // Intruder 1: a consistent certificate set from another CA (set HISTOFED_TLS_DIR through a config override).
    let c = fed.config.to_str().unwrap().to_string();
    let set = format!("cluster.tls_dir=\"{}\"", foreign.display());
    let _foreign_site =
        common::spawn(tmp.path(), "foreign-site", &["site", "--config", &c, "--site-id", "1", "--set", &set]);
    // Intruder 2: the real site-1 certificate but the wrong cookie.
    let _cookie_site = common::spawn_env(
        tmp.path(),
        "cookie-site",
        &["site", "--config", &c, "--site-id", "1"],
        &[("HISTOFED_COOKIE", "not-the-cookie")],
    );
    // Intruder 3 (in this process): site-0's certificate and key, claiming to be site-1.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let stolen = Arc::new(TlsMaterial::load(&certs, "site-0").unwrap());
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let node = rt.block_on(async {
        let node = cluster::start_node(
            "site-1",
            "127.0.0.1:0".parse().unwrap(),
            cfg.cookie(),
            1 << 30,
            Security::Mtls(stolen.clone()),
        )
        .await
        .unwrap();
        let flag = ready.clone();
        cluster::subscribe(&node.server, "test", move |ev| {
            if matches!(ev, cluster::NodeEvent::Ready { .. }) {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
        for _ in 0..20 {
            let _ = cluster::connect(&node.server, &node.security, addr).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        node
    });

    let report = fed.finish(LIMIT);
    rt.block_on(node.shutdown());
    assert!(report.finished);
    assert_eq!(report.site_classes.keys().copied().collect::<Vec<_>>(), vec![0], "no intruder joined");
    for r in 1..=2 {
        assert_eq!(contributors(&report, r), vec![0]);
    }
    // Not asserted: whether the intruder's own node briefly saw its session ready. The guard kills the session from
    // ractor_cluster's authentication callback, which races with the session's state exchange; membership is what
    // is protected (the server admits a site only when its session's certificate names that site).
    let _ = ready.load(std::sync::atomic::Ordering::SeqCst);
    let log = fed.log("server-1");
    assert!(log.contains("refusing a node whose certificate does not match"), "stolen identity logged:\n{log}");
    assert!(log.contains("TLS handshakes refused"), "foreign-CA handshakes logged:\n{log}");
}
