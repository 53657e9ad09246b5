//! The controller: a staged reconcile of one StreamingIngestion.
//!
//! read -> validate (nothing touches the API before it passes) -> referenced Secrets exist ->
//! checkpoint not used by an older ingestion -> build (pure) -> apply (server-side, one field
//! manager) -> delete workloads of another kind -> status (only when it changed) -> events.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{Instrument, info, info_span, warn};
use tributary_crds::conditions::{field_managers, reasons, types};
use tributary_crds::pod::LABEL_INGESTION;
use tributary_crds::{StreamingIngestion, StreamingIngestionStatus};

use crate::checkpoint::conflicting_owner;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::resources::pod::referenced_secrets;
use crate::resources::{self, Desired, Identity, Settings, Workload};
use crate::status::{self, Blocker, Observation, ObservedJob, ObservedWorkload};

/// Requeue while something is changing (rollouts, runs, crash loops): pods are not watched, so
/// this is how a crash loop or a finished rollout reaches the status.
pub const REQUEUE_ACTIVE: Duration = Duration::from_secs(30);
/// Requeue when all is quiet: refreshes the workers' aggregates.
pub const REQUEUE_QUIET: Duration = Duration::from_secs(300);
/// First retry after an error; doubles per consecutive failure of the same object.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Triggers of one object within this window make one reconcile.
pub const DEBOUNCE: Duration = Duration::from_secs(2);
/// Reconciles running at once.
pub const CONCURRENCY: u16 = 8;

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per object (namespace/name), for the per-object back-off.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, settings: Settings, metrics: Arc<Metrics>) -> Context {
        let reporter = Reporter {
            controller: field_managers::OPERATOR.to_string(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            metrics,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn record_failure(&self, key: &str) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(key.to_string()).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    fn clear_failures(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

fn object_key(ingestion: &StreamingIngestion) -> String {
    format!(
        "{}/{}",
        ingestion.namespace().unwrap_or_default(),
        ingestion.name_any()
    )
}

/// The back-off after `failures` consecutive failures: 5s, 10s, 20s ... at most 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(exponent))
        .min(BACKOFF_MAX)
}

/// Retries a failed object later, backing off per object.
pub fn error_policy(
    ingestion: Arc<StreamingIngestion>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let failures = ctx.record_failure(&object_key(&ingestion));
    let delay = backoff(failures);
    warn!(ingestion = %ingestion.name_any(), %error, failures, ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Reconciles one ingestion, with metrics around it.
pub async fn reconcile(ingestion: Arc<StreamingIngestion>, ctx: Arc<Context>) -> Result<Action> {
    let span = info_span!("reconcile", ingestion = %ingestion.name_any(), namespace = ingestion.namespace().unwrap_or_default());
    let started = Instant::now();
    let result = reconcile_inner(&ingestion, &ctx).instrument(span).await;
    ctx.metrics
        .observe(started.elapsed(), result.as_ref().err());
    if result.is_ok() {
        ctx.clear_failures(&object_key(&ingestion));
    }
    result
}

async fn reconcile_inner(ingestion: &StreamingIngestion, ctx: &Context) -> Result<Action> {
    if ingestion.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove what we created.
        return Ok(Action::await_change());
    }
    let id = Identity::of(ingestion)?;

    // Stage 1: validate. An invalid spec touches nothing but the status.
    if let Err(errors) = tributary_crds::validate(ingestion) {
        return finish_blocked(
            ingestion,
            ctx,
            &id,
            Blocker::InvalidSpec(errors.to_string()),
            &[],
        )
        .await;
    }

    // Stage 2: referenced Secrets exist (never read their values: only whether they exist).
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &id.namespace);
    let mut missing = Vec::new();
    for name in referenced_secrets(ingestion).into_keys() {
        let found = secrets
            .get_metadata_opt(&name)
            .await
            .map_err(|source| Error::ReadSecret {
                name: name.clone(),
                source,
            })?;
        if found.is_none() {
            missing.push(name);
        }
    }
    if !missing.is_empty() {
        return finish_blocked(ingestion, ctx, &id, Blocker::SecretsMissing(missing), &[]).await;
    }

    // Stage 3: the checkpoint is ours.
    let ingestions: Api<StreamingIngestion> = Api::namespaced(ctx.client.clone(), &id.namespace);
    let others = ingestions
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::ListIngestions {
            namespace: id.namespace.clone(),
            source,
        })?;
    if let Some(owner) = conflicting_owner(ingestion, &others.items) {
        // Two writers must never share a checkpoint: remove any workload this one has.
        let deleted = delete_stale_workloads(ingestion, ctx, &id, None)
            .await?
            .deleted;
        return finish_blocked(
            ingestion,
            ctx,
            &id,
            Blocker::CheckpointInUse(owner),
            &deleted,
        )
        .await;
    }

    // Stage 4: build and apply.
    let desired = resources::build(ingestion, &ctx.settings)?;
    let applied = apply_all(ctx, &id, &desired).await?;

    // Stage 5: remove workloads of a kind (or a Job of a run) that no longer applies.
    let stale = delete_stale_workloads(ingestion, ctx, &id, desired.workload.as_ref()).await?;
    let workload = match applied {
        Applied::None => ObservedWorkload::None,
        Applied::Deployment(d) => ObservedWorkload::Deployment {
            name: d.name_any(),
            generation: d.metadata.generation,
            status: d.status,
        },
        Applied::Job(j) => ObservedWorkload::Job(ObservedJob {
            name: j.name_any(),
            status: j.status,
        }),
        Applied::CronJob(c) => ObservedWorkload::CronJob {
            name: c.name_any(),
            status: c.status,
            last_job: stale.last_cron_run,
        },
    };

    // Stage 6: the worker pods, for crash loops, scheduling and the workers' aggregates.
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &id.namespace);
    let pods = pods
        .list(&ListParams::default().labels(&resources::selector_string(&id.name)))
        .await
        .map_err(|source| Error::List {
            kind: "Pod".into(),
            source,
        })?
        .items;
    prune_worker_entries(ingestion, ctx, &id, &pods).await?;
    finish(ingestion, ctx, &id, None, workload, &pods, &stale.deleted).await
}

/// Removes the `status.workers` entries of pods that are gone (rolled, scaled down, finished),
/// which their own field managers will never remove.
async fn prune_worker_entries(
    ingestion: &StreamingIngestion,
    ctx: &Context,
    id: &Identity,
    pods: &[Pod],
) -> Result<()> {
    let stale = status::stale_worker_entries(ingestion, pods);
    if stale.is_empty() {
        return Ok(());
    }
    let patch = status::prune_workers_patch(&stale);
    let api: Api<StreamingIngestion> = Api::namespaced(ctx.client.clone(), &id.namespace);
    match api
        .patch_status(&id.name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
    {
        Ok(_) => {
            info!(
                entries = stale.len(),
                "removed the status of workers that are gone"
            );
            Ok(())
        }
        // A test operation failed: a worker rewrote the list meanwhile; the next visit retries.
        Err(kube::Error::Api(response)) if response.code == 422 => {
            info!("status.workers changed while pruning; retrying on the next visit");
            Ok(())
        }
        Err(source) => Err(Error::PatchStatus {
            name: id.name.clone(),
            source,
        }),
    }
}

/// The applied workload, as the API server returned it (with its status).
enum Applied {
    None,
    Deployment(Box<Deployment>),
    Job(Box<Job>),
    CronJob(Box<CronJob>),
}

async fn apply<K>(client: &Client, namespace: &str, object: &K) -> Result<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = object.meta().name.clone().unwrap_or_default();
    let params = PatchParams::apply(field_managers::OPERATOR).force();
    api.patch(&name, &params, &Patch::Apply(object))
        .await
        .map_err(|source| Error::Apply {
            kind: K::kind(&()).to_string(),
            name,
            source,
        })
}

async fn apply_all(ctx: &Context, id: &Identity, desired: &Desired) -> Result<Applied> {
    let client = &ctx.client;
    let ns = id.namespace.as_str();
    apply::<ServiceAccount>(client, ns, &desired.service_account).await?;
    apply::<Role>(client, ns, &desired.role).await?;
    apply::<RoleBinding>(client, ns, &desired.role_binding).await?;
    apply::<ConfigMap>(client, ns, &desired.config_map).await?;
    for claim in &desired.claims {
        apply::<PersistentVolumeClaim>(client, ns, claim).await?;
    }
    Ok(match &desired.workload {
        None => Applied::None,
        Some(Workload::Deployment(d)) => {
            Applied::Deployment(Box::new(apply(client, ns, d.as_ref()).await?))
        }
        Some(Workload::Job(j)) => Applied::Job(Box::new(apply(client, ns, j.as_ref()).await?)),
        Some(Workload::CronJob(c)) => {
            Applied::CronJob(Box::new(apply(client, ns, c.as_ref()).await?))
        }
    })
}

struct StaleOutcome {
    /// "Kind name" of each deleted workload.
    deleted: Vec<String>,
    /// The newest Job started by this ingestion's CronJob.
    last_cron_run: Option<ObservedJob>,
}

fn controlled_by(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    kind: &str,
    uid: Option<&str>,
    name: &str,
) -> bool {
    meta.owner_references.iter().flatten().any(|o| {
        o.controller == Some(true)
            && o.kind == kind
            && o.name == name
            && uid.is_none_or(|uid| o.uid == uid)
    })
}

async fn list_labelled<K>(client: &Client, id: &Identity) -> Result<Vec<K>>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), &id.namespace);
    let selector = format!("{LABEL_INGESTION}={}", id.name);
    Ok(api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::List {
            kind: K::kind(&()).to_string(),
            source,
        })?
        .items)
}

