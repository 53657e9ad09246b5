//! The reconcile of one StreamingIngestion, in stages:
//!
//! 1. validate the spec on its own (pure: an invalid spec touches nothing but the status);
//! 2. dereference: whether the referenced Secrets exist (a metadata GET each: their values are
//!    never read) and, from the caches, the namespace's other ingestions, this ingestion's
//!    workloads and its worker pods;
//! 3. validate against what was dereferenced (pure: missing Secrets, a checkpoint an older
//!    ingestion owns);
//! 4. build every object (pure, [`resources`]);
//! 5. apply them (server-side, one field manager), workload last;
//! 6. remove workloads of another kind, or of an earlier run;
//! 7. status (pure [`status`], written only when it changed) and events.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{Instrument, info, info_span, warn};
use tributary_crds::conditions::{Status, field_managers, reasons, types};
use tributary_crds::{StreamingIngestion, StreamingIngestionStatus};

use crate::cache::{Cache, Workloads};
use crate::checkpoint::conflicting_owner;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::resources::pod::referenced_secrets;
use crate::resources::{self, Desired, Identity, Settings, Workload};
use crate::scaling::{self, Scale};
use crate::status::{self, Blocker, Observation, ObservedJob, ObservedWorkload};

/// Requeue while something is changing (rollouts, runs, crash loops). Pods and workloads are
/// watched, so changes reach the status at once; this only refreshes what nothing announces
/// (the time a rollout takes, the workers' aggregates).
pub const REQUEUE_ACTIVE: Duration = Duration::from_secs(30);
/// Requeue when all is quiet: refreshes the workers' aggregates.
pub const REQUEUE_QUIET: Duration = Duration::from_secs(300);
/// First retry after an error; doubles per consecutive failure of the same object.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// How long a reconcile waits for the caches' first complete lists before it fails (and is
/// retried with back-off).
pub const CACHE_WAIT: Duration = Duration::from_secs(30);

/// What every reconcile of one watched scope shares.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub cache: Cache,
    /// Consecutive failures per object (namespace/name), for the per-object back-off.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, settings: Settings, metrics: Arc<Metrics>, cache: Cache) -> Context {
        let reporter = Reporter {
            controller: field_managers::OPERATOR.to_string(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            metrics,
            cache,
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

    // Stage 1: the spec on its own.
    if let Err(errors) = tributary_crds::validate(ingestion) {
        let blocker = Blocker::InvalidSpec(errors.to_string());
        return finish(ingestion, ctx, &id, Some(blocker), Observed::default()).await;
    }

    // Stage 2: what the spec refers to, and what exists.
    let world = dereference(ingestion, ctx, &id).await?;

    // Stage 3: the spec against what exists.
    match check(ingestion, &world) {
        Some(blocker @ Blocker::CheckpointInUse(_)) => {
            // Two writers must never share a checkpoint: remove any workload this one has.
            let plan = stale_workloads(&world.workloads, ingestion, &id, None);
            let deleted = delete_workloads(ctx, &id, &plan.delete).await?;
            let observed = Observed {
                deleted,
                ..Observed::default()
            };
            return finish(ingestion, ctx, &id, Some(blocker), observed).await;
        }
        Some(blocker) => {
            return finish(ingestion, ctx, &id, Some(blocker), Observed::default()).await;
        }
        None => {}
    }

    // Stage 4: how many workers (autoscaling, restart limit), then build.
    let scale = scaling::decide(ingestion, &world.pods, Timestamp::now());
    let effective = scale.apply(ingestion);
    let ingestion = &effective;
    let desired = resources::build(ingestion, &ctx.settings)?;

    // Stage 5: apply.
    let applied = apply_all(ctx, &id, &desired).await?;

    // Stage 6: remove workloads of a kind (or a Job of a run) that no longer applies.
    let plan = stale_workloads(&world.workloads, ingestion, &id, desired.workload.as_ref());
    let deleted = delete_workloads(ctx, &id, &plan.delete).await?;
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
            last_job: plan.last_cron_run,
        },
    };

    // Stage 7: status.
    prune_worker_entries(ingestion, ctx, &id, &world.pods).await?;
    let observed = Observed {
        workload,
        pods: world.pods,
        deleted,
        scale,
    };
    finish(ingestion, ctx, &id, None, observed).await
}

/// What stage 2 found.
#[derive(Clone, Debug, Default)]
pub struct World {
    /// Referenced Secrets that do not exist.
    pub missing_secrets: Vec<String>,
    /// Every ingestion of the namespace (this one included).
    pub ingestions: Vec<StreamingIngestion>,
    /// Workloads carrying this ingestion's label.
    pub workloads: Workloads,
    /// This ingestion's worker pods.
    pub pods: Vec<Pod>,
}

