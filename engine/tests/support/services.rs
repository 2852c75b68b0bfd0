//! The integration-test services (tansu Kafka, noida-db Elasticsearch, the nginx basic-auth
//! proxy, pyzmq), as started by `scripts/services.sh`: their addresses from the
//! `LOGSIGHT_TEST_*` environment, and small helpers to use them. A test that needs a service
//! whose variable is missing panics with how to start the services.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

fn require(var: &str, service: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!(
            "{service} not running: start the test services with scripts/test.sh (or scripts/services.sh start all)"
        ),
    }
}

/// `host:port` of the Kafka broker.
pub fn kafka() -> String {
    require("LOGSIGHT_TEST_KAFKA", "kafka")
}

/// Base URL of Elasticsearch (no auth).
pub fn es() -> String {
    require("LOGSIGHT_TEST_ES", "elasticsearch")
}

/// Base URL, user and password of the basic-auth proxy in front of Elasticsearch.
pub fn es_proxy() -> (String, String, String) {
    (
        require("LOGSIGHT_TEST_ES_PROXY", "elasticsearch proxy"),
        require("LOGSIGHT_TEST_ES_PROXY_USER", "elasticsearch proxy"),
        require("LOGSIGHT_TEST_ES_PROXY_PASSWORD", "elasticsearch proxy"),
    )
}

/// The `tansu` binary (topic administration).
pub fn tansu_bin() -> String {
    require("LOGSIGHT_TEST_TANSU_BIN", "kafka")
}

/// The Python with pyzmq.
pub fn python() -> String {
    require("LOGSIGHT_TEST_PYTHON", "zmq")
}

/// `scripts/zmq_publish.py`.
pub fn zmq_publish() -> String {
    require("LOGSIGHT_TEST_ZMQ_PUBLISH", "zmq")
}

/// `scripts/services.sh`.
pub fn services_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/services.sh")
}

/// A name no other test (or earlier run) uses: `<prefix>-<pid>-<time>-<n>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!(
        "{prefix}-{}-{ms}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates a topic with `partitions` partitions.
pub fn create_topic(name: &str, partitions: u32) {
    let out = Command::new(tansu_bin())
        .args([
            "topic",
            "create",
            "--broker",
            &format!("tcp://{}", kafka()),
            "--partitions",
        ])
        .arg(partitions.to_string())
        .arg(name)
        .output()
        .expect("tansu runs");
    assert!(
        out.status.success(),
        "tansu topic create {name}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `scripts/services.sh <args>`; panics when it fails.
pub fn services(args: &[&str], envs: &[(&str, &str)]) {
    let out = Command::new("bash")
        .arg(services_script())
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("services.sh runs");
    assert!(
        out.status.success(),
        "services.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
