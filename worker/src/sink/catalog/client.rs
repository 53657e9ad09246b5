//! The REST client of one catalog: sign-in (a token, or OAuth machine-to-machine), the calls
//! the worker makes, and errors that say what the catalog answered.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tributary_crds::UnityCatalog;

use super::CatalogProblem;
use super::credentials::{TemporaryCredentialsResponse, VendedCredentials, vended_options};
use super::model::{ColumnInfo, TableInfo, TableName};
use crate::error::{Error, Result};
use crate::secrets::{self, SecretString};

/// The REST API's path under the endpoint.
const API: &str = "/api/2.1/unity-catalog";
/// A Databricks workspace's OAuth token endpoint, under the workspace URL.
const DATABRICKS_TOKEN_PATH: &str = "/oidc/v1/token";
/// The scope Databricks' machine-to-machine OAuth asks for.
const DEFAULT_SCOPE: &str = "all-apis";
/// An access token is renewed this long before it expires, so no request carries a token that
/// expires on the way.
const ACCESS_TOKEN_MARGIN: Duration = Duration::from_secs(60);
/// At most this much of a catalog's error body goes into a message.
const MAX_BODY_IN_MESSAGE: usize = 600;

/// A catalog's error body: `error_code` and `message` as Databricks documents it; servers that
/// encode the API with the proto3 JSON mapping spell the code `errorCode`.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default, alias = "errorCode")]
    error_code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// What a catalog said in an error response, short and without secrets.
fn catalog_message(status: u16, body: &[u8]) -> String {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let text = match (parsed.error_code, parsed.message) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (None, Some(message)) => message,
        (Some(code), None) => code,
        (None, None) => String::from_utf8_lossy(body).trim().to_string(),
    };
    let mut text = secrets::redact(&text);
    if text.len() > MAX_BODY_IN_MESSAGE {
        let mut cut = MAX_BODY_IN_MESSAGE;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    if text.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}, {text}")
    }
}

/// How the worker signs in.
enum Auth {
    Token {
        token: SecretString,
        /// e.g. "the token in Secret uc/token", for remedies.
        source: String,
    },
    OAuth {
        token_endpoint: String,
        client_id: SecretString,
        client_secret: SecretString,
        scope: String,
        source: String,
        cached: Mutex<Option<(SecretString, SystemTime)>>,
    },
}

impl Auth {
    fn source(&self) -> &str {
        match self {
            Auth::Token { source, .. } | Auth::OAuth { source, .. } => source,
        }
    }
}

#[derive(Deserialize)]
struct OAuthTokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// A client of one Unity Catalog.
pub struct CatalogClient {
    endpoint: String,
    http: reqwest::Client,
    auth: Auth,
}

/// The request body of `POST /tables`.
#[derive(Serialize)]
struct CreateTable<'a> {
    name: &'a str,
    catalog_name: &'a str,
    schema_name: &'a str,
    table_type: &'static str,
    data_source_format: &'static str,
    columns: &'a [ColumnInfo],
    storage_location: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<&'a str>,
}

