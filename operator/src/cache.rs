//! What the reconcile reads without asking the API server: reflector stores of the
//! ingestions, the workloads the operator created and the worker pods, kept current by the
//! controller's watches (see [`crate::controller`]).
//!
//! A store may lag the API server by a watch event. The reconcile is safe with that: applies
//! are idempotent, deleting what is already gone is a success, and every change to a watched
//! object triggers another reconcile that sees it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use kube::Resource;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::watcher;
use tributary_crds::StreamingIngestion;
use tributary_crds::pod::LABEL_INGESTION;

use crate::error::{Error, Result};
use crate::resources::{Identity, selector_labels};

/// The stores one controller (one watched scope) reads.
#[derive(Clone)]
pub struct Cache {
    pub ingestions: Store<StreamingIngestion>,
    pub deployments: Store<Deployment>,
    pub jobs: Store<Job>,
    pub cron_jobs: Store<CronJob>,
    pub pods: Store<Pod>,
}

/// The writing ends of a [`Cache`], fed by the watches.
pub struct CacheWriters {
    pub ingestions: Writer<StreamingIngestion>,
    pub deployments: Writer<Deployment>,
    pub jobs: Writer<Job>,
    pub cron_jobs: Writer<CronJob>,
    pub pods: Writer<Pod>,
}

/// Objects to put into a cache at once (tests, and anything that has the objects in hand).
#[derive(Clone, Debug, Default)]
pub struct Contents {
    pub ingestions: Vec<StreamingIngestion>,
    pub deployments: Vec<Deployment>,
    pub jobs: Vec<Job>,
    pub cron_jobs: Vec<CronJob>,
    pub pods: Vec<Pod>,
}

fn preload<K>(objects: Vec<K>) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let (store, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for object in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(object));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    store
}

async fn ready<K>(store: &Store<K>, kind: &'static str, wait: Duration) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    match tokio::time::timeout(wait, store.wait_until_ready()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) | Err(_) => Err(Error::CacheNotReady { kind, waited: wait }),
    }
}

/// Sorted by name: a store has no order, and the status (pod problems are listed in it) must
/// not change when nothing else did.
fn sorted<K: Resource + Clone>(objects: Vec<Arc<K>>) -> Vec<K> {
    let mut objects: Vec<K> = objects.iter().map(|o| o.as_ref().clone()).collect();
    objects.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
    objects
}

fn labelled(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    wanted: &BTreeMap<String, String>,
) -> bool {
    let labels = meta.labels.as_ref();
    wanted
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

impl Cache {
    /// An empty cache and its writers; the cache is ready once every writer saw its first
    /// complete list.
    pub fn new() -> (Cache, CacheWriters) {
        let (ingestions, ingestions_writer) = reflector::store();
        let (deployments, deployments_writer) = reflector::store();
        let (jobs, jobs_writer) = reflector::store();
        let (cron_jobs, cron_jobs_writer) = reflector::store();
        let (pods, pods_writer) = reflector::store();
        (
            Cache {
                ingestions,
                deployments,
                jobs,
                cron_jobs,
                pods,
            },
            CacheWriters {
                ingestions: ingestions_writer,
                deployments: deployments_writer,
                jobs: jobs_writer,
                cron_jobs: cron_jobs_writer,
                pods: pods_writer,
            },
        )
    }

    /// A ready cache holding exactly `contents`.
    pub fn preloaded(contents: Contents) -> Cache {
        Cache {
            ingestions: preload(contents.ingestions),
            deployments: preload(contents.deployments),
            jobs: preload(contents.jobs),
            cron_jobs: preload(contents.cron_jobs),
            pods: preload(contents.pods),
        }
    }

    /// Waits until every store holds its first complete list. A reconcile never acts on a
    /// store still filling: it would miss the older ingestion that owns a checkpoint, or a
    /// workload to remove.
    pub async fn wait_until_ready(&self, wait: Duration) -> Result<()> {
        ready(&self.ingestions, "StreamingIngestion", wait).await?;
        ready(&self.deployments, "Deployment", wait).await?;
        ready(&self.jobs, "Job", wait).await?;
        ready(&self.cron_jobs, "CronJob", wait).await?;
        ready(&self.pods, "Pod", wait).await
    }

    /// The ingestions of a namespace.
    pub fn ingestions_in(&self, namespace: &str) -> Vec<StreamingIngestion> {
        sorted(
            self.ingestions
                .state_filter(|si| si.metadata.namespace.as_deref() == Some(namespace)),
        )
    }

    /// Objects of the ingestion's namespace that carry its label (what the operator created
    /// for it, and the runs its CronJob started).
    fn of_ingestion<K>(store: &Store<K>, id: &Identity) -> Vec<K>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        let wanted = BTreeMap::from([(LABEL_INGESTION.to_string(), id.name.clone())]);
        sorted(store.state_filter(|o| {
            o.meta().namespace.as_deref() == Some(id.namespace.as_str())
                && labelled(o.meta(), &wanted)
        }))
    }

    /// The workloads labelled with the ingestion's name.
    pub fn workloads_of(&self, id: &Identity) -> Workloads {
        Workloads {
            deployments: Self::of_ingestion(&self.deployments, id),
            jobs: Self::of_ingestion(&self.jobs, id),
            cron_jobs: Self::of_ingestion(&self.cron_jobs, id),
        }
    }

    /// The ingestion's worker pods (its Deployment's selector), by name.
    pub fn worker_pods(&self, id: &Identity) -> Vec<Pod> {
        let wanted = selector_labels(&id.name);
        sorted(self.pods.state_filter(|pod| {
            pod.metadata.namespace.as_deref() == Some(id.namespace.as_str())
                && labelled(&pod.metadata, &wanted)
        }))
    }
}

