//! The connection check before the query starts. Which failures are fatal is decided in
//! [`super::security`]; a refused or dropped connection is never fatal: the probe waits as long
//! as any metadata request would ([`METADATA_TIMEOUT`]) before it gives up naming the last
//! connection error.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use super::config::{METADATA_TIMEOUT, SourceConfig};
use super::security::Security;
use crate::error::{Error, Result};

/// How long one metadata attempt of the probe waits before the probe looks at what librdkafka
/// reported meanwhile: a refused login or an untrusted certificate stops the worker this soon.
const PROBE_ATTEMPT: Duration = Duration::from_millis(500);

/// What the probe's client saw: a fatal failure, or the last retryable one.
#[derive(Default)]
struct Seen {
    fatal: Option<Error>,
    last: Option<String>,
}

/// The probe client's context: records the errors librdkafka reports.
struct ProbeContext {
    security: Security,
    bootstrap: String,
    seen: Mutex<Seen>,
}

impl ProbeContext {
    fn with_seen<T>(&self, f: impl FnOnce(&mut Seen) -> T) -> T {
        let mut guard = match self.seen.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }
}

impl ClientContext for ProbeContext {
    fn error(&self, error: KafkaError, reason: &str) {
        match self.security.fatal_error(&error, reason, &self.bootstrap) {
            Some(fatal) => self.with_seen(|seen| {
                seen.fatal.get_or_insert(fatal);
            }),
            // "1/1 brokers are down" follows each broker's own error and says less.
            None if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) => {}
            None => {
                let reason = self.security.redact(reason);
                let new = self.with_seen(|seen| {
                    let new = seen.last.as_ref() != Some(&reason);
                    seen.last = Some(reason.clone());
                    new
                });
                if new {
                    tracing::warn!(bootstrap = %self.bootstrap, %error, %reason, "cannot connect to Kafka yet; retrying");
                }
            }
        }
    }
}

impl ConsumerContext for ProbeContext {}

/// Connects to the brokers once before the query starts (a metadata request over the source's
/// own settings: TLS, SASL and all), so that refused credentials or an untrusted certificate
/// stop the worker at once with an error saying so, and an unreachable broker with an error
/// naming the last connection failure.
pub fn probe(source: &SourceConfig) -> Result<()> {
    let context = ProbeContext {
        security: source.security.clone(),
        bootstrap: source.bootstrap.clone(),
        seen: Mutex::new(Seen::default()),
    };
    let mut config = source.client_config();
    // Not a group member: a metadata request is all it sends.
    config.remove("group.id");
    let client: BaseConsumer<ProbeContext> =
        config
            .create_with_context(context)
            .map_err(|source_error| Error::CreateConsumer {
                bootstrap: source.bootstrap.clone(),
                source: Box::new(source_error),
            })?;
    let started = Instant::now();
    loop {
        let attempt = client.fetch_metadata(None, PROBE_ATTEMPT);
        // Errors reach the context only when the client's queue is served. A poll returns at
        // an error event, or when its time is up having served the log events queued before
        // (a zero timeout would serve one event only).
        while client.poll(Duration::from_millis(10)).is_some() {}
        let (fatal, last) = client
            .context()
            .with_seen(|seen| (seen.fatal.take(), seen.last.clone()));
        if let Some(fatal) = fatal {
            return Err(fatal);
        }
        match attempt {
            Ok(_) => return Ok(()),
            Err(error) if started.elapsed() >= METADATA_TIMEOUT => {
                return Err(Error::KafkaUnreachable {
                    bootstrap: source.bootstrap.clone(),
                    seconds: METADATA_TIMEOUT.as_secs(),
                    reason: last.unwrap_or_else(|| error.to_string()),
                });
            }
            Err(_) => {}
        }
    }
}
