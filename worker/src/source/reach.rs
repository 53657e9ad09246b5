//! Whether the brokers answer now, for readiness: a metadata request on a client of its own
//! (not a group member), asked again and again while the query runs. A worker whose brokers
//! are gone keeps retrying, but it must not call itself ready meanwhile.

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use super::config::{SourceConfig, Subscription};
use super::security::Security;
use crate::error::{Error, Result};

/// Remembers the last connection error librdkafka reported (redacted).
struct ReachContext {
    security: Security,
    last: Mutex<Option<String>>,
}

impl ClientContext for ReachContext {
    fn error(&self, error: KafkaError, reason: &str) {
        // "1/1 brokers are down" follows each broker's own error and says less.
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            return;
        }
        let reason = self.security.redact(reason);
        let mut last = match self.last.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *last = Some(reason);
    }
}

impl ConsumerContext for ReachContext {}

/// Asks the brokers for the metadata of one topic the query reads (of every topic for a
/// pattern).
pub struct BrokerCheck {
    client: BaseConsumer<ReachContext>,
    topic: Option<String>,
    bootstrap: String,
}

impl BrokerCheck {
    pub fn new(source: &SourceConfig) -> Result<BrokerCheck> {
        let mut config = source.client_config();
        config.remove("group.id");
        let context = ReachContext {
            security: source.security.clone(),
            last: Mutex::new(None),
        };
        let client =
            config
                .create_with_context(context)
                .map_err(|error| Error::CreateConsumer {
                    bootstrap: source.bootstrap.clone(),
                    source: Box::new(error),
                })?;
        let topic = match &source.subscription {
            Subscription::Topics(topics) => topics.first().cloned(),
            Subscription::Assign(assign) => assign.keys().next().cloned(),
            Subscription::Pattern(_) => None,
        };
        Ok(BrokerCheck {
            client,
            topic,
            bootstrap: source.bootstrap.clone(),
        })
    }

    /// Whether the brokers answer within `timeout`; else why not, naming them.
    pub fn check(&self, timeout: Duration) -> std::result::Result<(), String> {
        let answer = self.client.fetch_metadata(self.topic.as_deref(), timeout);
        // Errors reach the context only when the client's queue is served.
        while self.client.poll(Duration::from_millis(10)).is_some() {}
        let last = {
            let mut last = match self.client.context().last.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            last.take()
        };
        match answer {
            Ok(_) => Ok(()),
            Err(error) => Err(format!(
                "cannot reach the Kafka brokers at {}: {}",
                self.bootstrap,
                last.unwrap_or_else(|| error.to_string())
            )),
        }
    }
}
