//! Which connection failures stop the worker, and how a refused one is told to the user.
//!
//! librdkafka retries a broker connection forever. That is right while a broker is down,
//! restarting or out of reach for a while (a rolling restart, Event Hubs maintenance, a network
//! blip), so a refused or dropped connection is never fatal here: a running consumer keeps
//! retrying, and at start the probe ([`super::connection::probe`]) waits as long as any metadata
//! request would before it gives up naming the last connection error.
//!
//! Two failures never heal by retrying, so they are fatal as soon as librdkafka reports them:
//! - the broker refused the credentials (SASL authentication failed): the same password is
//!   refused again, and a stream of failed logins only gets the client throttled or locked out;
//! - the broker's TLS certificate could not be verified (not signed by a CA the worker trusts,
//!   or not naming the host it connected to): nothing changes until the trust settings do.
//!
//! The worker then exits non-zero with an error that names the broker and says what to fix. In
//! Kubernetes the pod restarts with back-off and the operator shows that error in the
//! resource's status, instead of a worker that looks alive while it reads nothing.

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tributary_crds::StreamingIngestion;

use crate::error::Error;
use crate::secrets::SecretString;

/// A connection failure that retrying cannot fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fatal {
    /// The broker refused the SASL credentials (or the mechanism).
    Authentication,
    /// The broker's TLS certificate did not verify against the trusted CAs and the host name.
    Certificate,
}

/// Sorts a client error librdkafka reported: `Some` for the failures that stop the worker.
pub fn classify(code: RDKafkaErrorCode, reason: &str) -> Option<Fatal> {
    match code {
        // librdkafka reports a refused SaslAuthenticate (and a SASL mechanism the broker does
        // not offer) as __AUTHENTICATION; 58 is the broker's own code for the same.
        RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed => {
            Some(Fatal::Authentication)
        }
        // __SSL also covers handshakes cut short by the network, which may heal: only a failed
        // certificate verification (OpenSSL's "certificate verify failed", which includes a
        // host name mismatch) is final. librdkafka reports it as __SSL, and on a retried
        // handshake sometimes as __TRANSPORT, with the same OpenSSL reason.
        RDKafkaErrorCode::SSL | RDKafkaErrorCode::BrokerTransportFailure
            if reason.contains("certificate verify failed") =>
        {
            Some(Fatal::Certificate)
        }
        _ => None,
    }
}

/// How the source authenticates and what it trusts, told in errors. Holds the secret values
/// only to scrub them from any text a broker sends back.
#[derive(Clone)]
pub struct Security {
    /// What to check when the broker refuses the credentials.
    credentials: String,
    /// Where librdkafka options go in the manifest.
    options_field: &'static str,
    /// The CA option the manifest sets, described without its value when that is a PEM text.
    ca_option: Option<String>,
    secrets: Vec<SecretString>,
}

impl Security {
    pub fn new(ingestion: &StreamingIngestion, secrets: Vec<SecretString>) -> Security {
        let source = &ingestion.spec.source;
        let (options_field, options, credentials) = if let Some(event_hubs) = &source.event_hubs {
            let secret = &event_hubs.connection_string.secret_key_ref;
            let credentials = format!(
                "Check the Event Hubs connection string in Secret {}, key {} (spec.source.eventHubs.connectionString): it must be a connection string of namespace {} (Endpoint=sb://...;SharedAccessKeyName=...;SharedAccessKey=...), of a shared access policy with Listen rights, and current (a regenerated key refuses the old one)",
                secret.name, secret.key, event_hubs.namespace
            );
            (
                "spec.source.eventHubs.options",
                &event_hubs.read.options,
                credentials,
            )
        } else if let Some(kafka) = &source.kafka {
            let mut settings: Vec<String> = ["sasl.mechanism", "sasl.mechanisms", "sasl.username"]
                .iter()
                .filter_map(|key| {
                    option_value(&kafka.read.options, key)
                        .map(|value| format!("{key}={value} (options)"))
                })
                .collect();
            settings.extend(kafka.secret_options.iter().map(|(option, value)| {
                format!(
                    "{option} from Secret {}, key {} (secretOptions)",
                    value.secret_key_ref.name, value.secret_key_ref.key
                )
            }));
            let credentials = if settings.is_empty() {
                "Check the SASL settings in spec.source.kafka: sasl.mechanism and sasl.username in options, sasl.password in secretOptions".to_string()
            } else {
                format!(
                    "Check the SASL settings in spec.source.kafka: {}",
                    settings.join(", ")
                )
            };
            (
                "spec.source.kafka.options",
                &kafka.read.options,
                credentials,
            )
        } else {
            return Security {
                credentials: "Check the source's SASL settings".into(),
                options_field: "spec.source options",
                ca_option: None,
                secrets,
            };
        };
        let ca_option = if let Some(location) = option_value(options, "ssl.ca.location") {
            Some(format!("ssl.ca.location={location}"))
        } else if option_value(options, "ssl.ca.pem").is_some() {
            Some("ssl.ca.pem".to_string())
        } else {
            None
        };
        Security {
            credentials,
            options_field,
            ca_option,
            secrets,
        }
    }

