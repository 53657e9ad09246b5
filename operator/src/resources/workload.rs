//! The workload: a Deployment for continuous triggers (a query that never ends, restarted when
//! it fails), a Job for a run to completion (`availableNow`, `once`: it ends, and its outcome is
//! the run's), a CronJob for `availableNow` on a `schedule` (one such run per tick, never two at
//! once). The operator's README tables each one's name and settings.

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tributary_crds::{StreamingIngestion, TriggerKind};

use super::{Identity, Workload, labels, names, owned_meta, selector_labels, stable_hash};
use crate::error::{Error, Result};

/// Failed pods a run may have before the Job fails. A worker resumes from its checkpoint, so a
/// retry is safe; three covers a node loss or a broker blip without hiding a real failure.
pub const JOB_BACKOFF_LIMIT: i32 = 3;
/// Finished Jobs a CronJob keeps, for `kubectl logs` of recent runs.
pub const CRON_HISTORY: i32 = 3;

/// The one workload the spec asks for, or none (a suspended run to completion).
pub fn workload(
    ingestion: &StreamingIngestion,
    id: &Identity,
    template: PodTemplateSpec,
) -> Result<Option<Workload>> {
    let spec = &ingestion.spec;
    // Validation has passed, so the trigger parses; say which field if it does not.
    let trigger = spec.trigger_kind().map_err(|message| Error::Setting {
        name: "spec.trigger",
        message,
    })?;
    if !trigger.runs_to_completion() {
        return Ok(Some(Workload::Deployment(Box::new(deployment(
            ingestion, id, template,
        )))));
    }
    if let Some(schedule) = &spec.schedule {
        return Ok(Some(Workload::CronJob(Box::new(cron_job(
            ingestion, id, template, schedule,
        )))));
    }
    if spec.suspended() {
        // A Job cannot be paused without losing its pod; suspending deletes it, and
        // resuming starts a new run (it resumes from the checkpoint).
        return Ok(None);
    }
    Ok(Some(Workload::Job(Box::new(job(ingestion, id, template)?))))
}

/// Whether a trigger makes a Deployment.
pub fn is_continuous(trigger: TriggerKind) -> bool {
    !trigger.runs_to_completion()
}

pub fn deployment(
    ingestion: &StreamingIngestion,
    id: &Identity,
    template: PodTemplateSpec,
) -> Deployment {
    let spec = &ingestion.spec;
    let replicas = if spec.suspended() { 0 } else { spec.replicas() };
    Deployment {
        metadata: owned_meta(ingestion, id, names::workload(&id.name), "worker"),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&id.name)),
                ..LabelSelector::default()
            },
            strategy: Some(rollout(ingestion, &template)),
            revision_history_limit: Some(3),
            template,
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// How a spec change replaces the workers. Exactly once holds across any mix of old and new
/// workers (each partition's first read starts where the table says), so a rolling update
/// (one new worker up before an old one stops) keeps the stream flowing. The exception is a
/// single worker with a claim: the claim may be ReadWriteOnce, which a second pod on another
/// node cannot mount, so the old worker stops first (Recreate). Several workers sharing claims
/// already need ReadWriteMany.
fn rollout(ingestion: &StreamingIngestion, template: &PodTemplateSpec) -> DeploymentStrategy {
    let mounts_a_claim = template
        .spec
        .as_ref()
        .and_then(|pod| pod.volumes.as_ref())
        .is_some_and(|volumes| volumes.iter().any(|v| v.persistent_volume_claim.is_some()));
    if mounts_a_claim && ingestion.spec.replicas() <= 1 {
        return DeploymentStrategy {
            type_: Some("Recreate".to_string()),
            ..DeploymentStrategy::default()
        };
    }
    DeploymentStrategy {
        type_: Some("RollingUpdate".to_string()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(IntOrString::Int(1)),
            max_unavailable: Some(IntOrString::Int(0)),
        }),
    }
}

/// At most one worker of an ingestion evicted at a time (a node drain, a cluster upgrade): each
/// eviction is a rebalance for the others, and the partitions of the evicted worker wait until
/// they are reassigned. For a run to completion, whose single pod it also covers, it never
/// blocks a drain: the run resumes from its checkpoint.
pub fn disruption_budget(ingestion: &StreamingIngestion, id: &Identity) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: owned_meta(ingestion, id, names::workload(&id.name), "worker"),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&id.name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

