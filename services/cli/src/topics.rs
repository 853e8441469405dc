//! `fleetpulse topics create`: create every topic fleetpulse uses.
//!
//! Services do not create topics themselves: in production, topic
//! partitioning and retention are the platform team's decision. This command
//! (or a Helm hook running it) creates them with a chosen partition count and
//! leaves existing topics alone.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use fleetpulse_core::config::{ConfigError, Validate};
use fleetpulse_core::kafka::KafkaConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

#[derive(Subcommand)]
pub(crate) enum TopicsCommand {
    /// Create the raw, alert and dead-letter topics (existing ones are kept).
    Create {
        /// Bootstrap servers [default: the config's kafka.brokers, else 127.0.0.1:9092].
        #[arg(long)]
        kafka: Option<String>,
        /// Topic prefix [default: the config's kafka.topic_prefix, else fleetpulse].
        #[arg(long)]
        topic_prefix: Option<String>,
        /// A service config (edge, processor or alerter TOML) whose `[kafka]`
        /// section (brokers, topic_prefix, properties such as TLS/SASL
        /// settings) is used; other sections are ignored.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Extra librdkafka property `key=value` (repeatable), applied after
        /// the config's `kafka.properties`.
        #[arg(long = "property", value_name = "KEY=VALUE", value_parser = parse_property)]
        properties: Vec<(String, String)>,
        /// Partitions per topic.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// Replication factor.
        #[arg(long, default_value_t = 1)]
        replication: i32,
    },
    /// Print the topic names for a prefix.
    List {
        /// Topic prefix.
        #[arg(long, default_value = "fleetpulse")]
        topic_prefix: String,
    },
}

pub(crate) async fn run(cmd: TopicsCommand) -> anyhow::Result<()> {
    match cmd {
        TopicsCommand::List { topic_prefix } => {
            let k = KafkaConfig {
                topic_prefix,
                ..KafkaConfig::default()
            };
            for t in k.all_topics() {
                println!("{t}");
            }
        }
        TopicsCommand::Create {
            kafka,
            topic_prefix,
            config,
            properties,
            partitions,
            replication,
        } => {
            let k = kafka_config(config, kafka, topic_prefix, properties)?;
            let created = create_topics(&k, partitions, replication).await?;
            for (topic, state) in created {
                println!("{topic}: {state}");
            }
        }
    }
    Ok(())
}

/// Only the `[kafka]` section of a service config.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
struct KafkaSection {
    kafka: KafkaConfig,
}

impl Validate for KafkaSection {
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not key=value")),
    }
}

/// The Kafka settings: the config file's `[kafka]` (or the defaults), then
/// the flags given on the command line.
fn kafka_config(
    config: Option<PathBuf>,
    brokers: Option<String>,
    topic_prefix: Option<String>,
    properties: Vec<(String, String)>,
) -> anyhow::Result<KafkaConfig> {
    let mut k = match &config {
        Some(path) => {
            fleetpulse_core::config::load::<KafkaSection>(Some(path))
                .with_context(|| format!("--config {}", path.display()))?
                .kafka
        }
        None => KafkaConfig::default(),
    };
    if let Some(b) = brokers {
        k.brokers = b;
    }
    if let Some(p) = topic_prefix {
        k.topic_prefix = p;
    }
    k.properties.extend(properties);
    Ok(k)
}

/// Create all topics of `k`; returns each topic with `created` or `exists`.
pub(crate) async fn create_topics(
    k: &KafkaConfig,
    partitions: i32,
    replication: i32,
) -> anyhow::Result<Vec<(String, &'static str)>> {
    let admin: AdminClient<DefaultClientContext> = k
        .client_config()
        .create()
        .context("kafka.brokers: cannot create admin client")?;
    let names = k.all_topics();
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(replication)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    let results = admin
        .create_topics(&topics, &opts)
        .await
        .context("CreateTopics request failed (is the broker reachable?)")?;
    let mut out = Vec::new();
    for r in results {
        match r {
            Ok(t) => out.push((t, "created")),
            Err((t, RDKafkaErrorCode::TopicAlreadyExists)) => out.push((t, "exists")),
            Err((t, e)) => anyhow::bail!("cannot create topic {t}: {e}"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_settings_come_from_the_config_then_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("processor.toml");
        std::fs::write(
            &path,
            "group_id = \"g\"\n[kafka]\nbrokers = \"kafka-1:9093\"\ntopic_prefix = \"acme\"\n\
             [kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"PLAIN\"\n",
        )
        .unwrap();
        let k = kafka_config(
            Some(path.clone()),
            None,
            None,
            vec![parse_property("sasl.mechanism=SCRAM-SHA-512").unwrap()],
        )
        .unwrap();
        assert_eq!(k.brokers, "kafka-1:9093");
        assert_eq!(k.topic_prefix, "acme");
        assert_eq!(k.properties["security.protocol"], "SASL_SSL");
        assert_eq!(k.properties["sasl.mechanism"], "SCRAM-SHA-512");
        let conf = k.client_config();
        assert_eq!(conf.get("security.protocol"), Some("SASL_SSL"));

        let k = kafka_config(Some(path), Some("b:1".into()), Some("p".into()), vec![]).unwrap();
        assert_eq!((k.brokers.as_str(), k.topic_prefix.as_str()), ("b:1", "p"));
        let k = kafka_config(None, None, None, vec![]).unwrap();
        assert_eq!(k, KafkaConfig::default());
        assert!(parse_property("novalue").is_err());
    }
}