    /// The error that stops the worker, when `error` is one that retrying cannot fix.
    pub fn fatal_error(&self, error: &KafkaError, reason: &str, bootstrap: &str) -> Option<Error> {
        let code = error.rdkafka_error_code()?;
        let reason = self.redact(reason);
        let fatal = classify(code, &reason)?;
        let bootstrap = bootstrap.to_string();
        Some(match fatal {
            Fatal::Authentication => Error::KafkaAuthentication {
                bootstrap,
                reason,
                remedy: self.credentials.clone(),
            },
            Fatal::Certificate => Error::KafkaCertificate {
                bootstrap,
                reason,
                remedy: self.trust_remedy(),
            },
        })
    }

    fn trust_remedy(&self) -> String {
        match &self.ca_option {
            None => format!(
                "The certificate is not signed by a CA the worker trusts (the system's CA certificates), or does not name the host the worker connects to. If the broker uses a private CA, or a proxy re-signs TLS, give that CA certificate in {} as ssl.ca.pem (its PEM text) or ssl.ca.location (a PEM file the worker can read); host name verification stays on",
                self.options_field
            ),
            Some(option) => format!(
                "The CA given in {} ({option}) does not verify it: it must hold (PEM) the CA that signed the broker's certificate, and the certificate must name the host the worker connects to (host name verification stays on)",
                self.options_field
            ),
        }
    }

    /// Replaces any secret value in a text from outside (a broker's error message) with a mark.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in &self.secrets {
            let value = secret.expose();
            if !value.is_empty() && text.contains(value) {
                text = text.replace(value, "<redacted>");
            }
        }
        text
    }
}

/// An option's value, written with or without Spark's `kafka.` prefix.
fn option_value<'a>(
    options: &'a std::collections::BTreeMap<String, String>,
    name: &str,
) -> Option<&'a String> {
    options
        .iter()
        .find(|(key, _)| tributary_crds::librdkafka_option_name(key) == name)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_credentials_and_unverified_certificates_are_fatal_and_nothing_else() {
        assert_eq!(
            classify(
                RDKafkaErrorCode::Authentication,
                "sasl_ssl://eh.servicebus.windows.net:9093/bootstrap: SASL authentication error: Authentication failed: Invalid username or password (after 5ms in state AUTH_REQ)"
            ),
            Some(Fatal::Authentication)
        );
        assert_eq!(
            classify(
                RDKafkaErrorCode::SSL,
                "ssl://127.0.0.1:9093/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed: broker certificate could not be verified, verify that ssl.ca.location is correctly configured or root CA certificates are installed (install ca-certificates package) (after 4ms in state SSL_HANDSHAKE)"
            ),
            Some(Fatal::Certificate)
        );
        // A handshake cut short, a refused connection, a broker going away: retried.
        assert_eq!(
            classify(
                RDKafkaErrorCode::BrokerTransportFailure,
                "sasl_ssl://127.0.0.1:9093/bootstrap: error:0A000086:SSL routines::certificate verify failed (after 1ms in state SSL_HANDSHAKE)"
            ),
            Some(Fatal::Certificate)
        );
        assert_eq!(
            classify(
                RDKafkaErrorCode::SSL,
                "SSL handshake failed: SSL transport error: Connection reset by peer"
            ),
            None
        );
        assert_eq!(
            classify(
                RDKafkaErrorCode::BrokerTransportFailure,
                "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused"
            ),
            None
        );
        assert_eq!(
            classify(RDKafkaErrorCode::AllBrokersDown, "1/1 brokers are down"),
            None
        );
    }
}