fn job_spec(ingestion: &StreamingIngestion, mut template: PodTemplateSpec) -> JobSpec {
    if let Some(pod) = template.spec.as_mut() {
        pod.restart_policy = Some("Never".to_string());
    }
    // replicas 0 holds the run (parallelism 0) without deleting it.
    let parallelism = ingestion.spec.replicas().clamp(0, 1);
    JobSpec {
        parallelism: Some(parallelism),
        completions: Some(1),
        backoff_limit: Some(
            ingestion
                .spec
                .runs
                .as_ref()
                .and_then(|runs| runs.backoff_limit)
                .unwrap_or(JOB_BACKOFF_LIMIT),
        ),
        template,
        ..JobSpec::default()
    }
}

pub fn job(
    ingestion: &StreamingIngestion,
    id: &Identity,
    template: PodTemplateSpec,
) -> Result<Job> {
    let spec = job_spec(ingestion, template);
    let template_json = serde_json::to_vec(&spec.template).map_err(|source| Error::Serialize {
        what: format!("the pod template of {}", id.name),
        source,
    })?;
    let generation = ingestion.metadata.generation.unwrap_or(0);
    let name = names::job(&id.name, generation, &stable_hash(&template_json));
    Ok(Job {
        metadata: owned_meta(ingestion, id, name, "worker"),
        spec: Some(spec),
        ..Job::default()
    })
}

