//! From the spec's table name to what the sink opens: look-up, registration of an absent
//! table, the checks, and the credentials.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use deltalake::kernel::StructType;
use tributary_crds::UnityCatalog;

use super::CatalogProblem;
use super::client::CatalogClient;
use super::credentials::VendedCredentials;
use super::model::{TableInfo, TableName, column_infos};
use crate::error::{Error, Result};

/// Where an absent table is created under the spec's storage root.
pub fn table_location(storage_root: &str, name: &TableName) -> String {
    format!(
        "{}/{}/{}/{}",
        storage_root.trim_end_matches('/'),
        name.catalog,
        name.schema,
        name.table
    )
}

/// What the sink needs to open a table given by name.
pub struct TableRequest<'a> {
    pub table: &'a str,
    /// The columns the ingestion writes (schema fields, metadata columns, `_rescued_data`).
    pub schema: &'a StructType,
    pub partition_by: &'a [String],
    /// Whether declared columns the table lacks may be added (spec.sink.delta.mergeSchema).
    pub merge_schema: bool,
    /// The sink's own storage options (used where the catalog vends none).
    pub storage_options: &'a HashMap<String, String>,
    /// The comment of a table Tributary creates.
    pub comment: &'a str,
}

/// A table resolved through the catalog, ready to open.
pub struct ResolvedTable {
    pub name: TableName,
    pub info: TableInfo,
    /// The table's storage location.
    pub location: String,
    /// The sink's storage options with the vended credentials over them.
    pub storage_options: HashMap<String, String>,
    /// What the catalog vended (None: it vended nothing and the sink's options are used).
    pub credentials: Option<VendedCredentials>,
    /// Whether this call registered the table.
    pub created: bool,
}

impl ResolvedTable {
    /// How progress names the sink: the catalog's name and where it lives.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.name, self.location)
    }
}

/// Resolves the table: looks it up (creating it as an EXTERNAL Delta table under the storage
/// root when absent and allowed), checks that it is a Delta table whose catalog columns fit the
/// ingestion's, and asks for credentials to write it.
pub async fn resolve(
    client: &CatalogClient,
    catalog: &UnityCatalog,
    request: &TableRequest<'_>,
) -> Result<ResolvedTable> {
    let name = TableName::parse(request.table)?;
    let (info, created) = match client.get_table(&name).await? {
        Some(info) => (info, false),
        None => {
            let action = format!("find table {name}");
            if catalog.table_must_exist == Some(true) {
                return Err(client.error_with_remedy(
                    &action,
                    CatalogProblem::TableNotFound,
                    "the table does not exist".into(),
                    "create it first, or unset spec.sink.delta.unityCatalog.tableMustExist and set storageRoot so Tributary creates it",
                ));
            }
            let Some(root) = catalog.storage_root.as_deref() else {
                return Err(client.error(
                    &action,
                    CatalogProblem::TableNotFound,
                    "the table does not exist and spec.sink.delta.unityCatalog.storageRoot is not set".into(),
                ));
            };
            let columns = column_infos(request.schema, request.partition_by)
                .map_err(|reason| client.error(&action, CatalogProblem::Failed, reason))?;
            let location = table_location(root, &name);
            let info = client
                .create_external_table(&name, &columns, &location, request.comment)
                .await?;
            tracing::info!(table = %name, location, "registered the table in Unity Catalog as an EXTERNAL Delta table");
            (info, true)
        }
    };
    let action = format!("write table {name}");
    if let Some(reason) = info.unwritable_reason() {
        return Err(client.error(&action, CatalogProblem::Unwritable, reason));
    }
    let location = info.storage_location.clone().unwrap_or_default();
    let vended = match client.table_credentials(&name, &info).await {
        // Credentials that expire are kept even when empty, so their renewal is scheduled.
        Ok(vended) => Some(vended).filter(|v| !v.is_empty() || v.expires_at.is_some()),
        Err(error) if !info.is_managed() => {
            // An external table may be written with the sink's own credentials (workload
            // identity, a key) where the catalog does not vend: say so, and go on.
            tracing::warn!(table = %name, %error, "the catalog vended no credentials; writing with spec.sink.delta's storage options");
            None
        }
        Err(error) => return Err(error),
    };
    if info.is_managed() && vended.as_ref().is_none_or(VendedCredentials::is_empty) {
        return Err(client.error_with_remedy(
            &action,
            CatalogProblem::Unwritable,
            "it is a MANAGED table and the catalog vends no credentials to write its storage".into(),
            "an engine outside the catalog may write a managed table only with credentials the catalog vends (on Databricks: EXTERNAL USE SCHEMA on the schema); or write to an EXTERNAL table: create it with a LOCATION, or drop it and set storageRoot so Tributary creates one",
        ));
    }
    // A table registered without columns has only its Delta log to check (the sink does).
    if !info.columns.is_empty() {
        let have = info.schema().map_err(|reason| Error::TableMismatch {
            uri: format!("{name} ({location})"),
            reason,
        })?;
        let problems = crate::sink::delta::fit_problems(
            &have,
            &info.partition_columns(),
            request.schema,
            request.partition_by,
            request.merge_schema,
        )
        .problems;
        if !problems.is_empty() {
            return Err(Error::TableMismatch {
                uri: format!("{name} ({location})"),
                reason: format!("the catalog's columns: {}", problems.join("; ")),
            });
        }
    }
    let mut storage_options = request.storage_options.clone();
    if let Some(vended) = &vended {
        storage_options.extend(vended.options.clone());
        tracing::info!(table = %name, expires_at = ?vended.expires_at.map(chrono::DateTime::<chrono::Utc>::from), "the catalog vended storage credentials");
    }
    Ok(ResolvedTable {
        name,
        info,
        location,
        storage_options,
        credentials: vended,
        created,
    })
}