async fn delete_named<K>(client: &Client, id: &Identity, name: &str) -> Result<()>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), &id.namespace);
    // Background propagation: a Job's or Deployment's pods go with it.
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Delete {
            kind: K::kind(&()).to_string(),
            name: name.to_string(),
            source,
        }),
    }
}

/// Deletes the workloads this ingestion controls that are not `keep`: another kind after a
/// trigger change, or the Job of an earlier run (a new generation or template is a new run;
/// the old one must not keep writing the same checkpoint).
async fn delete_stale_workloads(
    ingestion: &StreamingIngestion,
    ctx: &Context,
    id: &Identity,
    keep: Option<&Workload>,
) -> Result<StaleOutcome> {
    let uid = ingestion.metadata.uid.as_deref();
    let keep_kind = keep.map(Workload::kind);
    let keep_name = keep.map(Workload::name);
    let mut deleted = Vec::new();

    if keep_kind != Some("Deployment") {
        for d in list_labelled::<Deployment>(&ctx.client, id).await? {
            if controlled_by(&d.metadata, "StreamingIngestion", uid, &id.name) {
                delete_named::<Deployment>(&ctx.client, id, &d.name_any()).await?;
                deleted.push(format!("Deployment {}", d.name_any()));
            }
        }
    }
    if keep_kind != Some("CronJob") {
        for c in list_labelled::<CronJob>(&ctx.client, id).await? {
            if controlled_by(&c.metadata, "StreamingIngestion", uid, &id.name) {
                delete_named::<CronJob>(&ctx.client, id, &c.name_any()).await?;
                deleted.push(format!("CronJob {}", c.name_any()));
            }
        }
    }
    let mut last_cron_run: Option<Job> = None;
    for j in list_labelled::<Job>(&ctx.client, id).await? {
        if controlled_by(&j.metadata, "StreamingIngestion", uid, &id.name) {
            let keep_this = keep_kind == Some("Job") && keep_name.as_deref() == Some(&j.name_any());
            if !keep_this {
                delete_named::<Job>(&ctx.client, id, &j.name_any()).await?;
                deleted.push(format!("Job {}", j.name_any()));
            }
        } else if keep_kind == Some("CronJob")
            && controlled_by(&j.metadata, "CronJob", None, &id.name)
        {
            let newer = last_cron_run.as_ref().is_none_or(|best| {
                j.metadata.creation_timestamp.as_ref().map(|t| t.0)
                    > best.metadata.creation_timestamp.as_ref().map(|t| t.0)
            });
            if newer {
                last_cron_run = Some(j);
            }
        }
    }
    Ok(StaleOutcome {
        deleted,
        last_cron_run: last_cron_run.map(|j| ObservedJob {
            name: j.name_any(),
            status: j.status,
        }),
    })
}