async fn dereference(
    ingestion: &StreamingIngestion,
    ctx: &Context,
    id: &Identity,
) -> Result<World> {
    // Never cached: watching Secrets would need the right to read every Secret's value.
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &id.namespace);
    let mut missing_secrets = Vec::new();
    for name in referenced_secrets(ingestion).into_keys() {
        let found = secrets
            .get_metadata_opt(&name)
            .await
            .map_err(|source| Error::ReadSecret {
                name: name.clone(),
                source,
            })?;
        if found.is_none() {
            missing_secrets.push(name);
        }
    }
    ctx.cache.wait_until_ready(CACHE_WAIT).await?;
    Ok(World {
        missing_secrets,
        ingestions: ctx.cache.ingestions_in(&id.namespace),
        workloads: ctx.cache.workloads_of(id),
        pods: ctx.cache.worker_pods(id),
    })
}

/// What stops the reconcile before anything is applied, judged from what exists.
pub fn check(ingestion: &StreamingIngestion, world: &World) -> Option<Blocker> {
    if !world.missing_secrets.is_empty() {
        return Some(Blocker::SecretsMissing(world.missing_secrets.clone()));
    }
    conflicting_owner(ingestion, &world.ingestions).map(Blocker::CheckpointInUse)
}

/// Which cached workloads to delete, and the newest run of the ingestion's CronJob.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StalePlan {
    /// (kind, name), in the order they are deleted.
    pub delete: Vec<(&'static str, String)>,
    pub last_cron_run: Option<ObservedJob>,
}

fn controlled_by(meta: &ObjectMeta, kind: &str, uid: Option<&str>, name: &str) -> bool {
    meta.owner_references.iter().flatten().any(|o| {
        o.controller == Some(true)
            && o.kind == kind
            && o.name == name
            && uid.is_none_or(|uid| o.uid == uid)
    })
}

/// The workloads this ingestion controls that are not `keep` (another kind after a trigger
/// change, or the Job of an earlier run: a new generation or template is a new run, and the
/// old one must not keep writing the same checkpoint). Objects already being deleted are left
/// alone. Workloads that only carry our label, without our controller reference, are not ours.
pub fn stale_workloads(
    workloads: &Workloads,
    ingestion: &StreamingIngestion,
    id: &Identity,
    keep: Option<&Workload>,
) -> StalePlan {
    let uid = ingestion.metadata.uid.as_deref();
    let keep_kind = keep.map(Workload::kind);
    let keep_name = keep.map(Workload::name);
    let ours = |meta: &ObjectMeta| {
        meta.deletion_timestamp.is_none()
            && controlled_by(meta, "StreamingIngestion", uid, &id.name)
    };
    let mut plan = StalePlan::default();
    if keep_kind != Some("Deployment") {
        for d in workloads.deployments.iter().filter(|d| ours(&d.metadata)) {
            plan.delete.push(("Deployment", d.name_any()));
        }
    }
    if keep_kind != Some("CronJob") {
        for c in workloads.cron_jobs.iter().filter(|c| ours(&c.metadata)) {
            plan.delete.push(("CronJob", c.name_any()));
        }
    }
    let mut last_cron_run: Option<&Job> = None;
    for j in &workloads.jobs {
        if ours(&j.metadata) {
            let keep_this = keep_kind == Some("Job") && keep_name.as_deref() == Some(&j.name_any());
            if !keep_this {
                plan.delete.push(("Job", j.name_any()));
            }
        } else if keep_kind == Some("CronJob")
            && controlled_by(&j.metadata, "CronJob", None, &id.name)
        {
            let newer = last_cron_run.is_none_or(|best| {
                j.metadata.creation_timestamp.as_ref().map(|t| t.0)
                    > best.metadata.creation_timestamp.as_ref().map(|t| t.0)
            });
            if newer {
                last_cron_run = Some(j);
            }
        }
    }
    plan.last_cron_run = last_cron_run.map(|j| ObservedJob {
        name: j.name_any(),
        status: j.status.clone(),
    });
    plan
}

