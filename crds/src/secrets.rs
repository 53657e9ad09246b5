//! How Secret values reach a worker without ever being written into a ConfigMap, a status or a
//! log: the operator mounts each referenced Secret under [`DEFAULT_SECRETS_DIR`]`/<secret>/<key>`;
//! a standalone worker reads the same reference from an environment variable instead.

use std::collections::BTreeMap;
use std::fmt;

use crate::spec::{SECRET_KAFKA_OPTIONS, SecretKeyRef, StreamingIngestionSpec};

/// Environment variable that moves the secrets directory (tests, standalone runs).
pub const SECRETS_DIR_ENV: &str = "TRIBUTARY_SECRETS_DIR";
/// Where the operator mounts referenced Secrets in worker pods.
pub const DEFAULT_SECRETS_DIR: &str = "/var/run/secrets/tributary";

/// The environment variable a standalone worker reads a reference from:
/// `TRIBUTARY_SECRET_<NAME>_<KEY>`, upper-cased, every other character as `_`.
/// For `{name: eh, key: connection-string}`: `TRIBUTARY_SECRET_EH_CONNECTION_STRING`.
pub fn env_var_name(reference: &SecretKeyRef) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!(
        "TRIBUTARY_SECRET_{}_{}",
        clean(&reference.name),
        clean(&reference.key)
    )
}

/// Every Secret reference in a spec, with the field path that holds it.
pub fn secret_references(spec: &StreamingIngestionSpec) -> Vec<(String, &SecretKeyRef)> {
    let mut found = Vec::new();
    if let Some(kafka) = &spec.source.kafka {
        for (option, value) in &kafka.secret_options {
            found.push((
                format!("spec.source.kafka.secretOptions[{option}]"),
                &value.secret_key_ref,
            ));
        }
    }
    if let Some(event_hubs) = &spec.source.event_hubs {
        found.push((
            "spec.source.eventHubs.connectionString".to_string(),
            &event_hubs.connection_string.secret_key_ref,
        ));
    }
    let delta = &spec.sink.delta;
    for (option, value) in &delta.secret_storage_options {
        found.push((
            format!("spec.sink.delta.secretStorageOptions[{option}]"),
            &value.secret_key_ref,
        ));
    }
    if let Some(catalog) = &delta.unity_catalog {
        if let Some(token) = &catalog.token {
            found.push((
                "spec.sink.delta.unityCatalog.token".to_string(),
                &token.secret_key_ref,
            ));
        }
        if let Some(oauth) = &catalog.oauth {
            found.push((
                "spec.sink.delta.unityCatalog.oauth.clientId".to_string(),
                &oauth.client_id.secret_key_ref,
            ));
            found.push((
                "spec.sink.delta.unityCatalog.oauth.clientSecret".to_string(),
                &oauth.client_secret.secret_key_ref,
            ));
        }
    }
    for (option, value) in &spec.checkpoint.secret_storage_options {
        found.push((
            format!("spec.checkpoint.secretStorageOptions[{option}]"),
            &value.secret_key_ref,
        ));
    }
    found
}

/// Whether a librdkafka option (with or without Spark's `kafka.` prefix) carries a credential:
/// one of [`SECRET_KAFKA_OPTIONS`], or a name holding password, passphrase, secret or jaas.
pub fn is_secret_option(name: &str) -> bool {
    let lower = name.trim().to_ascii_lowercase();
    let bare = lower.strip_prefix("kafka.").unwrap_or(&lower);
    SECRET_KAFKA_OPTIONS.contains(&bare)
        || ["password", "passphrase", "secret", "jaas"]
            .iter()
            .any(|word| bare.contains(word))
}

/// Object store options that hold secrets and must come from secretStorageOptions.
pub const SECRET_STORAGE_OPTIONS: &[&str] = &[
    "azure_storage_account_key",
    "azure_storage_access_key",
    "azure_storage_master_key",
    "account_key",
    "access_key",
    "master_key",
    "azure_storage_sas_key",
    "azure_storage_sas_token",
    "sas_key",
    "sas_token",
    "azure_client_secret",
    "client_secret",
    "azure_storage_token",
    "bearer_token",
    "aws_secret_access_key",
    "secret_access_key",
];

/// Whether an object store option carries a credential.
pub fn is_secret_storage_option(name: &str) -> bool {
    let lower = name.trim().to_ascii_lowercase();
    SECRET_STORAGE_OPTIONS.contains(&lower.as_str())
        || ["secret", "password", "token", "_key"]
            .iter()
            .any(|word| lower.contains(word))
}

/// The message of the CRD rule refusing credentials in `options`.
pub const SECRET_OPTIONS_RULE_MESSAGE: &str = "options must not hold credentials (sasl.password, sasl.jaas.config, sasl.oauthbearer.config, ssl.key.password, ssl.key.pem, ...): they would be stored and shown in plain text; read them from a Secret with secretOptions, e.g. secretOptions: {sasl.password: {secretKeyRef: {name: kafka-credentials, key: password}}}";