/// Ends a reconcile that a blocker stopped before any workload was applied: status only.
async fn finish_blocked(
    ingestion: &StreamingIngestion,
    ctx: &Context,
    id: &Identity,
    blocker: Blocker,
    deleted: &[String],
) -> Result<Action> {
    finish(
        ingestion,
        ctx,
        id,
        Some(blocker),
        ObservedWorkload::None,
        &[],
        deleted,
    )
    .await
}

/// Writes the status when it changed, publishes events for the transitions, and decides when
/// to look again.
async fn finish(
    ingestion: &StreamingIngestion,
    ctx: &Context,
    id: &Identity,
    blocker: Option<Blocker>,
    workload: ObservedWorkload,
    pods: &[Pod],
    deleted: &[String],
) -> Result<Action> {
    let computed = status::compute(&Observation {
        ingestion,
        blocker,
        workload,
        pods,
        now: Timestamp::now(),
    });
    if status::needs_write(ingestion, &computed) {
        let api: Api<StreamingIngestion> = Api::namespaced(ctx.client.clone(), &id.namespace);
        let body = json!({
            "apiVersion": format!("{}/{}", tributary_crds::GROUP, tributary_crds::VERSION),
            "kind": "StreamingIngestion",
            "status": computed,
        });
        api.patch_status(
            &id.name,
            &PatchParams::apply(field_managers::OPERATOR).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|source| Error::PatchStatus {
            name: id.name.clone(),
            source,
        })?;
        info!(phase = ?computed.phase, "status written");
    }
    let reference = ingestion.object_ref(&());
    for event in transitions(ingestion.status.as_ref(), &computed, deleted) {
        // Events are best effort: a refused event must not fail the reconcile.
        if let Err(error) = ctx.recorder.publish(&event, &reference).await {
            warn!(%error, reason = %event.reason, "cannot publish event");
        }
    }
    Ok(Action::requeue(requeue_after(&computed)))
}

