//! The watches: one controller per watched scope (a namespace, or the whole cluster), fed by
//! reflectors whose stores the reconcile reads (see [`crate::cache`]).
//!
//! | watched | selector | store | triggers the ingestion |
//! |---|---|---|---|
//! | StreamingIngestion | all | yes | itself |
//! | Deployment, CronJob | managed by the operator | yes | by controller reference |
//! | Job | managed by the operator | yes | by label (its own Jobs and its CronJob's runs) |
//! | Pod | worker pods managed by the operator | yes | by label: a crash loop or an image that cannot be pulled reaches the status within the debounce, not on the next requeue |
//! | ConfigMap, ServiceAccount, Role, RoleBinding, PersistentVolumeClaim | managed by the operator | no | by controller reference (drift is re-applied) |

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::warn;
use tributary_crds::StreamingIngestion;
use tributary_crds::conditions::field_managers;
use tributary_crds::pod::{LABEL_MANAGED_BY, LABEL_NAME};

use crate::cache::{Cache, ingestion_of};
use crate::metrics::Metrics;
use crate::reconcile::{Context, error_policy, reconcile};
use crate::resources::{APP_NAME, Settings};

/// Triggers of one object within this window make one reconcile.
pub const DEBOUNCE: Duration = Duration::from_secs(2);
/// Reconciles running at once.
pub const CONCURRENCY: u16 = 8;

/// Selects what the operator created.
pub fn managed_selector() -> String {
    format!("{LABEL_MANAGED_BY}={}", field_managers::OPERATOR)
}

/// Selects the worker pods of every ingestion.
pub fn worker_pod_selector() -> String {
    format!("{},{LABEL_NAME}={APP_NAME}", managed_selector())
}

fn api<K>(client: &Client, scope: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match scope {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// A watch that keeps `writer`'s store current. managedFields are dropped before caching:
/// nothing reads them and they are a large part of every object.
fn reflected<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: Writer<K>,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let stream = watcher(api, config)
        .default_backoff()
        .modify(|object: &mut K| object.managed_fields_mut().clear());
    reflector::reflector(writer, stream)
}

/// Runs one controller per watched namespace (all namespaces when the list is empty) until
/// SIGTERM or Ctrl-C.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    namespaces: Vec<String>,
) {
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.into_iter().map(Some).collect()
    };
    let controllers = scopes.into_iter().map(|scope| {
        let scope = scope.as_deref();
        let (cache, writers) = Cache::new();
        let ctx = Arc::new(Context::new(
            client.clone(),
            settings.clone(),
            metrics.clone(),
            cache.clone(),
        ));
        // Only our own children: a cluster's other Deployments, Jobs and pods are none of our
        // business (and would fill the caches).
        let owned = watcher::Config::default().labels(&managed_selector());
        let workers = watcher::Config::default().labels(&worker_pod_selector());
        let ingestions = reflected(
            api::<StreamingIngestion>(&client, scope),
            watcher::Config::default(),
            writers.ingestions,
        )
        .applied_objects();
        Controller::for_stream(ingestions, cache.ingestions.clone())
            .owns_stream(
                reflected(
                    api::<Deployment>(&client, scope),
                    owned.clone(),
                    writers.deployments,
                )
                .touched_objects(),
            )
            .owns_stream(
                reflected(
                    api::<CronJob>(&client, scope),
                    owned.clone(),
                    writers.cron_jobs,
                )
                .touched_objects(),
            )
            .watches_stream(
                reflected(api::<Job>(&client, scope), owned.clone(), writers.jobs)
                    .touched_objects(),
                |job: Job| ingestion_of(&job),
            )
            .watches_stream(
                reflected(api::<Pod>(&client, scope), workers, writers.pods).touched_objects(),
                |pod: Pod| ingestion_of(&pod),
            )
            .owns(api::<ConfigMap>(&client, scope), owned.clone())
            .owns(api::<ServiceAccount>(&client, scope), owned.clone())
            .owns(api::<Role>(&client, scope), owned.clone())
            .owns(api::<RoleBinding>(&client, scope), owned.clone())
            .owns(api::<PersistentVolumeClaim>(&client, scope), owned)
            // Workers write their status entries often and pods change state in bursts;
            // coalesce the reconciles those trigger, and bound the API load of many ingestions.
            .with_config(
                controller::Config::default()
                    .debounce(DEBOUNCE)
                    .concurrency(CONCURRENCY),
            )
            .shutdown_on_signal()
            .run(reconcile, error_policy, ctx)
            .for_each(|result| async move {
                match result {
                    Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                    Err(error) => warn!(%error, "controller"),
                }
            })
    });
    futures::future::join_all(controllers).await;
}
