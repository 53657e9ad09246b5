//! Secret values (Kafka credentials, the Event Hubs connection string), read the way the operator
//! delivers them: a file `<secrets dir>/<secret>/<key>` mounted from the Secret, or, for a
//! standalone worker, the environment variable `crds::secrets::env_var_name` names.
//!
//! [`SecretString`] never prints its value, so a secret cannot leak through `{:?}` or a log line.

use std::fmt;
use std::path::PathBuf;

use tributary_crds::SecretKeyRef;
use tributary_crds::secrets::{DEFAULT_SECRETS_DIR, SECRETS_DIR_ENV, env_var_name};

use crate::error::{Error, Result};

/// A secret value; its Debug and Display show only that it is redacted.
#[derive(Clone)]
pub struct SecretString(String);

impl SecretString {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Reads one Secret reference; `field` names where the manifest uses it (for the error).
pub fn resolve(reference: &SecretKeyRef, field: &str) -> Result<SecretString> {
    let dir = std::env::var_os(SECRETS_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SECRETS_DIR));
    let file = dir.join(&reference.name).join(&reference.key);
    if let Ok(value) = std::fs::read_to_string(&file) {
        // Mounted Secrets often end with the newline of the `kubectl create secret --from-file`.
        return Ok(SecretString(
            value.trim_end_matches(['\r', '\n']).to_string(),
        ));
    }
    let env_var = env_var_name(reference);
    match std::env::var(&env_var) {
        Ok(value) => Ok(SecretString(value)),
        Err(_) => Err(Error::MissingSecret {
            field: field.to_string(),
            name: reference.name.clone(),
            key: reference.key.clone(),
            file,
            env_var,
        }),
    }
}
