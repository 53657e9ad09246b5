//! Storage credentials the catalog vends for a table (`temporary-table-credentials`), as
//! object_store options, and their renewal in a long-running worker.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::client::CatalogClient;
use super::model::{TableInfo, TableName};
use super::resolve::ResolvedTable;
use crate::error::Result;

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
    /// Milliseconds since the epoch.
    #[serde(default)]
    expiration_time: Option<i64>,
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

/// Keeps a long-running worker's vended credentials fresh: asks for new ones when they are
/// due ([`VendedCredentials::renew_at`]), and retries a failed request until they expire.
pub struct Renewal {
    pub client: CatalogClient,
    pub name: TableName,
    pub info: TableInfo,
    /// The sink's own storage options, under the vended ones.
    pub base_options: HashMap<String, String>,
    pub current: VendedCredentials,
    /// After a failed renewal, the next try.
    retry_at: Option<SystemTime>,
}

/// How long to wait before asking again after a failed renewal.
const RENEWAL_RETRY: Duration = Duration::from_secs(5);

impl Renewal {
    /// A renewal for a table whose credentials expire; None when they do not.
    pub fn of(
        client: CatalogClient,
        resolved: &ResolvedTable,
        base_options: HashMap<String, String>,
    ) -> Option<Renewal> {
        let current = resolved.credentials.clone()?;
        current.expires_at?;
        Some(Renewal {
            client,
            name: resolved.name.clone(),
            info: resolved.info.clone(),
            base_options,
            current,
            retry_at: None,
        })
    }

    /// Whether to ask the catalog now.
    pub fn due(&self, now: SystemTime) -> bool {
        match (self.retry_at, self.current.renew_at()) {
            (Some(retry_at), _) => now >= retry_at,
            (None, Some(renew_at)) => now >= renew_at,
            (None, None) => false,
        }
    }

    /// Asks for new credentials; returns the storage options to reopen the table with, None
    /// after a failure that leaves time to retry. Fails once the current ones have expired.
    pub async fn renew(&mut self) -> Result<Option<HashMap<String, String>>> {
        match self.client.table_credentials(&self.name, &self.info).await {
            Ok(vended) => {
                let mut options = self.base_options.clone();
                options.extend(vended.options.clone());
                tracing::info!(
                    table = %self.name,
                    expires_at = ?vended.expires_at.map(chrono::DateTime::<chrono::Utc>::from),
                    "renewed the storage credentials"
                );
                self.current = vended;
                self.retry_at = None;
                Ok(Some(options))
            }
            Err(error) => {
                let now = SystemTime::now();
                if self
                    .current
                    .expires_at
                    .is_some_and(|at| now + RENEWAL_RETRY >= at)
                {
                    return Err(error);
                }
                tracing::warn!(table = %self.name, %error, "cannot renew the storage credentials yet; trying again before they expire");
                self.retry_at = Some(now + RENEWAL_RETRY);
                Ok(None)
            }
        }
    }
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
    }
    #[test]
    fn renewals_are_due_at_half_life_and_retried_after_a_failure() {
        let issued = SystemTime::now();
        let credentials = VendedCredentials {
            options: HashMap::new(),
            expires_at: Some(issued + Duration::from_secs(20)),
            issued_at: issued,
        };
        let mut renewal = Renewal {
            client: CatalogClient::with_token("http://127.0.0.1:1", "t0ken-value"),
            name: TableName::parse("a.b.c").expect("name"),
            info: TableInfo {
                name: "c".into(),
                catalog_name: None,
                schema_name: None,
                table_id: Some("id".into()),
                table_type: Some("EXTERNAL".into()),
                data_source_format: Some("DELTA".into()),
                storage_location: Some("file:///t".into()),
                columns: Vec::new(),
            },
            base_options: HashMap::new(),
            current: credentials,
            retry_at: None,
        };
        assert!(!renewal.due(issued + Duration::from_secs(9)));
        assert!(renewal.due(issued + Duration::from_secs(10)));
        // Nothing listens on port 1: the renewal fails, and is retried while time is left.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        assert!(
            runtime
                .block_on(renewal.renew())
                .expect("retry later")
                .is_none()
        );
        assert!(!renewal.due(SystemTime::now()));
        assert!(renewal.due(SystemTime::now() + RENEWAL_RETRY));
        renewal.current.expires_at = Some(SystemTime::now() + Duration::from_secs(1));
        let error = runtime
            .block_on(renewal.renew())
            .expect_err("expired")
            .to_string();
        assert!(
            error.contains("cannot vend READ_WRITE credentials for table a.b.c"),
            "{error}"
        );
        assert!(!error.contains("t0ken-value"), "{error}");
    }
}
