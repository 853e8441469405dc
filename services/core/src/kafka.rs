//! Kafka client settings shared by every service, and the topic names.
//!
//! Topics are one per record type, named `<prefix>.raw.<record_type>` for
//! what the edge publishes, `<prefix>.alerts.maintenance` for the alerter's
//! output and `<prefix>.dlq` for records that failed validation.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::schema::RecordType;

/// How to reach the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Prefix of every topic name.
    pub topic_prefix: String,
    /// Extra librdkafka properties (e.g. `security.protocol`, `sasl.mechanism`).
    /// They override what fleetpulse sets.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: "fleetpulse".into(),
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// A librdkafka config with the brokers and the extra properties.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// The topic of a record type.
    pub fn topic(&self, record_type: RecordType) -> String {
        match record_type {
            RecordType::MaintenanceAlert => format!("{}.alerts.maintenance", self.topic_prefix),
            t => format!("{}.raw.{}", self.topic_prefix, t.name()),
        }
    }

    /// The dead-letter topic.
    pub fn dlq_topic(&self) -> String {
        format!("{}.dlq", self.topic_prefix)
    }

    /// Every topic fleetpulse uses.
    pub fn all_topics(&self) -> Vec<String> {
        let mut v: Vec<String> = RecordType::ALL.iter().map(|t| self.topic(*t)).collect();
        v.push(self.dlq_topic());
        v
    }

    /// The record type a raw topic carries, if it is one of ours.
    pub fn record_type_of(&self, topic: &str) -> Option<RecordType> {
        RecordType::ALL
            .into_iter()
            .find(|t| self.topic(*t) == topic)
    }
}

/// Headers put on dead-letter records.
pub mod dlq_headers {
    /// Error class (`bad_signature`, `wrong_schema`, …).
    pub const ERROR_CLASS: &str = "fp-error-class";
    /// Human-readable reason.
    pub const REASON: &str = "fp-error-reason";
    /// Topic the record was read from.
    pub const ORIGINAL_TOPIC: &str = "fp-original-topic";
    /// Partition it was read from.
    pub const ORIGINAL_PARTITION: &str = "fp-original-partition";
    /// Offset it was read at.
    pub const ORIGINAL_OFFSET: &str = "fp-original-offset";
    /// Service that rejected it.
    pub const STAGE: &str = "fp-stage";
}