/// Deletes the planned workloads; returns "Kind name" of each one this call removed (one
/// already gone, e.g. still in a lagging cache, is neither an error nor announced again).
async fn delete_workloads(
    ctx: &Context,
    id: &Identity,
    plan: &[(&'static str, String)],
) -> Result<Vec<String>> {
    let mut deleted = Vec::new();
    for (kind, name) in plan {
        let removed = match *kind {
            "Deployment" => delete_named::<Deployment>(&ctx.client, id, name).await?,
            "CronJob" => delete_named::<CronJob>(&ctx.client, id, name).await?,
            _ => delete_named::<Job>(&ctx.client, id, name).await?,
        };
        if removed {
            deleted.push(format!("{kind} {name}"));
        }
    }
    Ok(deleted)
}

/// Deletes one object; false when it was already gone.
async fn delete_named<K>(client: &Client, id: &Identity, name: &str) -> Result<bool>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), &id.namespace);
    // Background propagation: a Job's or Deployment's pods go with it.
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(source) => Err(Error::Delete {
            kind: K::kind(&()).to_string(),
            name: name.to_string(),
            source,
        }),
    }
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
    apply::<PodDisruptionBudget>(client, ns, &desired.disruption_budget).await?;
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

/// What the status stage is given besides the blocker.
#[derive(Clone, Debug, Default)]
struct Observed {
    workload: ObservedWorkload,
    pods: Vec<Pod>,
    /// "Kind name" of each workload this reconcile deleted.
    deleted: Vec<String>,
    scale: Scale,
}