impl CatalogClient {
    /// A client for the spec's catalog, its credentials read from their Secrets.
    pub fn from_spec(catalog: &UnityCatalog) -> Result<CatalogClient> {
        let field = "spec.sink.delta.unityCatalog";
        let describe = |r: &tributary_crds::SecretKeyRef| format!("Secret {}/{}", r.name, r.key);
        let auth = match (&catalog.token, &catalog.oauth) {
            (Some(token), _) => Auth::Token {
                token: secrets::resolve(&token.secret_key_ref, &format!("{field}.token"))?,
                source: format!("the token in {}", describe(&token.secret_key_ref)),
            },
            (None, Some(oauth)) => Auth::OAuth {
                token_endpoint: oauth.token_endpoint.clone().unwrap_or_else(|| {
                    format!(
                        "{}{DATABRICKS_TOKEN_PATH}",
                        catalog.endpoint.trim_end_matches('/')
                    )
                }),
                client_id: secrets::resolve(
                    &oauth.client_id.secret_key_ref,
                    &format!("{field}.oauth.clientId"),
                )?,
                client_secret: secrets::resolve(
                    &oauth.client_secret.secret_key_ref,
                    &format!("{field}.oauth.clientSecret"),
                )?,
                scope: oauth.scope.clone().unwrap_or_else(|| DEFAULT_SCOPE.into()),
                source: format!(
                    "the OAuth client in {} and {}",
                    describe(&oauth.client_id.secret_key_ref),
                    describe(&oauth.client_secret.secret_key_ref)
                ),
                cached: Mutex::new(None),
            },
            (None, None) => {
                return Err(Error::Unsupported(format!(
                    "{field} needs a token or oauth to sign in to the catalog"
                )));
            }
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::Catalog {
                endpoint: catalog.endpoint.clone(),
                action: "create an HTTP client".into(),
                problem: CatalogProblem::Failed,
                reason: e.to_string(),
                remedy: String::new(),
            })?;
        Ok(CatalogClient {
            endpoint: catalog.endpoint.trim_end_matches('/').to_string(),
            http,
            auth,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub(super) fn error_with_remedy(
        &self,
        action: &str,
        problem: CatalogProblem,
        reason: String,
        remedy: &str,
    ) -> Error {
        Error::Catalog {
            endpoint: self.endpoint.clone(),
            action: action.to_string(),
            problem,
            reason: secrets::redact(&reason),
            remedy: remedy.to_string(),
        }
    }

    pub(super) fn error(&self, action: &str, problem: CatalogProblem, reason: String) -> Error {
        let remedy = match problem {
            CatalogProblem::Unreachable => format!(
                "check spec.sink.delta.unityCatalog.endpoint ({}) and that the worker can reach it",
                self.endpoint
            ),
            CatalogProblem::Unauthorized => format!(
                "check {}: it must be valid for this catalog, and its principal needs USE CATALOG, USE SCHEMA and SELECT and MODIFY on the table (and CREATE TABLE on the schema to create it; EXTERNAL USE SCHEMA for credential vending)",
                self.auth.source()
            ),
            CatalogProblem::UnknownCatalog => {
                "check the catalog part of spec.sink.delta.table (the catalog must exist; Tributary does not create catalogs)".into()
            }
            CatalogProblem::UnknownSchema => {
                "check the schema part of spec.sink.delta.table (the schema must exist; Tributary does not create schemas)".into()
            }
            CatalogProblem::TableNotFound => {
                "create the table, or set spec.sink.delta.unityCatalog.storageRoot so Tributary creates it as an EXTERNAL Delta table".into()
            }
            CatalogProblem::Unwritable | CatalogProblem::Failed => String::new(),
        };
        Error::Catalog {
            endpoint: self.endpoint.clone(),
            action: action.to_string(),
            problem,
            reason: secrets::redact(&reason),
            remedy,
        }
    }

    /// The bearer token for the next request: the configured one, or an OAuth access token
    /// (fetched with the client credentials grant and reused until shortly before it expires).
    async fn bearer(&self, action: &str) -> Result<SecretString> {
        match &self.auth {
            Auth::Token { token, .. } => Ok(token.clone()),
            Auth::OAuth {
                token_endpoint,
                client_id,
                client_secret,
                scope,
                cached,
                ..
            } => {
                let mut cached = cached.lock().await;
                if let Some((token, until)) = cached.as_ref()
                    && SystemTime::now() + ACCESS_TOKEN_MARGIN < *until
                {
                    return Ok(token.clone());
                }
                let action = format!("sign in with OAuth at {token_endpoint} to {action}");
                let response = self
                    .http
                    .post(token_endpoint)
                    .basic_auth(client_id.expose(), Some(client_secret.expose()))
                    .form(&[("grant_type", "client_credentials"), ("scope", scope)])
                    .send()
                    .await
                    .map_err(|e| self.error(&action, CatalogProblem::Unreachable, e.to_string()))?;
                let status = response.status();
                let body = response
                    .bytes()
                    .await
                    .map_err(|e| self.error(&action, CatalogProblem::Unreachable, e.to_string()))?;
                if !status.is_success() {
                    let problem = if status.as_u16() == 400 || status.as_u16() == 401 {
                        CatalogProblem::Unauthorized
                    } else {
                        CatalogProblem::Failed
                    };
                    return Err(self.error(
                        &action,
                        problem,
                        oauth_message(status.as_u16(), &body),
                    ));
                }
                let parsed: OAuthTokenResponse = serde_json::from_slice(&body).map_err(|e| {
                    self.error(
                        &action,
                        CatalogProblem::Failed,
                        format!("the token endpoint's answer is not an OAuth token response: {e}"),
                    )
                })?;
                let token = secrets::remember(parsed.access_token);
                // Without expires_in, assume the shortest lifetime Databricks issues.
                let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(300));
                *cached = Some((token.clone(), SystemTime::now() + lifetime));
                Ok(token)
            }
        }
    }

    /// Sends one request to the REST API; `Ok(Err((status, message)))` is the catalog's
    /// refusal, for the caller to classify.
    async fn call(
        &self,
        action: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<std::result::Result<Vec<u8>, (u16, String)>> {
        let token = self.bearer(action).await?;
        let mut request = self
            .http
            .request(method, format!("{}{API}{path}", self.endpoint))
            .bearer_auth(token.expose())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.error(action, CatalogProblem::Unreachable, e.to_string()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.error(action, CatalogProblem::Unreachable, e.to_string()))?;
        if status.is_success() {
            Ok(Ok(body.to_vec()))
        } else {
            Ok(Err((
                status.as_u16(),
                catalog_message(status.as_u16(), &body),
            )))
        }
    }

    /// Classifies a refusal that is not a 404 of the thing asked for.
    fn refusal(&self, action: &str, status: u16, message: String) -> Error {
        let problem = match status {
            401 | 403 => CatalogProblem::Unauthorized,
            _ => CatalogProblem::Failed,
        };
        self.error(action, problem, message)
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, action: &str, body: &[u8]) -> Result<T> {
        serde_json::from_slice(body).map_err(|e| {
            self.error(
                action,
                CatalogProblem::Failed,
                format!("the catalog's answer does not parse: {e}"),
            )
        })
    }

    /// The table, or None when the catalog and schema exist but the table does not. An unknown
    /// catalog or schema is an error that says which.
    pub async fn get_table(&self, name: &TableName) -> Result<Option<TableInfo>> {
        let action = format!("look up table {name}");
        match self
            .call(
                &action,
                reqwest::Method::GET,
                &format!("/tables/{name}"),
                None,
            )
            .await?
        {
            Ok(body) => Ok(Some(self.parse(&action, &body)?)),
            Err((404, message)) => {
                // Databricks says which part is missing in its error code, the open-source
                // server only in prose: asking for the catalog and the schema tells either way.
                self.check_schema_exists(name).await?;
                tracing::debug!(table = %name, catalog_said = %message, "table not found");
                Ok(None)
            }
            Err((status, message)) => Err(self.refusal(&action, status, message)),
        }
    }

    /// Errors naming the missing part when the table's catalog or schema does not exist.
    async fn check_schema_exists(&self, name: &TableName) -> Result<()> {
        let action = format!("look up catalog {} of table {name}", name.catalog);
        match self
            .call(
                &action,
                reqwest::Method::GET,
                &format!("/catalogs/{}", name.catalog),
                None,
            )
            .await?
        {
            Ok(_) => {}
            Err((404, message)) => {
                return Err(self.error(&action, CatalogProblem::UnknownCatalog, message));
            }
            Err((status, message)) => return Err(self.refusal(&action, status, message)),
        }
        let action = format!("look up schema {} of table {name}", name.schema_full_name());
        match self
            .call(
                &action,
                reqwest::Method::GET,
                &format!("/schemas/{}", name.schema_full_name()),
                None,
            )
            .await?
        {
            Ok(_) => Ok(()),
            Err((404, message)) => Err(self.error(&action, CatalogProblem::UnknownSchema, message)),
            Err((status, message)) => Err(self.refusal(&action, status, message)),
        }
    }

    /// Registers an EXTERNAL Delta table at `location` with these columns.
    pub async fn create_external_table(
        &self,
        name: &TableName,
        columns: &[ColumnInfo],
        location: &str,
        comment: &str,
    ) -> Result<TableInfo> {
        let action = format!("create table {name} as an EXTERNAL Delta table at {location}");
        let body = serde_json::to_vec(&CreateTable {
            name: &name.table,
            catalog_name: &name.catalog,
            schema_name: &name.schema,
            table_type: "EXTERNAL",
            data_source_format: "DELTA",
            columns,
            storage_location: location,
            comment: Some(comment),
        })
        .map_err(|e| self.error(&action, CatalogProblem::Failed, e.to_string()))?;
        match self
            .call(&action, reqwest::Method::POST, "/tables", Some(body))
            .await?
        {
            Ok(body) => self.parse(&action, &body),
            Err((404, message)) => {
                self.check_schema_exists(name).await?;
                Err(self.error(&action, CatalogProblem::Failed, message))
            }
            Err((status, message)) => Err(self.refusal(&action, status, message)),
        }
    }

    /// Short-lived credentials to read and write the table's storage.
    pub async fn table_credentials(
        &self,
        name: &TableName,
        table: &TableInfo,
    ) -> Result<VendedCredentials> {
        let action = format!("vend READ_WRITE credentials for table {name}");
        let Some(table_id) = table.table_id.as_deref() else {
            return Err(self.error(
                &action,
                CatalogProblem::Failed,
                "the catalog gives no table_id for the table".into(),
            ));
        };
        let body = serde_json::to_vec(&serde_json::json!({
            "table_id": table_id,
            "operation": "READ_WRITE",
        }))
        .map_err(|e| self.error(&action, CatalogProblem::Failed, e.to_string()))?;
        let issued_at = SystemTime::now();
        match self
            .call(
                &action,
                reqwest::Method::POST,
                "/temporary-table-credentials",
                Some(body),
            )
            .await?
        {
            Ok(body) => {
                let parsed: TemporaryCredentialsResponse = self.parse(&action, &body)?;
                let vended = vended_options(parsed, issued_at)
                    .map_err(|reason| self.error(&action, CatalogProblem::Failed, reason))?;
                for value in vended.options.values() {
                    secrets::remember(value.clone());
                }
                Ok(vended)
            }
            Err((status, message)) => Err(self.refusal(&action, status, message)),
        }
    }
}

/// What an OAuth token endpoint said (`error` and `error_description`, RFC 6749).
fn oauth_message(status: u16, body: &[u8]) -> String {
    #[derive(Default, Deserialize)]
    struct OAuthError {
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        error_description: Option<String>,
    }
    let parsed: OAuthError = serde_json::from_slice(body).unwrap_or_default();
    match (parsed.error, parsed.error_description) {
        (Some(error), Some(description)) => {
            secrets::redact(&format!("HTTP {status}, {error}: {description}"))
        }
        (Some(error), None) => secrets::redact(&format!("HTTP {status}, {error}")),
        _ => catalog_message(status, body),
    }
}

#[cfg(test)]
impl CatalogClient {
    /// A client signing in with `token`, for the tests of its callers.
    pub(super) fn with_token(endpoint: &str, token: &str) -> CatalogClient {
        CatalogClient {
            endpoint: endpoint.to_string(),
            http: reqwest::Client::new(),
            auth: Auth::Token {
                token: secrets::remember(token.to_string()),
                source: "the token in Secret t/token".into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_messages_are_short_and_name_the_code() {
        assert_eq!(
            catalog_message(
                404,
                br#"{"error_code":"TABLE_DOES_NOT_EXIST","message":"Table 'a.b.c' does not exist."}"#
            ),
            "HTTP 404, TABLE_DOES_NOT_EXIST: Table 'a.b.c' does not exist."
        );
        assert_eq!(
            catalog_message(
                404,
                br#"{"errorCode":"RESOURCE_NOT_FOUND","message":"The requested resource does not exist."}"#
            ),
            "HTTP 404, RESOURCE_NOT_FOUND: The requested resource does not exist."
        );
        assert_eq!(catalog_message(502, b""), "HTTP 502");
        let long = catalog_message(500, "é".repeat(1000).as_bytes());
        assert!(long.len() < 700 && long.ends_with("..."), "{long}");
        assert_eq!(
            oauth_message(
                401,
                br#"{"error":"invalid_client","error_description":"Client authentication failed"}"#
            ),
            "HTTP 401, invalid_client: Client authentication failed"
        );
    }
}
