//! Storage credentials the catalog vends for a table (`temporary-table-credentials`), as
//! object_store options, and their renewal in a long-running worker.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

/// Vended credentials are renewed at the latest this long before they expire.
const MAX_RENEWAL_MARGIN: Duration = Duration::from_secs(15 * 60);

/// Storage credentials the catalog vended for one table, as object_store options.
#[derive(Clone)]
pub struct VendedCredentials {
    /// object_store option names and values (secret: never logged).
    pub options: HashMap<String, String>,
    /// When they stop working (None: the catalog gave no expiry).
    pub expires_at: Option<SystemTime>,
    /// When they were received.
    pub issued_at: SystemTime,
}

impl fmt::Debug for VendedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<&String> = self.options.keys().collect();
        keys.sort();
        f.debug_struct("VendedCredentials")
            .field("options", &keys)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl VendedCredentials {
    /// When to ask for new ones: halfway through their life, but no later than 15 minutes
    /// before they expire (Databricks vends them for about an hour).
    pub fn renew_at(&self) -> Option<SystemTime> {
        let expires_at = self.expires_at?;
        let lifetime = expires_at
            .duration_since(self.issued_at)
            .unwrap_or(Duration::ZERO);
        let margin = (lifetime / 2).min(MAX_RENEWAL_MARGIN);
        Some(expires_at - margin)
    }

    /// Whether the catalog vended anything at all (the open-source server vends nothing for a
    /// table on local storage).
    pub fn is_empty(&self) -> bool {
        self.options.is_empty()
    }
}

/// The body of `temporary-table-credentials`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct TemporaryCredentialsResponse {
    #[serde(default)]
    aws_temp_credentials: Option<AwsCredentials>,
    #[serde(default)]
    azure_user_delegation_sas: Option<AzureSas>,
    #[serde(default)]
    azure_aad: Option<AzureAad>,
    #[serde(default)]
    gcp_oauth_token: Option<GcpToken>,
    #[serde(default)]
    r2_temp_credentials: Option<AwsCredentials>,
    /// Milliseconds since the epoch. Databricks documents a JSON number; servers that encode
    /// the API's protobuf messages with the proto3 JSON mapping send int64 as a string.
    #[serde(default, deserialize_with = "millis")]
    expiration_time: Option<i64>,
}

/// An int64 as a JSON number or as a string of digits (the proto3 JSON mapping).
fn millis<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Millis {
        Number(i64),
        Text(String),
    }
    match Option::<Millis>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Millis::Number(ms)) => Ok(Some(ms)),
        Some(Millis::Text(text)) => text.trim().parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!(
                "expiration_time {text:?} is not a number of milliseconds"
            ))
        }),
    }
}

