//! How Secret values reach a worker without ever being written into a ConfigMap, a status or a
//! log: the operator mounts each referenced Secret under [`DEFAULT_SECRETS_DIR`]`/<secret>/<key>`;
//! a standalone worker reads the same reference from an environment variable instead.

use crate::spec::{SecretKeyRef, StreamingIngestionSpec};

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
}