/// Where the sink writes, and with which storage options.
pub struct SinkTable {
    /// The table location the sink opens (a path for local storage, else a URL).
    pub location: String,
    pub storage_options: HashMap<String, String>,
    /// How progress names the table: its location, or its catalog name and location.
    pub description: String,
    /// For a table named through the catalog: the client and what it resolved (renewals).
    pub catalog: Option<(CatalogClient, ResolvedTable)>,
}

/// The sink's table: the spec's uri with its storage options, or the Unity Catalog table it
/// names, resolved (see [`resolve`]).
pub async fn locate_sink(
    delta: &tributary_crds::DeltaSink,
    schema: deltalake::arrow::datatypes::SchemaRef,
    storage_options: &HashMap<String, String>,
    comment: &str,
) -> Result<SinkTable> {
    use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
    let (table, catalog) = match (&delta.uri, &delta.table, &delta.unity_catalog) {
        (Some(uri), _, _) => {
            return Ok(SinkTable {
                location: uri.clone(),
                storage_options: storage_options.clone(),
                description: uri.clone(),
                catalog: None,
            });
        }
        (None, Some(table), Some(catalog)) => (table, catalog),
        _ => {
            return Err(Error::Unsupported(
                "spec.sink.delta needs uri, or table with unityCatalog".into(),
            ));
        }
    };
    let wanted: StructType = schema
        .as_ref()
        .try_into_kernel()
        .map_err(|e| Error::Schema(e.to_string()))?;
    let client = CatalogClient::from_spec(catalog)?;
    let span = tracing::info_span!("unity_catalog", endpoint = %client.endpoint(), table = %table);
    let resolved = tracing::Instrument::instrument(
        resolve(
            &client,
            catalog,
            &TableRequest {
                table,
                schema: &wanted,
                partition_by: &delta.partition_by,
                merge_schema: delta.merge_schema.unwrap_or(false),
                storage_options,
                comment,
            },
        ),
        span,
    )
    .await?;
    tracing::info!(
        table = %resolved.name,
        location = %resolved.location,
        created = resolved.created,
        table_type = resolved.info.table_type.as_deref().unwrap_or("unknown"),
        vended_credentials = resolved.credentials.is_some(),
        "resolved the table through Unity Catalog"
    );
    Ok(SinkTable {
        location: local_path(&resolved.location),
        storage_options: resolved.storage_options.clone(),
        description: resolved.describe(),
        catalog: Some((client, resolved)),
    })
}

/// A `file:` location as a plain path (the sink creates a path's directory), any other as it
/// is. Catalogs written in Java spell local URLs `file:/path` as well as `file:///path`.
fn local_path(location: &str) -> String {
    match location.strip_prefix("file:") {
        Some(rest) if rest.starts_with("///") => rest[2..].to_string(),
        Some(rest) if rest.starts_with('/') && !rest.starts_with("//") => rest.to_string(),
        _ => location.to_string(),
    }
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
    fn local_locations_become_paths() {
        assert_eq!(local_path("file:///tmp/uc/t"), "/tmp/uc/t");
        assert_eq!(local_path("file:/tmp/uc/t"), "/tmp/uc/t");
        assert_eq!(
            local_path("abfss://c@a.dfs.core.windows.net/t"),
            "abfss://c@a.dfs.core.windows.net/t"
        );
        assert_eq!(local_path("file://host/t"), "file://host/t");
    }
    #[test]
    fn new_tables_go_under_the_storage_root() {
        let name = TableName::parse("main.bronze.t").expect("parses");
        assert_eq!(
            table_location("abfss://lake@acct.dfs.core.windows.net/tables/", &name),
            "abfss://lake@acct.dfs.core.windows.net/tables/main/bronze/t"
        );
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
