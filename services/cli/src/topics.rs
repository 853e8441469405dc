//! `fleetpulse topics create`: create every topic fleetpulse uses.
//!
//! Services do not create topics themselves: in production, topic
//! partitioning and retention are the platform team's decision. This command
//! (or a Helm hook running it) creates them with a chosen partition count and
//! leaves existing topics alone.

use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use fleetpulse_core::kafka::KafkaConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

#[derive(Subcommand)]
pub(crate) enum TopicsCommand {
    /// Create the raw, alert and dead-letter topics (existing ones are kept).
    Create {
        /// Bootstrap servers.
        #[arg(long, default_value = "127.0.0.1:9092")]
        kafka: String,
        /// Topic prefix.
        #[arg(long, default_value = "fleetpulse")]
        topic_prefix: String,
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
            partitions,
            replication,
        } => {
            let k = KafkaConfig {
                brokers: kafka,
                topic_prefix,
                ..KafkaConfig::default()
            };
            let created = create_topics(&k, partitions, replication).await?;
            for (topic, state) in created {
                println!("{topic}: {state}");
            }
        }
    }
    Ok(())
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