/// The workloads of one ingestion, as cached.
#[derive(Clone, Debug, Default)]
pub struct Workloads {
    pub deployments: Vec<Deployment>,
    pub jobs: Vec<Job>,
    pub cron_jobs: Vec<CronJob>,
}

/// The ingestion an object belongs to, by its `tributary.dev/ingestion` label: how a worker
/// pod (owned by a ReplicaSet or a Job, not by the ingestion) or a CronJob's run reaches the
/// reconcile of its ingestion.
pub fn ingestion_of<K: Resource>(object: &K) -> Option<ObjectRef<StreamingIngestion>> {
    let meta = object.meta();
    let name = meta.labels.as_ref()?.get(LABEL_INGESTION)?;
    let namespace = meta.namespace.as_deref()?;
    Some(ObjectRef::new(name).within(namespace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str, namespace: &str, labels: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    #[test]
    fn a_worker_pod_maps_to_its_ingestion_and_others_to_none() {
        let worker = pod(
            "sensors-7d9-abc",
            "iot",
            &[
                ("app.kubernetes.io/name", "tributary-worker"),
                ("tributary.dev/ingestion", "sensors"),
            ],
        );
        assert_eq!(
            ingestion_of(&worker),
            Some(ObjectRef::new("sensors").within("iot"))
        );
        assert_eq!(ingestion_of(&pod("web-1", "iot", &[("app", "web")])), None);
    }

    #[tokio::test]
    async fn worker_pods_are_the_ingestions_own_in_its_namespace_sorted_by_name() {
        let selector = [
            ("app.kubernetes.io/name", "tributary-worker"),
            ("tributary.dev/ingestion", "sensors"),
        ];
        let cache = Cache::preloaded(Contents {
            pods: vec![
                pod("sensors-b", "iot", &selector),
                pod("sensors-a", "iot", &selector),
                pod("sensors-x", "other", &selector),
                pod(
                    "meters-a",
                    "iot",
                    &[
                        ("app.kubernetes.io/name", "tributary-worker"),
                        ("tributary.dev/ingestion", "meters"),
                    ],
                ),
            ],
            ..Contents::default()
        });
        cache
            .wait_until_ready(Duration::from_secs(1))
            .await
            .expect("a preloaded cache is ready");
        let id = Identity {
            name: "sensors".into(),
            namespace: "iot".into(),
        };
        let names: Vec<_> = cache
            .worker_pods(&id)
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        assert_eq!(names, ["sensors-a", "sensors-b"]);
    }

    #[tokio::test]
    async fn a_cache_that_never_fills_is_an_error_naming_the_kind() {
        let (cache, _writers) = Cache::new();
        let error = cache
            .wait_until_ready(Duration::from_millis(50))
            .await
            .expect_err("nothing fills it");
        assert!(error.to_string().contains("StreamingIngestion"), "{error}");
    }
}
