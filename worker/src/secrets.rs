//! Secret values (Kafka credentials, the Event Hubs connection string), read the way the operator
//! delivers them: a file `<secrets dir>/<secret>/<key>` mounted from the Secret, or, for a
//! standalone worker, the environment variable `crds::secrets::env_var_name` names.
//!
//! [`SecretString`] never prints its value, so a secret cannot leak through `{:?}` or a log line.
//! Every value read is also remembered, so [`redact`] can scrub error text that a library built
//! from a request or a configuration before it is printed or written into a status.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::{LazyLock, Mutex};

use regex::Regex;
use tributary_crds::secrets::{DEFAULT_SECRETS_DIR, SECRETS_DIR_ENV, env_var_name};
use tributary_crds::{SecretKeyRef, SecretValueSource};

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

/// Every secret value this process has read (see [`redact`]).
static RESOLVED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The signature of a SAS token in a URL or a message: the one part of it that is secret.
static SAS_SIGNATURE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r#"(?i)\bsig=[^&\s"'<>]+"#).ok());

/// Shorter values are not redacted: they would blank out ordinary words, and are no secret.
const REDACT_MIN_LEN: usize = 6;

/// `text` with every secret value read so far, and any SAS signature, replaced by `<redacted>`.
pub fn redact(text: &str) -> String {
    let mut out = text.to_string();
    if let Ok(values) = RESOLVED.lock() {
        for value in values.iter().filter(|v| v.len() >= REDACT_MIN_LEN) {
            out = out.replace(value.as_str(), "<redacted>");
        }
    }
    if let Some(signature) = SAS_SIGNATURE.as_ref() {
        out = signature.replace_all(&out, "sig=<redacted>").into_owned();
    }
    out
}

/// Keeps a secret the process learnt some other way (an access token, vended credentials) out
/// of messages too.
pub fn remember(value: String) -> SecretString {
    if let Ok(mut values) = RESOLVED.lock()
        && !values.contains(&value)
    {
        values.push(value.clone());
    }
    SecretString(value)
}

/// Object store options: the plain ones and those read from Secrets (`field` is the manifest
/// path that holds them, e.g. `spec.sink.delta`, for the error naming a missing Secret).
pub fn storage_options(
    plain: &BTreeMap<String, String>,
    secret: &BTreeMap<String, SecretValueSource>,
    field: &str,
) -> Result<HashMap<String, String>> {
    let mut options: HashMap<String, String> =
        plain.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for (option, value) in secret {
        let field = format!("{field}.secretStorageOptions[{option}]");
        options.insert(
            option.clone(),
            resolve(&value.secret_key_ref, &field)?.expose().to_string(),
        );
    }
    Ok(options)
}

/// Reads one Secret reference; `field` names where the manifest uses it (for the error).
pub fn resolve(reference: &SecretKeyRef, field: &str) -> Result<SecretString> {
    let dir = std::env::var_os(SECRETS_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SECRETS_DIR));
    let file = dir.join(&reference.name).join(&reference.key);
    if let Ok(value) = std::fs::read_to_string(&file) {
        // Mounted Secrets often end with the newline of the `kubectl create secret --from-file`.
        return Ok(remember(value.trim_end_matches(['\r', '\n']).to_string()));
    }
    let env_var = env_var_name(reference);
    match std::env::var(&env_var) {
        Ok(value) => Ok(remember(value)),
        Err(_) => Err(Error::MissingSecret {
            field: field.to_string(),
            name: reference.name.clone(),
            key: reference.key.clone(),
            file,
            env_var,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_removes_secret_values_and_sas_signatures() {
        remember("c2VjcmV0LWtleS12YWx1ZQ==".to_string());
        let text = "PUT http://h/c/o?sv=2022&sig=abc%2Bdef%3D&se=1 failed; key c2VjcmV0LWtleS12YWx1ZQ== rejected";
        let redacted = redact(text);
        assert!(!redacted.contains("c2VjcmV0LWtleS12YWx1ZQ=="), "{redacted}");
        assert!(!redacted.contains("abc%2Bdef"), "{redacted}");
        assert!(
            redacted.contains("sv=2022&sig=<redacted>&se=1"),
            "{redacted}"
        );
    }
}