/// The CRD rule refusing credentials in `options`: the names of [`SECRET_KAFKA_OPTIONS`], with
/// and without Spark's `kafka.` prefix, compared whole (comparisons on the map's keys, whose
/// length the schema cannot bound, keep the rule's estimated cost low).
pub fn secret_options_rule() -> String {
    let names: Vec<String> = SECRET_KAFKA_OPTIONS
        .iter()
        .flat_map(|name| [format!("'{name}'"), format!("'kafka.{name}'")])
        .collect();
    format!("self.all(k, !(k in [{}]))", names.join(", "))
}

/// What to write instead of a credential typed into the options at `path` (a map field such as
/// `spec.source.kafka.options`), named `option`; never the value.
pub fn secret_option_remedy(path: &str, option: &str) -> String {
    let lower = option.trim().to_ascii_lowercase();
    let bare = lower.strip_prefix("kafka.").unwrap_or(&lower);
    if path.starts_with("spec.source.eventHubs") {
        return "carries a credential, which must never be written in options (it would be stored and shown in plain text): Event Hubs signs in with the connection string from the Secret named in spec.source.eventHubs.connectionString.secretKeyRef".to_string();
    }
    let reference = "{secretKeyRef: {name: <secret>, key: <key>}}";
    let form = if bare == "sasl.jaas.config" {
        format!(
            "sasl.jaas.config is the Java client's; librdkafka takes the user in options and the password from a Secret: options: {{sasl.username: <user>}} and secretOptions: {{sasl.password: {reference}}}"
        )
    } else if bare.starts_with("ssl.truststore") || bare == "ssl.keystore.key" {
        format!(
            "{bare} is the Java client's keystore setting; librdkafka reads PEM: ssl.ca.pem or ssl.ca.location in options for the CA, and the client key from a Secret: secretOptions: {{ssl.key.pem: {reference}}}"
        )
    } else {
        format!("read it from a Secret instead: secretOptions: {{{bare}: {reference}}}")
    };
    format!(
        "carries a credential, which must never be written in options (it would be stored and shown in plain text); {form}"
    )
}

/// Shows an option map with the values of secret-like keys replaced by `<redacted>`.
pub struct RedactedOptions<'a>(pub &'a BTreeMap<String, String>, pub fn(&str) -> bool);

impl fmt::Debug for RedactedOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (key, value) in self.0 {
            if (self.1)(key) {
                map.entry(key, &"<redacted>");
            } else {
                map.entry(key, value);
            }
        }
        map.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_var_names_are_shell_safe() {
        let reference = SecretKeyRef {
            name: "eh-creds".into(),
            key: "connection.string".into(),
        };
        assert_eq!(
            env_var_name(&reference),
            "TRIBUTARY_SECRET_EH_CREDS_CONNECTION_STRING"
        );
    }

    #[test]
    fn credential_options_are_recognised_with_and_without_the_spark_prefix() {
        for name in [
            "sasl.password",
            "kafka.sasl.jaas.config",
            "sasl.oauthbearer.config",
            "sasl.oauthbearer.client.secret",
            "ssl.key.password",
            "ssl.keystore.password",
            "ssl.key.pem",
            "ssl.truststore.password",
            "KAFKA.SSL.KEY.PEM",
            "sasl.oauthbearer.assertion.private.key.passphrase",
        ] {
            assert!(is_secret_option(name), "{name}");
        }
        for name in [
            "security.protocol",
            "sasl.mechanism",
            "sasl.username",
            "ssl.ca.pem",
            "ssl.certificate.pem",
            "ssl.key.location",
            "group.id",
        ] {
            assert!(!is_secret_option(name), "{name}");
        }
    }

    #[test]
    fn debug_output_redacts_credential_values() {
        let options = BTreeMap::from([
            (
                "sasl.jaas.config".to_string(),
                "password=\"hunter2\"".to_string(),
            ),
            ("security.protocol".to_string(), "SASL_SSL".to_string()),
        ]);
        let shown = format!("{:?}", RedactedOptions(&options, is_secret_option));
        assert_eq!(
            shown,
            r#"{"sasl.jaas.config": "<redacted>", "security.protocol": "SASL_SSL"}"#
        );
    }

    #[test]
    fn the_crd_rule_lists_every_name_with_and_without_the_prefix() {
        let rule = secret_options_rule();
        assert!(rule.starts_with("self.all(k, !(k in ['sasl.password', 'kafka.sasl.password', "));
        for name in SECRET_KAFKA_OPTIONS {
            assert!(rule.contains(&format!("'kafka.{name}'")), "{name}");
        }
    }
}