fn condition_status<'a>(
    status: &'a StreamingIngestionStatus,
    type_: &str,
) -> Option<(&'a str, &'a str, &'a str)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
}

/// When to look again: soon while something changes or is wrong, rarely when all is quiet.
pub fn requeue_after(status: &StreamingIngestionStatus) -> Duration {
    let busy = condition_status(status, types::PROGRESSING).is_some_and(|(s, _, _)| s == "True")
        || condition_status(status, types::DEGRADED).is_some_and(|(s, _, _)| s != "False")
        || condition_status(status, types::READY).is_some_and(|(s, _, _)| s == "Unknown");
    if busy { REQUEUE_ACTIVE } else { REQUEUE_QUIET }
}

/// The events a status change deserves: what was created or changed, what was refused, how a
/// run ended, and what was deleted. Derived from the status before and after, so an unchanged
/// object produces no event on a requeue.
pub fn transitions(
    previous: Option<&StreamingIngestionStatus>,
    current: &StreamingIngestionStatus,
    deleted: &[String],
) -> Vec<Event> {
    let event = |type_, reason: &str, action: &str, note: String| Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: None,
    };
    let empty = StreamingIngestionStatus::default();
    let previous = previous.unwrap_or(&empty);
    let mut events = Vec::new();
    for gone in deleted {
        events.push(event(
            EventType::Normal,
            "Deleted",
            "Delete",
            format!("deleted {gone}: it no longer matches the spec"),
        ));
    }
    if current.workload.is_some() && current.workload != previous.workload {
        if let Some(w) = &current.workload {
            events.push(event(
                EventType::Normal,
                "Created",
                "Apply",
                format!("created {} {}", w.kind, w.name),
            ));
        }
    } else if current.workload.is_some()
        && previous.observed_generation.is_some()
        && previous.observed_generation != current.observed_generation
    {
        events.push(event(
            EventType::Normal,
            "Updated",
            "Apply",
            format!(
                "applied generation {}",
                current.observed_generation.unwrap_or_default()
            ),
        ));
    }
    let before = condition_status(previous, types::READY);
    if let Some((_, reason, message)) = condition_status(current, types::READY) {
        let changed = before.is_none_or(|(_, r, m)| r != reason || m != message);
        let refused = [
            reasons::INVALID_SPEC,
            reasons::SECRET_NOT_FOUND,
            reasons::CHECKPOINT_IN_USE,
        ];
        if changed && refused.contains(&reason) {
            events.push(event(
                EventType::Warning,
                reason,
                "Refuse",
                message.to_string(),
            ));
        } else if changed && reason == reasons::RUN_FAILED {
            events.push(event(
                EventType::Warning,
                reason,
                "Run",
                message.to_string(),
            ));
        } else if changed && reason == reasons::RUN_SUCCEEDED {
            events.push(event(EventType::Normal, reason, "Run", message.to_string()));
        }
    }
    let degraded_before = condition_status(previous, types::DEGRADED);
    if let Some(("True", reason, message)) = condition_status(current, types::DEGRADED)
        && [reasons::CRASH_LOOPING, reasons::UNSCHEDULABLE].contains(&reason)
        && degraded_before.is_none_or(|(s, r, _)| s != "True" || r != reason)
    {
        events.push(event(
            EventType::Warning,
            reason,
            "Observe",
            message.to_string(),
        ));
    }
    events
}

