//! Kafka settings shared by the Kafka source and sink: brokers, topics, group id, and the
//! librdkafka client properties passed through from the `[kafka]` configuration section or
//! `KAFKA_*` environment variables (security protocol, SASL, TLS files, timeouts, …).
//!
//! Keys (lower case, as `config.rs` stores them: `KAFKA_SASL_USERNAME` → `sasl_username`):
//! - `host` / `port` (the original `KAFKA_HOST` / `KAFKA_PORT`, default `localhost:9092`), or
//!   `bootstrap_servers` / `brokers`: a comma-separated `host:port` list (wins over host/port);
//! - `topic` (default `pipeline`), `results_topic` (default `pipeline_results`),
//!   `group_id` (default `logsight`);
//! - any librdkafka property, with `_` or `.` between words (`security_protocol`,
//!   `sasl.mechanisms`, `ssl_ca_location`, `session_timeout_ms`), for both clients; prefixed
//!   `consumer_` / `consumer.` or `producer_` / `producer.` for one client only. Keys that are
//!   not librdkafka property names are ignored (so unrelated `KAFKA_HOME`-style variables do
//!   not break the clients).
//!
//! Values are never logged: [`KafkaSettings`]'s `Debug` shows property names only.

use std::collections::BTreeMap;
use std::fmt;

/// The first words of librdkafka's global and topic properties. A key passes through when
/// its normalised name starts with one of these.
const PROPERTY_PREFIXES: &[&str] = &[
    "acks",
    "allow.",
    "api.version",
    "auto.",
    "batch.",
    "bootstrap.",
    "broker.",
    "check.",
    "client.",
    "compression.",
    "connections.",
    "coordinator.",
    "debug",
    "delivery.",
    "enable.",
    "enabled.",
    "fetch.",
    "group.",
    "heartbeat.",
    "isolation.",
    "linger.",
    "log.",
    "max.",
    "message.",
    "metadata.",
    "offset.",
    "partition.",
    "partitioner",
    "queue.",
    "queued.",
    "receive.",
    "reconnect.",
    "request.",
    "retries",
    "retry.",
    "sasl.",
    "security.",
    "send.",
    "session.",
    "socket.",
    "ssl.",
    "statistics.",
    "sticky.",
    "topic.",
    "transaction.",
    "transactional.",
];

/// Defaults of the original deployment.
pub const DEFAULT_TOPIC: &str = "pipeline";
pub const DEFAULT_RESULTS_TOPIC: &str = "pipeline_results";
pub const DEFAULT_GROUP_ID: &str = "logsight";

/// Brokers, topics and client properties.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    pub topic: String,
    pub results_topic: String,
    pub group_id: String,
    /// Properties for both clients (normalised librdkafka names).
    common: BTreeMap<String, String>,
    consumer: BTreeMap<String, String>,
    producer: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            bootstrap_servers: "localhost:9092".to_owned(),
            topic: DEFAULT_TOPIC.to_owned(),
            results_topic: DEFAULT_RESULTS_TOPIC.to_owned(),
            group_id: DEFAULT_GROUP_ID.to_owned(),
            common: BTreeMap::new(),
            consumer: BTreeMap::new(),
            producer: BTreeMap::new(),
        }
    }
}

