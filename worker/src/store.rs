//! Object stores at a location: a directory on a volume (`/checkpoints/q`,
//! `file:///checkpoints/q`) or an object store URL (`abfss://container@account.dfs.core.windows.net/q`,
//! `az://container/q`), built as deltalake builds a table's, and their errors as a user reads
//! them (one line, no secret). Used by the query's own checkpoint and by a Spark checkpoint a
//! query takes over from.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

use deltalake::logstore::object_store::local::LocalFileSystem;
use deltalake::logstore::object_store::{self, ObjectStore};
use regex::Regex;
use url::Url;

use crate::error::{Error, Result};
use crate::secrets;

/// The directory of a location on a volume (`/checkpoints/q`, `file:///checkpoints/q`).
pub fn local_dir(location: &str) -> Option<PathBuf> {
    match location.strip_prefix("file://") {
        Some(path) => Some(PathBuf::from(path)),
        None if location.starts_with('/') => Some(PathBuf::from(location)),
        None => None,
    }
}

/// An object store rooted at `location`: a directory on a volume (created first when `create`),
/// or an object store URL reached with `storage_options`.
pub fn store_at(
    location: &str,
    storage_options: &HashMap<String, String>,
    create: bool,
) -> Result<Arc<dyn ObjectStore>> {
    if let Some(root) = local_dir(location) {
        if create {
            std::fs::create_dir_all(&root)
                .map_err(Error::checkpoint("create the checkpoint directory", &root))?;
        }
        return Ok(Arc::new(
            LocalFileSystem::new_with_prefix(&root).map_err(store_error("open", location, true))?,
        ));
    }
    let url = Url::parse(location).map_err(|e| {
        Error::Unsupported(format!(
            "checkpoint location {location} is neither an absolute path nor a URL ({e})"
        ))
    })?;
    // The same factory deltalake builds the table's store with, so a checkpoint takes
    // credentials exactly as the table does. For Azure that is deltalake-azure's
    // AzureConfigHelper: the storage options first, then any AZURE_* environment variable fills
    // a credential the options name only in part, or gives a whole one when the options give
    // none. That is how AKS workload identity reaches both: its webhook injects AZURE_CLIENT_ID,
    // AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE and AZURE_AUTHORITY_HOST, and object_store
    // exchanges the federated token file for an access token.
    deltalake::logstore::store_for(&url, storage_options).map_err(|e| Error::CheckpointStore {
        action: "open".into(),
        location: location.to_string(),
        reason: secrets::redact(&e.to_string()),
        hint: HINT_URL,
    })
}

/// An object store error as a message may quote it: Azure's XML bodies on one line, and any
/// secret a layer below quoted redacted.
pub fn describe_store_error(error: &object_store::Error) -> String {
    // object_store already leaves signed request URLs out of its errors; the redaction also
    // catches a secret quoted by any layer below.
    secrets::redact(&tidy_azure_error(&error.to_string()))
}

const HINT_LOCAL: &str = "is the checkpoint volume mounted and writable?";
const HINT_URL: &str = "check the credentials in spec.checkpoint.storageOptions and secretStorageOptions, or the sink's when the checkpoint sets neither, and that the container exists";

pub fn store_error(
    action: &str,
    location: &str,
    local: bool,
) -> impl FnOnce(object_store::Error) -> Error {
    let action = action.to_string();
    let location = location.to_string();
    move |source| Error::CheckpointStore {
        action,
        location,
        reason: describe_store_error(&source),
        hint: if local { HINT_LOCAL } else { HINT_URL },
    }
}

/// An Azure error body (XML) quoted in a message, as `Code: Message` on one line.
static AZURE_ERROR_BODY: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"(?s)<\?xml[^>]*>\s*<Error>\s*<Code>([^<]*)</Code>\s*<Message>([^<\n]*)[^<]*</Message>.*?</Error>").ok()
});

fn tidy_azure_error(text: &str) -> String {
    match AZURE_ERROR_BODY.as_ref() {
        Some(body) => body.replace_all(text, "$1: $2").into_owned(),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_error_bodies_become_one_line() {
        let text = "Error performing PUT http://h/c/o in 4ms - Server returned non-2xx status code: 403 Forbidden: <?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<Error>\n  <Code>AuthorizationFailure</Code>\n  <Message>Server failed to authenticate the request.\nRequestId:c95\nTime:2026-11-24T05:48:57.917Z</Message>\n</Error>";
        assert_eq!(
            tidy_azure_error(text),
            "Error performing PUT http://h/c/o in 4ms - Server returned non-2xx status code: 403 Forbidden: AuthorizationFailure: Server failed to authenticate the request."
        );
    }
}