/// Runs one controller per watched namespace (all namespaces when the list is empty) until
/// SIGTERM or Ctrl-C.
pub async fn run(ctx: Arc<Context>, namespaces: Vec<String>) {
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.into_iter().map(Some).collect()
    };
    let controllers = scopes.into_iter().map(|scope| {
        let client = ctx.client.clone();
        fn api<K>(client: &Client, scope: &Option<String>) -> Api<K>
        where
            K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
        {
            match scope {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            }
        }
        // Only our own children: a cluster's other Deployments and Jobs are none of our business.
        let owned = watcher::Config::default().labels(&format!(
            "{}={}",
            tributary_crds::pod::LABEL_MANAGED_BY,
            field_managers::OPERATOR
        ));
        Controller::new(
            api::<StreamingIngestion>(&client, &scope),
            watcher::Config::default(),
        )
        .owns(api::<Deployment>(&client, &scope), owned.clone())
        .owns(api::<Job>(&client, &scope), owned.clone())
        .owns(api::<CronJob>(&client, &scope), owned.clone())
        .owns(api::<ConfigMap>(&client, &scope), owned.clone())
        .owns(api::<ServiceAccount>(&client, &scope), owned.clone())
        .owns(api::<Role>(&client, &scope), owned.clone())
        .owns(api::<RoleBinding>(&client, &scope), owned.clone())
        .owns(api::<PersistentVolumeClaim>(&client, &scope), owned)
        // Workers write their status entries often; coalesce the reconciles those writes
        // trigger, and bound the API load of many ingestions.
        .with_config(
            controller::Config::default()
                .debounce(DEBOUNCE)
                .concurrency(CONCURRENCY),
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                Err(error) => warn!(%error, "controller"),
            }
        })
    });
    futures::future::join_all(controllers).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use tributary_crds::WorkloadRef;

    fn with_ready(status: &str, reason: &str, message: &str) -> StreamingIngestionStatus {
        StreamingIngestionStatus {
            observed_generation: Some(1),
            workload: Some(WorkloadRef {
                kind: "Deployment".into(),
                name: "s".into(),
            }),
            conditions: vec![Condition {
                type_: types::READY.into(),
                status: status.into(),
                reason: reason.into(),
                message: message.into(),
                observed_generation: Some(1),
                last_transition_time: Time(Timestamp::UNIX_EPOCH),
            }],
            ..StreamingIngestionStatus::default()
        }
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(4), Duration::from_secs(40));
        assert_eq!(backoff(30), BACKOFF_MAX);
    }

    #[test]
    fn first_workload_is_a_created_event_and_a_requeue_is_silent() {
        let current = with_ready("True", reasons::WORKERS_READY, "1/1");
        let events = transitions(None, &current, &[]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason, "Created");
        assert_eq!(events[0].note.as_deref(), Some("created Deployment s"));
        assert!(transitions(Some(&current), &current, &[]).is_empty());
    }

    #[test]
    fn spec_change_is_an_updated_event_and_deletions_are_reported() {
        let previous = with_ready("True", reasons::WORKERS_READY, "1/1");
        let mut current = previous.clone();
        current.observed_generation = Some(2);
        let events = transitions(Some(&previous), &current, &["Job s-1-abc".to_string()]);
        let reasons: Vec<_> = events.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(reasons, ["Deleted", "Updated"]);
    }

    #[test]
    fn refusals_and_failed_runs_are_warnings_once() {
        let previous = with_ready("True", reasons::WORKERS_READY, "1/1");
        let refused = with_ready("False", reasons::SECRET_NOT_FOUND, "Secret x not found");
        let events = transitions(Some(&previous), &refused, &[]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].type_, EventType::Warning);
        assert_eq!(events[0].reason, reasons::SECRET_NOT_FOUND);
        assert!(transitions(Some(&refused), &refused, &[]).is_empty());
        let failed = with_ready("False", reasons::RUN_FAILED, "run failed");
        assert_eq!(
            transitions(Some(&previous), &failed, &[])[0].reason,
            reasons::RUN_FAILED
        );
    }

    #[test]
    fn requeue_is_fast_only_while_something_changes() {
        assert_eq!(
            requeue_after(&with_ready("True", reasons::WORKERS_READY, "")),
            REQUEUE_QUIET
        );
        assert_eq!(
            requeue_after(&with_ready("Unknown", reasons::RECONCILING, "")),
            REQUEUE_ACTIVE
        );
    }
}