pub fn cron_job(
    ingestion: &StreamingIngestion,
    id: &Identity,
    template: PodTemplateSpec,
    schedule: &str,
) -> CronJob {
    let runs = ingestion.spec.runs.as_ref();
    CronJob {
        metadata: owned_meta(ingestion, id, names::workload(&id.name), "worker"),
        spec: Some(CronJobSpec {
            schedule: schedule.to_string(),
            // Two runs must never share a checkpoint.
            concurrency_policy: Some("Forbid".to_string()),
            suspend: Some(ingestion.spec.suspended()),
            successful_jobs_history_limit: Some(
                runs.and_then(|r| r.successful_history)
                    .unwrap_or(CRON_HISTORY),
            ),
            failed_jobs_history_limit: Some(
                runs.and_then(|r| r.failed_history).unwrap_or(CRON_HISTORY),
            ),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&id.name, "worker")),
                    ..ObjectMeta::default()
                }),
                spec: Some(job_spec(ingestion, template)),
            },
            ..CronJobSpec::default()
        }),
        ..CronJob::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::test_support::ingestion;
    use crate::resources::{Settings, build};
    use tributary_crds::pod::ANNOTATION_CONFIG_HASH;

    fn built(extra: &str) -> crate::resources::Desired {
        build(&ingestion(extra), &Settings::default()).expect("builds")
    }

    fn template_hash(t: &PodTemplateSpec) -> String {
        t.metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .expect("annotations")[ANNOTATION_CONFIG_HASH]
            .clone()
    }

    #[test]
    fn default_trigger_makes_a_deployment_with_the_replicas() {
        for extra in [
            "  replicas: 3\n",
            "  replicas: 3\n  trigger: {processingTime: 10s}\n",
        ] {
            let desired = built(extra);
            let Some(Workload::Deployment(d)) = desired.workload else {
                panic!("expected a Deployment for {extra}")
            };
            assert_eq!(d.metadata.name.as_deref(), Some("sensors"));
            let spec = d.spec.expect("spec");
            assert_eq!(spec.replicas, Some(3));
            assert_eq!(spec.selector.match_labels, Some(selector_labels("sensors")));
            let template_labels = spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .expect("labels");
            for (k, v) in selector_labels("sensors") {
                assert_eq!(template_labels.get(&k), Some(&v));
            }
            assert_eq!(template_hash(&spec.template), desired.config_hash);
        }
    }

    fn strategy(extra: &str) -> DeploymentStrategy {
        let Some(Workload::Deployment(d)) = built(extra).workload else {
            panic!("expected a Deployment for {extra}")
        };
        d.spec.and_then(|s| s.strategy).expect("strategy")
    }

    #[test]
    fn one_worker_with_a_claim_is_recreated_others_roll() {
        // The test ingestion mounts a lake claim and a created checkpoint claim.
        assert_eq!(strategy("").type_.as_deref(), Some("Recreate"));
        let rolling = strategy("  replicas: 3\n");
        assert_eq!(rolling.type_.as_deref(), Some("RollingUpdate"));
        let update = rolling.rolling_update.expect("rolling update");
        assert_eq!(update.max_surge, Some(IntOrString::Int(1)));
        assert_eq!(update.max_unavailable, Some(IntOrString::Int(0)));
    }

    #[test]
    fn one_worker_at_a_time_may_be_evicted() {
        let si = ingestion("  replicas: 3\n");
        let id = crate::resources::Identity::of(&si).expect("identity");
        let budget = disruption_budget(&si, &id);
        assert_eq!(budget.metadata.name.as_deref(), Some("sensors"));
        let spec = budget.spec.expect("spec");
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(
            spec.selector.and_then(|s| s.match_labels),
            Some(selector_labels("sensors"))
        );
        assert_eq!(
            built("").disruption_budget.metadata.name.as_deref(),
            Some("sensors")
        );
    }

    #[test]
    fn run_policy_sets_job_retries_and_cron_history() {
        let job_extra = "  trigger: {availableNow: true}\n  runs: {backoffLimit: 7}\n";
        let Some(Workload::Job(job)) = built(job_extra).workload else {
            panic!("expected a Job")
        };
        assert_eq!(job.spec.and_then(|s| s.backoff_limit), Some(7));
        let cron_extra = "  trigger: {availableNow: true}\n  schedule: \"@hourly\"\n  runs: {successfulHistory: 1, failedHistory: 5}\n";
        let Some(Workload::CronJob(cron)) = built(cron_extra).workload else {
            panic!("expected a CronJob")
        };
        let spec = cron.spec.expect("spec");
        assert_eq!(spec.successful_jobs_history_limit, Some(1));
        assert_eq!(spec.failed_jobs_history_limit, Some(5));
        let job = spec.job_template.spec.expect("job spec");
        assert_eq!(job.backoff_limit, Some(JOB_BACKOFF_LIMIT), "the default");
    }

    #[test]
    fn suspended_deployment_has_no_replicas() {
        let Some(Workload::Deployment(d)) = built("  replicas: 3\n  suspend: true\n").workload
        else {
            panic!("expected a Deployment")
        };
        assert_eq!(d.spec.and_then(|s| s.replicas), Some(0));
    }

    #[test]
    fn spec_change_changes_the_config_hash() {
        let a = built("  replicas: 1\n");
        let b = built("  replicas: 1\n  trigger: {processingTime: 30s}\n");
        assert_ne!(a.config_hash, b.config_hash);
        assert_eq!(
            a.config_hash,
            built("  replicas: 1\n").config_hash,
            "stable for one spec"
        );
    }

    #[test]
    fn available_now_and_once_make_a_job_named_after_generation_and_template() {
        for trigger in ["{availableNow: true}", "{once: true}"] {
            let desired = built(&format!("  trigger: {trigger}\n"));
            let Some(Workload::Job(job)) = desired.workload else {
                panic!("expected a Job for {trigger}")
            };
            let name = job.metadata.name.clone().expect("name");
            assert!(name.starts_with("sensors-3-"), "{name}");
            let spec = job.spec.expect("spec");
            assert_eq!(spec.completions, Some(1));
            assert_eq!(spec.parallelism, Some(1));
            assert_eq!(spec.backoff_limit, Some(JOB_BACKOFF_LIMIT));
            assert_eq!(
                spec.ttl_seconds_after_finished, None,
                "a deleted Job would run again"
            );
            assert_eq!(
                spec.template.spec.and_then(|p| p.restart_policy).as_deref(),
                Some("Never")
            );
        }
        let job_name = |extra: &str, generation: i64| {
            let mut si = ingestion(extra);
            si.metadata.generation = Some(generation);
            match build(&si, &Settings::default()).expect("builds").workload {
                Some(Workload::Job(job)) => job.metadata.name.expect("name"),
                other => panic!("expected a Job, got {other:?}"),
            }
        };
        let base = job_name("  trigger: {availableNow: true}\n", 3);
        assert_eq!(base, job_name("  trigger: {availableNow: true}\n", 3));
        assert_ne!(base, job_name("  trigger: {availableNow: true}\n", 4));
        assert_ne!(
            base,
            job_name(
                "  trigger: {availableNow: true}\n  worker: {image: other:1}\n",
                3
            )
        );
    }

    #[test]
    fn suspended_job_is_not_built() {
        assert!(
            built("  trigger: {availableNow: true}\n  suspend: true\n")
                .workload
                .is_none()
        );
    }

    #[test]
    fn schedule_makes_a_forbid_cron_job_that_suspends() {
        for (suspend, expected) in [("false", false), ("true", true)] {
            let desired = built(&format!(
                "  trigger: {{availableNow: true}}\n  schedule: \"*/15 * * * *\"\n  suspend: {suspend}\n"
            ));
            let Some(Workload::CronJob(cron)) = desired.workload else {
                panic!("expected a CronJob")
            };
            assert_eq!(cron.metadata.name.as_deref(), Some("sensors"));
            let spec = cron.spec.expect("spec");
            assert_eq!(spec.schedule, "*/15 * * * *");
            assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
            assert_eq!(spec.suspend, Some(expected));
            let job = spec.job_template.spec.expect("job spec");
            assert_eq!(job.completions, Some(1));
            assert_eq!(template_hash(&job.template), desired.config_hash);
        }
    }
}