impl fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: values may be passwords or key material.
        f.debug_struct("KafkaSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("topic", &self.topic)
            .field("results_topic", &self.results_topic)
            .field("group_id", &self.group_id)
            .field("common", &self.common.keys().collect::<Vec<_>>())
            .field("consumer", &self.consumer.keys().collect::<Vec<_>>())
            .field("producer", &self.producer.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Which client a property is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    Consumer,
    Producer,
}

impl KafkaSettings {
    /// Reads the `[kafka]` map (file and `KAFKA_*` environment, see the module docs).
    pub fn from_map(map: &BTreeMap<String, String>) -> KafkaSettings {
        let mut s = KafkaSettings::default();
        let get = |k: &str| map.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let host = get("host");
        let port = get("port");
        if let Some(list) = get("bootstrap_servers")
            .or(get("bootstrap.servers"))
            .or(get("brokers"))
        {
            s.bootstrap_servers = list.to_owned();
        } else if host.is_some() || port.is_some() {
            let host = host.unwrap_or("localhost");
            s.bootstrap_servers = match port {
                // `KAFKA_HOST=kafka:9092` carries its own port.
                Some(port)
                    if !host.contains(':') || (host.starts_with('[') && host.ends_with(']')) =>
                {
                    format!("{host}:{port}")
                }
                Some(_) => host.to_owned(),
                None if host.contains(':') => host.to_owned(),
                None => format!("{host}:9092"),
            };
        }
        if let Some(v) = get("topic") {
            s.topic = v.to_owned();
        }
        if let Some(v) = get("results_topic") {
            s.results_topic = v.to_owned();
        }
        if let Some(v) = get("group_id").or(get("group.id")) {
            s.group_id = v.to_owned();
        }
        for (key, value) in map {
            let key = key.trim().to_ascii_lowercase();
            if matches!(
                key.as_str(),
                "host"
                    | "port"
                    | "bootstrap_servers"
                    | "bootstrap.servers"
                    | "brokers"
                    | "topic"
                    | "results_topic"
                    | "group_id"
                    | "group.id"
            ) {
                continue;
            }
            let (target, name) = if let Some(rest) = strip_client(&key, "consumer") {
                (Some(Client::Consumer), rest)
            } else if let Some(rest) = strip_client(&key, "producer") {
                (Some(Client::Producer), rest)
            } else {
                (None, key.as_str())
            };
            let name = name.replace('_', ".");
            if !PROPERTY_PREFIXES.iter().any(|p| name.starts_with(p)) {
                tracing::debug!("kafka: ignoring setting {key:?}: not a librdkafka property");
                continue;
            }
            let value = value.clone();
            match target {
                None => s.common.insert(name, value),
                Some(Client::Consumer) => s.consumer.insert(name, value),
                Some(Client::Producer) => s.producer.insert(name, value),
            };
        }
        s
    }

    /// Sets a property for both clients (tests, benchmarks).
    pub fn set(&mut self, name: &str, value: &str) -> &mut Self {
        self.common.insert(name.to_owned(), value.to_owned());
        self
    }

    /// Sets a property for one client.
    pub fn set_for(&mut self, client: Client, name: &str, value: &str) -> &mut Self {
        let map = match client {
            Client::Consumer => &mut self.consumer,
            Client::Producer => &mut self.producer,
        };
        map.insert(name.to_owned(), value.to_owned());
        self
    }

    /// The librdkafka configuration of one client: `bootstrap.servers`, the given defaults,
    /// then the passed-through properties (which win over the defaults).
    pub fn client_config(
        &self,
        client: Client,
        defaults: &[(&str, &str)],
    ) -> rdkafka::ClientConfig {
        let mut config = rdkafka::ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        for (k, v) in defaults {
            config.set(*k, *v);
        }
        let own = match client {
            Client::Consumer => &self.consumer,
            Client::Producer => &self.producer,
        };
        for (k, v) in self.common.iter().chain(own) {
            config.set(k, v);
        }
        config
    }

    /// The configuration of a consumer that assigns partitions itself and commits offsets
    /// explicitly, only after the data is safe (at-least-once): no auto commit or offset
    /// store, end-of-partition events to detect "caught up", and the earliest offset when the
    /// group has none committed.
    pub fn manual_consumer_config(&self) -> rdkafka::ClientConfig {
        self.client_config(
            Client::Consumer,
            &[
                ("group.id", &self.group_id),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("enable.partition.eof", "true"),
                ("auto.offset.reset", "earliest"),
            ],
        )
    }

    /// The names of the passed-through properties of `client` (for messages; never values).
    pub fn property_names(&self, client: Client) -> Vec<&str> {
        let own = match client {
            Client::Consumer => &self.consumer,
            Client::Producer => &self.producer,
        };
        self.common
            .keys()
            .chain(own.keys())
            .map(String::as_str)
            .collect()
    }
}

fn strip_client<'a>(key: &'a str, client: &str) -> Option<&'a str> {
    let rest = key.strip_prefix(client)?;
    rest.strip_prefix('_').or_else(|| rest.strip_prefix('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn get(c: &rdkafka::ClientConfig, k: &str) -> Option<String> {
        c.get(k).map(str::to_owned)
    }

    #[test]
    fn brokers_come_from_host_and_port_or_a_list() {
        let s = KafkaSettings::from_map(&map(&[("host", "kafka"), ("port", "9093")]));
        assert_eq!(s.bootstrap_servers, "kafka:9093");
        let s = KafkaSettings::from_map(&map(&[("host", "kafka:9092")]));
        assert_eq!(s.bootstrap_servers, "kafka:9092");
        let s = KafkaSettings::from_map(&map(&[("host", "kafka:9092"), ("port", "9092")]));
        assert_eq!(s.bootstrap_servers, "kafka:9092");
        let s = KafkaSettings::from_map(&map(&[("host", "x"), ("bootstrap_servers", "a:1,b:2")]));
        assert_eq!(s.bootstrap_servers, "a:1,b:2");
        let s = KafkaSettings::from_map(&map(&[]));
        assert_eq!(s.bootstrap_servers, "localhost:9092");
        assert_eq!(
            (s.topic.as_str(), s.results_topic.as_str()),
            ("pipeline", "pipeline_results")
        );
    }

    #[test]
    fn librdkafka_properties_pass_through_and_other_keys_do_not() {
        let s = KafkaSettings::from_map(&map(&[
            ("security_protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanisms", "PLAIN"),
            ("sasl_username", "u"),
            ("sasl_password", "hunter2"),
            ("consumer_session_timeout_ms", "6000"),
            ("producer.linger.ms", "20"),
            ("home", "/opt/kafka"),
            ("topic", "logs"),
            ("group_id", "g1"),
        ]));
        assert_eq!(s.topic, "logs");
        assert_eq!(s.group_id, "g1");
        let c = s.client_config(Client::Consumer, &[("enable.auto.commit", "false")]);
        assert_eq!(
            get(&c, "security.protocol").as_deref(),
            Some("SASL_PLAINTEXT")
        );
        assert_eq!(get(&c, "sasl.password").as_deref(), Some("hunter2"));
        assert_eq!(get(&c, "session.timeout.ms").as_deref(), Some("6000"));
        assert_eq!(get(&c, "linger.ms"), None);
        assert_eq!(get(&c, "home"), None);
        assert_eq!(get(&c, "enable.auto.commit").as_deref(), Some("false"));
        let p = s.client_config(Client::Producer, &[("linger.ms", "5")]);
        assert_eq!(get(&p, "linger.ms").as_deref(), Some("20"));
        assert_eq!(get(&p, "session.timeout.ms"), None);
        // Debug shows names, never values.
        let shown = format!("{s:?}");
        assert!(shown.contains("sasl.password"));
        assert!(!shown.contains("hunter2"));
    }
}