/// Writes the status when it changed, publishes events for the transitions, and decides when
/// to look again.
async fn finish(
    ingestion: &StreamingIngestion,
    ctx: &Context,
    id: &Identity,
    blocker: Option<Blocker>,
    observed: Observed,
) -> Result<Action> {
    let computed = status::compute(&Observation {
        ingestion,
        blocker,
        workload: observed.workload,
        pods: &observed.pods,
        scale: observed.scale,
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
    for event in transitions(ingestion.status.as_ref(), &computed, &observed.deleted) {
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
    let is = |type_, wanted: Status| {
        condition_status(status, type_).is_some_and(|(s, _, _)| s == wanted.as_str())
    };
    let busy = is(types::PROGRESSING, Status::True)
        || condition_status(status, types::DEGRADED)
            .is_some_and(|(s, _, _)| s != Status::False.as_str())
        || is(types::READY, Status::Unknown)
        // Workers are due to be removed once the lag has stayed low long enough.
        || status
            .autoscaling
            .as_ref()
            .is_some_and(|a| a.low_lag_since.is_some());
    if busy { REQUEUE_ACTIVE } else { REQUEUE_QUIET }
}

/// The API server refuses an Event whose note is longer than this many bytes.
pub const EVENT_NOTE_MAX_BYTES: usize = 1024;

/// A condition message cut to what an Event's note may hold (the API server refuses the whole
/// Event otherwise). The condition keeps the full text; the note says where to find it.
fn event_note(message: String) -> String {
    if message.len() <= EVENT_NOTE_MAX_BYTES {
        return message;
    }
    const MORE: &str = " ... (the full message is in the status conditions)";
    let mut end = EVENT_NOTE_MAX_BYTES - MORE.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MORE}", &message[..end])
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
        note: Some(event_note(note)),
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
        && ([
            reasons::CRASH_LOOPING,
            reasons::UNSCHEDULABLE,
            reasons::RESTART_LIMIT_REACHED,
            reasons::STALLED,
        ]
        .contains(&reason)
            || reasons::CATALOG.contains(&reason))
        && degraded_before.is_none_or(|(s, r, _)| s != "True" || r != reason)
    {
        events.push(event(
            EventType::Warning,
            reason,
            "Observe",
            message.to_string(),
        ));
    }
    if let Some(reset) = &current.reset
        && previous
            .reset
            .as_ref()
            .is_none_or(|before| before.id != reset.id || before.state != reset.state)
    {
        let to = reset.to.as_deref().unwrap_or("the spec's target");
        if reset.state == tributary_crds::reset_states::APPLIED {
            let version = reset
                .delta_version
                .map(|v| format!(", table version {v}"))
                .unwrap_or_default();
            events.push(event(
                EventType::Normal,
                "ResetApplied",
                "Reset",
                format!(
                    "offset reset {} to {to} applied at {}{version}: the table's history records it; records before the new offsets are read again (rewind) or skipped",
                    reset.id,
                    reset.applied_at.as_deref().unwrap_or("an unknown time")
                ),
            ));
        } else {
            events.push(event(
                EventType::Normal,
                "ResetRequested",
                "Reset",
                format!(
                    "offset reset {} to {to} requested: the first worker to start with this spec applies it, once",
                    reset.id
                ),
            ));
        }
    }
    let scaled_from = previous.autoscaling.as_ref().map(|a| a.desired_replicas);
    if let Some(now) = &current.autoscaling
        && let Some(from) = scaled_from
        && from != now.desired_replicas
    {
        let reason = if now.desired_replicas > from {
            "ScaledUp"
        } else {
            "ScaledDown"
        };
        events.push(event(
            EventType::Normal,
            reason,
            "Scale",
            now.message
                .clone()
                .unwrap_or_else(|| format!("{from} -> {} workers", now.desired_replicas)),
        ));
    }
    events
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
    fn a_long_message_is_cut_to_what_an_event_may_hold() {
        // A crash loop's message carries the worker's last log lines: often over 1 KiB.
        let long = format!(
            "workers crash-looping: {}",
            "é cannot reach Kafka ".repeat(80)
        );
        let previous = with_ready("True", reasons::WORKERS_READY, "1/1");
        let refused = with_ready("False", reasons::SECRET_NOT_FOUND, &long);
        let events = transitions(Some(&previous), &refused, &[]);
        let note = events[0].note.as_deref().expect("a note");
        assert!(note.len() <= EVENT_NOTE_MAX_BYTES, "{} bytes", note.len());
        assert!(note.starts_with("workers crash-looping: é cannot reach Kafka"));
        assert!(note.ends_with("(the full message is in the status conditions)"));
        let short = with_ready("False", reasons::SECRET_NOT_FOUND, "Secret x not found");
        let events = transitions(Some(&previous), &short, &[]);
        assert_eq!(events[0].note.as_deref(), Some("Secret x not found"));
    }

    #[test]
    fn a_reset_is_announced_when_requested_and_when_applied_once_each() {
        use tributary_crds::{ResetStatus, reset_states};
        let quiet = with_ready("True", reasons::WORKERS_READY, "1/1");
        let with_reset = |state: &str, version| StreamingIngestionStatus {
            reset: Some(ResetStatus {
                id: "replay-1".into(),
                state: state.into(),
                to: Some("offsets {\"t\":{\"0\":5}}".into()),
                requested_at: Some("2026-11-30T12:00:00Z".into()),
                applied_at: (state == reset_states::APPLIED)
                    .then(|| "2026-11-30T12:01:00+00:00".into()),
                delta_version: version,
            }),
            ..quiet.clone()
        };
        let requested = with_reset(reset_states::REQUESTED, None);
        let events = transitions(Some(&quiet), &requested, &[]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason, "ResetRequested");
        assert!(
            events[0]
                .note
                .as_deref()
                .is_some_and(|n| n.contains("replay-1") && n.contains("offsets {\"t\":{\"0\":5}}")),
            "{:?}",
            events[0].note
        );
        assert!(transitions(Some(&requested), &requested, &[]).is_empty());
        let applied = with_reset(reset_states::APPLIED, Some(9));
        let events = transitions(Some(&requested), &applied, &[]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason, "ResetApplied");
        assert!(
            events[0].note.as_deref().is_some_and(
                |n| n.contains("applied at 2026-11-30T12:01:00+00:00, table version 9")
            ),
            "{:?}",
            events[0].note
        );
        assert!(transitions(Some(&applied), &applied, &[]).is_empty());
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

    #[test]
    fn stale_workloads_skip_objects_being_deleted_and_keep_the_current_kind() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

        let si = crate::resources::test_support::ingestion("");
        let id = Identity::of(&si).expect("identity");
        let owned = |name: &str, deleting: bool| ObjectMeta {
            name: Some(name.into()),
            namespace: Some("iot".into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "tributary.dev/v1alpha1".into(),
                kind: "StreamingIngestion".into(),
                name: "sensors".into(),
                uid: si.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                ..OwnerReference::default()
            }]),
            deletion_timestamp: deleting.then_some(Time(Timestamp::UNIX_EPOCH)),
            ..ObjectMeta::default()
        };
        let workloads = Workloads {
            deployments: vec![Deployment {
                metadata: owned("sensors", false),
                ..Deployment::default()
            }],
            jobs: vec![
                Job {
                    metadata: owned("sensors-1-old", true),
                    ..Job::default()
                },
                Job {
                    metadata: owned("sensors-2-older", false),
                    ..Job::default()
                },
            ],
            cron_jobs: vec![],
        };
        let desired = resources::build(&si, &Settings::default()).expect("builds");
        // Continuous: the Deployment stays; the Job not yet being deleted goes.
        let plan = stale_workloads(&workloads, &si, &id, desired.workload.as_ref());
        assert_eq!(plan.delete, vec![("Job", "sensors-2-older".to_string())]);
        // Blocked: everything of ours goes, except what is already going.
        let plan = stale_workloads(&workloads, &si, &id, None);
        assert_eq!(
            plan.delete,
            vec![
                ("Deployment", "sensors".to_string()),
                ("Job", "sensors-2-older".to_string())
            ]
        );
    }
}
