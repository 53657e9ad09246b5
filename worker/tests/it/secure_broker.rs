//! A Kafka endpoint that requires SASL_SSL with SASL PLAIN, as Event Hubs' Kafka endpoint does:
//! Apache Kafka's own SASL_SSL listener (see tributary-testkit), with the user `$ConnectionString` whose
//! password is an Event Hubs-shaped connection string, and a server certificate signed by a CA
//! the test generates with the openssl CLI. The broker's plain listener serves the test's own
//! set-up (topics); the worker and the test's SASL producer use only the SASL_SSL listener.

use std::path::PathBuf;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};

use tributary_testkit::kafka::{Kafka, KafkaConfig, SaslConfig};

/// The SASL PLAIN user name of Event Hubs' Kafka endpoint.
pub const EVENT_HUBS_USER: &str = "$ConnectionString";

/// A connection string shaped like Event Hubs' with a fresh random key (base64-like, 44 chars).
pub fn fake_connection_string(namespace: &str) -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "Endpoint=sb://{namespace}.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={a}{}=",
        &b[..11]
    )
}

/// An Apache Kafka broker whose SASL_SSL listener accepts PLAIN as `$ConnectionString` with its
/// connection string as the password, over TLS with a certificate the test CA signed.
pub struct SecureBroker {
    /// The SASL_SSL listener (127.0.0.1:port).
    pub bootstrap: String,
    /// The CA that signed the broker's certificate (PEM).
    pub ca: PathBuf,
    /// The password the broker accepts.
    password: String,
    kafka: Kafka,
}

impl SecureBroker {
    /// A broker whose certificate names localhost and 127.0.0.1.
    pub fn start() -> SecureBroker {
        Self::start_with_san("DNS:localhost,IP:127.0.0.1")
    }

    /// A broker whose certificate carries the subject alternative names `san`.
    pub fn start_with_san(san: &str) -> SecureBroker {
        let password = fake_connection_string("tributary-test");
        let kafka = Kafka::start_with(KafkaConfig {
            sasl: Some(SaslConfig {
                users: vec![(EVENT_HUBS_USER.to_string(), password.clone())],
                san: san.to_string(),
            }),
            ..KafkaConfig::default()
        });
        SecureBroker {
            bootstrap: kafka.sasl_bootstrap.clone().expect("a SASL_SSL listener"),
            ca: kafka.ca.clone().expect("the test CA"),
            password,
            kafka,
        }
    }

    pub fn topic(&self, name: &str, partitions: i32) {
        self.kafka.topic(name, partitions);
    }

    /// The connection string the broker accepts now.
    pub fn connection_string(&self) -> String {
        self.password.clone()
    }

    /// Accepts a new connection string only, as regenerating an Event Hubs key does: the
    /// broker restarts with the new password (on its log directory), which also drops every
    /// open connection, so that clients must log in again. Returns the new one once the broker
    /// is up again.
    pub fn rotate_connection_string(&mut self) -> String {
        let new = fake_connection_string("tributary-test");
        self.kafka
            .set_sasl_users(vec![(EVENT_HUBS_USER.to_string(), new.clone())]);
        self.password = new.clone();
        new
    }

    /// A producer that connects as an Event Hubs client does: SASL_SSL, PLAIN, the test CA.
    pub fn producer(&self) -> ThreadedProducer<DefaultProducerContext> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("security.protocol", "SASL_SSL")
            .set("sasl.mechanism", "PLAIN")
            .set("sasl.username", EVENT_HUBS_USER)
            .set("sasl.password", self.connection_string())
            .set("ssl.ca.location", self.ca.to_string_lossy().as_ref())
            .set("linger.ms", "2")
            .set("enable.idempotence", "true")
            .create()
            .expect("producer")
    }
}

/// Flushes a producer, failing the test with a clear message.
pub fn flush(producer: &ThreadedProducer<DefaultProducerContext>) {
    producer
        .flush(Duration::from_secs(30))
        .expect("flush the producer over SASL_SSL");
}