#[derive(Debug, Deserialize)]
struct AwsCredentials {
    access_key_id: String,
    secret_access_key: String,
    #[serde(default)]
    session_token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AzureSas {
    sas_token: String,
}

#[derive(Debug, Deserialize)]
struct AzureAad {
    aad_token: String,
}

#[derive(Debug, Deserialize)]
struct GcpToken {
    #[serde(default)]
    oauth_token: Option<String>,
}

/// Maps a `temporary-table-credentials` body to object_store options.
pub(super) fn vended_options(
    body: TemporaryCredentialsResponse,
    issued_at: SystemTime,
) -> std::result::Result<VendedCredentials, String> {
    let mut options = HashMap::new();
    if let Some(sas) = body.azure_user_delegation_sas {
        // object_store wants the query string without its leading '?'.
        options.insert(
            "azure_storage_sas_key".to_string(),
            sas.sas_token.trim_start_matches('?').to_string(),
        );
    } else if let Some(aad) = body.azure_aad {
        options.insert("azure_storage_token".to_string(), aad.aad_token);
    } else if let Some(aws) = body.aws_temp_credentials.or(body.r2_temp_credentials) {
        options.insert("aws_access_key_id".to_string(), aws.access_key_id);
        options.insert("aws_secret_access_key".to_string(), aws.secret_access_key);
        if let Some(token) = aws.session_token {
            options.insert("aws_session_token".to_string(), token);
        }
    } else if body.gcp_oauth_token.and_then(|t| t.oauth_token).is_some() {
        return Err(
            "the catalog vended a Google Cloud OAuth token, and this build writes to Azure storage and local paths only"
                .into(),
        );
    }
    let expires_at = body
        .expiration_time
        .filter(|ms| *ms > 0)
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms as u64));
    Ok(VendedCredentials {
        options,
        expires_at,
        issued_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vended_credentials_become_object_store_options() {
        let issued = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let azure: TemporaryCredentialsResponse = serde_json::from_value(serde_json::json!({
            "azure_user_delegation_sas": {"sas_token": "?sv=2023&sig=abc"},
            "expiration_time": 1_003_600_000i64,
            "url": "abfss://c@a.dfs.core.windows.net/t"
        }))
        .expect("parses");
        let azure = vended_options(azure, issued).expect("maps");
        assert_eq!(
            azure
                .options
                .get("azure_storage_sas_key")
                .map(String::as_str),
            Some("sv=2023&sig=abc")
        );
        assert_eq!(
            azure.expires_at,
            Some(UNIX_EPOCH + Duration::from_secs(1_003_600))
        );
        // An hour's credentials are renewed 15 minutes before they expire ...
        assert_eq!(
            azure.renew_at(),
            Some(UNIX_EPOCH + Duration::from_secs(1_003_600 - 900))
        );
        // ... and short ones halfway.
        let short = VendedCredentials {
            options: HashMap::new(),
            expires_at: Some(issued + Duration::from_secs(20)),
            issued_at: issued,
        };
        assert_eq!(short.renew_at(), Some(issued + Duration::from_secs(10)));
        assert!(!format!("{azure:?}").contains("sig=abc"));

        let aws: TemporaryCredentialsResponse = serde_json::from_value(serde_json::json!({
            "aws_temp_credentials": {"access_key_id": "AK", "secret_access_key": "SK", "session_token": "ST"},
            "expiration_time": 0
        }))
        .expect("parses");
        let aws = vended_options(aws, issued).expect("maps");
        assert_eq!(aws.options.len(), 3);
        assert_eq!(aws.options["aws_session_token"], "ST");
        assert_eq!(aws.expires_at, None);
        assert_eq!(aws.renew_at(), None);

        let gcp: TemporaryCredentialsResponse = serde_json::from_value(serde_json::json!({
            "gcp_oauth_token": {"oauth_token": "ya29"}
        }))
        .expect("parses");
        assert!(
            vended_options(gcp, issued)
                .expect_err("refused")
                .contains("Google Cloud")
        );

        let nothing =
            vended_options(TemporaryCredentialsResponse::default(), issued).expect("empty is fine");
        assert!(nothing.is_empty());

        // The proto3 JSON mapping spells int64 as a string: "0" is no expiry, like 0.
        let quoted: TemporaryCredentialsResponse = serde_json::from_value(serde_json::json!({
            "expiration_time": "1003600000", "url": "file:///t"
        }))
        .expect("parses");
        assert_eq!(
            vended_options(quoted, issued).expect("maps").expires_at,
            Some(UNIX_EPOCH + Duration::from_secs(1_003_600))
        );
        let zero: TemporaryCredentialsResponse =
            serde_json::from_value(serde_json::json!({"expiration_time": "0"})).expect("parses");
        assert_eq!(vended_options(zero, issued).expect("maps").expires_at, None);
        let bad = serde_json::from_value::<TemporaryCredentialsResponse>(
            serde_json::json!({"expiration_time": "soon"}),
        )
        .expect_err("refused")
        .to_string();
        assert!(bad.contains("expiration_time \"soon\""), "{bad}");
    }
}
