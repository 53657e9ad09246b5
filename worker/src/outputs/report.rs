//! Status reporting: progress -> (throttle) -> server-side apply of this worker's part of the
//! StreamingIngestion's status.
//!
//! A worker writes `queryId`, `lastProgress` and its own entry in `status.workers`, under a
//! field manager of its own (crds `field_managers::worker`), so that replicas never remove each
//! other's entries and never touch the operator's phase, conditions or workload. Writes are
//! throttled: the pipeline hands over every record without waiting, a background task applies
//! the latest one at most once per interval, and the last record of a run and a failure are
//! always written before the worker exits (`close` flushes without waiting for the interval).

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, warn};
use tributary_crds::conditions::field_managers;
use tributary_crds::{
    AppliedReset, MaintenanceRun, StreamingIngestion, StreamingQueryProgress, WorkerStatus, pod,
};

/// Default minimum time between two status writes of one worker.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// How long a worker waits, at exit, for its last status write.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Which resource to report to, and as which worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusTarget {
    pub namespace: String,
    pub name: String,
    pub pod: String,
}

impl StatusTarget {
    /// The target the operator describes in the pod's environment (crds `pod` contract), or
    /// None when status reporting is off (standalone runs).
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Option<StatusTarget> {
        if lookup(pod::ENV_REPORT_STATUS).as_deref() != Some("true") {
            return None;
        }
        Some(StatusTarget {
            namespace: lookup(pod::ENV_INGESTION_NAMESPACE)?,
            name: lookup(pod::ENV_INGESTION_NAME)?,
            pod: lookup(pod::ENV_POD_NAME)?,
        })
    }
}

/// What the worker has to say.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkerReport {
    pub query_id: Option<String>,
    pub progress: Option<StreamingQueryProgress>,
    /// Assigned partitions, as topic-partition.
    pub partitions: Vec<String>,
    /// Offsets behind the latest over the assigned partitions, when known (otherwise the
    /// progress's own figure).
    pub lag: Option<i64>,
    /// Why the worker stopped, when it failed.
    pub error: Option<String>,
    /// The condition reason of that error, where there is one.
    pub error_reason: Option<String>,
    /// spec.reset, once the table records it as applied.
    pub reset: Option<AppliedReset>,
    /// The last VACUUM and compaction of the table by this worker.
    pub last_vacuum: Option<MaintenanceRun>,
    pub last_compaction: Option<MaintenanceRun>,
}

/// The server-side apply body for one report: only the fields a worker owns.
pub fn status_patch(target: &StatusTarget, report: &WorkerReport) -> Value {
    let progress = report.progress.as_ref();
    let lag = report.lag.or_else(|| {
        progress.and_then(|p| {
            p.sources
                .iter()
                .map(|s| s.offsets_behind_latest)
                .sum::<Option<i64>>()
        })
    });
    let entry = WorkerStatus {
        name: target.pod.clone(),
        partitions: report.partitions.clone(),
        lag,
        processed_rows_per_second: progress.and_then(|p| p.processed_rows_per_second),
        batch_id: progress.map(|p| p.batch_id),
        timestamp: Some(
            progress
                .map(|p| p.timestamp.clone())
                .unwrap_or_else(|| chrono::Utc::now().to_rfc3339()),
        ),
        error: report.error.clone(),
        error_reason: report.error_reason.clone(),
        reset: report.reset.clone(),
        last_vacuum: report.last_vacuum.clone(),
        last_compaction: report.last_compaction.clone(),
    };
    let mut status = json!({ "workers": [entry] });
    if let Some(query_id) = &report.query_id {
        status["queryId"] = json!(query_id);
    }
    if let Some(progress) = progress {
        status["lastProgress"] = json!(progress);
    }
    json!({
        "apiVersion": format!("{}/{}", tributary_crds::GROUP, tributary_crds::VERSION),
        "kind": "StreamingIngestion",
        "status": status,
    })
}

/// Hands reports to the background writer.
pub struct StatusReporter {
    latest: watch::Sender<Option<(WorkerReport, bool)>>,
    writer: JoinHandle<()>,
}

impl StatusReporter {
    /// Starts the writer task on the current tokio runtime.
    pub fn start(client: kube::Client, target: StatusTarget, interval: Duration) -> StatusReporter {
        let (latest, receiver) = watch::channel(None);
        let api: Api<StreamingIngestion> = Api::namespaced(client, &target.namespace);
        let writer = tokio::spawn(write_loop(api, target, receiver, interval));
        StatusReporter { latest, writer }
    }

    /// Records the newest state; written within the interval. Never blocks.
    pub fn report(&self, report: WorkerReport) {
        self.latest.send_replace(Some((report, false)));
    }

    /// Records that the worker failed, keeping its last progress, and writes it now.
    pub fn report_failure(&self, error: String, reason: Option<&str>) {
        self.latest.send_modify(|slot| {
            let mut report = slot.take().map(|(report, _)| report).unwrap_or_default();
            report.error = Some(error);
            report.error_reason = reason.map(str::to_string);
            *slot = Some((report, true));
        });
    }

    /// Writes what is pending and stops, waiting at most `timeout`.
    pub async fn close(self, timeout: Duration) {
        drop(self.latest);
        if tokio::time::timeout(timeout, self.writer).await.is_err() {
            warn!("the last status write did not finish in time");
        }
    }
}

async fn write_loop(
    api: Api<StreamingIngestion>,
    target: StatusTarget,
    mut receiver: watch::Receiver<Option<(WorkerReport, bool)>>,
    interval: Duration,
) {
    let params = PatchParams::apply(&field_managers::worker(&target.pod)).force();
    let mut last_write: Option<tokio::time::Instant> = None;
    // `changed` yields a report not yet seen (even after the sender closed), and fails only
    // once the sender is gone and everything was seen: then the loop is done.
    while receiver.changed().await.is_ok() {
        let urgent = receiver
            .borrow()
            .as_ref()
            .is_some_and(|(_, urgent)| *urgent);
        // Throttle: wait out the interval unless this report must go now; reports arriving
        // meanwhile replace it, and an urgent one or the worker's exit cuts the wait short.
        if !urgent && let Some(at) = last_write {
            tokio::select! {
                _ = tokio::time::sleep_until(at + interval) => {}
                _ = wait_for_urgent_or_close(&mut receiver) => {}
            }
        }
        let report = receiver
            .borrow_and_update()
            .as_ref()
            .map(|(report, _)| report.clone());
        let Some(report) = report else { continue };
        let body = status_patch(&target, &report);
        match api
            .patch_status(&target.name, &params, &Patch::Apply(&body))
            .await
        {
            Ok(_) => debug!(pod = %target.pod, "status written"),
            // Status is a report, not the truth (the table is): a failed write is logged and
            // the next one carries the newer state.
            Err(error) => warn!(%error, ingestion = %target.name, "cannot write status"),
        }
        last_write = Some(tokio::time::Instant::now());
    }
}

/// Resolves when a report marked urgent arrives or the sender is dropped.
async fn wait_for_urgent_or_close(receiver: &mut watch::Receiver<Option<(WorkerReport, bool)>>) {
    loop {
        if receiver.changed().await.is_err() {
            return;
        }
        if receiver
            .borrow()
            .as_ref()
            .is_some_and(|(_, urgent)| *urgent)
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, Request, Response};
    use kube::client::Body;
    use tributary_crds::SourceProgress;

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    fn target() -> StatusTarget {
        StatusTarget {
            namespace: "iot".into(),
            name: "sensors".into(),
            pod: "sensors-7d9-abcde".into(),
        }
    }

    fn progress(batch_id: i64, behind: i64) -> StreamingQueryProgress {
        StreamingQueryProgress {
            id: "q-1".into(),
            run_id: "r-1".into(),
            timestamp: "2026-11-24T04:00:00.000Z".into(),
            batch_id,
            num_input_rows: 100,
            processed_rows_per_second: Some(2500.0),
            sources: vec![SourceProgress {
                description: "KafkaV2[Subscribe[sensor-readings]]".into(),
                num_input_rows: 100,
                offsets_behind_latest: Some(behind),
                ..SourceProgress::default()
            }],
            ..StreamingQueryProgress::default()
        }
    }

    fn report(batch_id: i64) -> WorkerReport {
        WorkerReport {
            query_id: Some("q-1".into()),
            progress: Some(progress(batch_id, 7)),
            partitions: vec!["sensor-readings-0".into()],
            lag: None,
            ..WorkerReport::default()
        }
    }

    /// The next request: checks the path and the apply parameters, answers 200, returns the body.
    async fn next_apply(handle: &mut Handle) -> Value {
        let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
            .await
            .expect("a status write within 5 s")
            .expect("the client is alive");
        assert_eq!(request.method(), Method::PATCH);
        assert_eq!(
            request.uri().path(),
            "/apis/tributary.dev/v1alpha1/namespaces/iot/streamingingestions/sensors/status"
        );
        let query = request.uri().query().unwrap_or_default().to_string();
        assert!(
            query.contains("fieldManager=tributary-worker-sensors-7d9-abcde"),
            "{query}"
        );
        assert!(query.contains("force=true"), "{query}");
        assert_eq!(
            request.headers().get("content-type").map(|v| v.as_bytes()),
            Some(&b"application/apply-patch+yaml"[..])
        );
        let bytes = http_body_util::BodyExt::collect(request.into_body())
            .await
            .expect("body")
            .to_bytes();
        let body: Value = serde_json::from_slice(&bytes).expect("json body");
        send.send_response(
            Response::builder()
                .status(200)
                .body(Body::from(serde_json::to_vec(&body).expect("json")))
                .expect("response"),
        );
        body
    }

    #[test]
    fn target_comes_from_the_pod_environment_only_when_asked() {
        fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
            move |key: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.to_string())
            }
        }
        let full = [
            (pod::ENV_REPORT_STATUS, "true"),
            (pod::ENV_INGESTION_NAMESPACE, "iot"),
            (pod::ENV_INGESTION_NAME, "sensors"),
            (pod::ENV_POD_NAME, "sensors-7d9-abcde"),
        ];
        assert_eq!(StatusTarget::from_env(env(&full)), Some(target()));
        assert_eq!(
            StatusTarget::from_env(env(&full[1..])),
            None,
            "off unless asked"
        );
        assert_eq!(StatusTarget::from_env(env(&full[..3])), None, "no pod name");
    }

    #[tokio::test]
    async fn an_https_kube_client_builds_beside_deltalake() {
        // Two rustls providers are linked into this binary; without the process-wide choice
        // main makes, building an HTTPS client panics.
        crate::install_crypto_provider();
        let config = kube::Config::new("https://127.0.0.1:6443".parse().expect("url"));
        kube::Client::try_from(config).expect("the client builds");
    }

    #[test]
    fn the_patch_holds_only_the_workers_fields() {
        let body = status_patch(&target(), &report(4));
        assert_eq!(body["kind"], "StreamingIngestion");
        assert!(body.get("spec").is_none());
        let status = body["status"].as_object().expect("status");
        let mut keys: Vec<&str> = status.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["lastProgress", "queryId", "workers"]);
        assert_eq!(
            body["status"]["workers"],
            json!([{
                "name": "sensors-7d9-abcde",
                "partitions": ["sensor-readings-0"],
                "lag": 7,
                "processedRowsPerSecond": 2500.0,
                "batchId": 4,
                "timestamp": "2026-11-24T04:00:00.000Z"
            }])
        );
        assert_eq!(body["status"]["lastProgress"]["batchId"], 4);
    }

    #[test]
    fn a_failure_is_reported_in_the_workers_entry() {
        let failed = WorkerReport {
            error: Some("decode sensor-readings-0 at offset 41: expected value".into()),
            ..report(5)
        };
        let body = status_patch(&target(), &failed);
        assert_eq!(
            body["status"]["workers"][0]["error"],
            "decode sensor-readings-0 at offset 41: expected value"
        );
        assert!(body["status"]["workers"][0].get("errorReason").is_none());
    }

    #[test]
    fn an_applied_reset_and_the_last_upkeep_runs_are_in_the_workers_entry() {
        let with_facts = WorkerReport {
            reset: Some(tributary_crds::AppliedReset {
                id: "replay-1".into(),
                applied_at: "2026-11-30T12:00:00+00:00".into(),
                delta_version: Some(12),
            }),
            last_vacuum: Some(MaintenanceRun {
                time: "2026-11-30T13:00:00+00:00".into(),
                files_removed: 31,
                files_added: None,
            }),
            ..report(5)
        };
        let entry = &status_patch(&target(), &with_facts)["status"]["workers"][0];
        assert_eq!(
            entry["reset"],
            serde_json::json!({"id": "replay-1", "appliedAt": "2026-11-30T12:00:00+00:00", "deltaVersion": 12})
        );
        assert_eq!(entry["lastVacuum"]["filesRemoved"], 31);
        assert!(entry.get("lastCompaction").is_none());
    }

    #[tokio::test]
    async fn writes_are_throttled_to_the_latest_report_and_flushed_at_close() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let reporter = StatusReporter::start(client, target(), Duration::from_millis(400));

        reporter.report(report(1));
        let first = next_apply(&mut handle).await;
        assert_eq!(
            first["status"]["lastProgress"]["batchId"], 1,
            "the first report goes at once"
        );

        // Three reports inside one interval: one write, of the newest.
        for batch in 2..=4 {
            reporter.report(report(batch));
        }
        let throttled = next_apply(&mut handle).await;
        assert_eq!(throttled["status"]["lastProgress"]["batchId"], 4);

        // Nothing else is pending: no write until something new arrives.
        assert!(
            tokio::time::timeout(Duration::from_millis(600), handle.next_request())
                .await
                .is_err(),
            "no write without a new report"
        );

        // The last report is written at close, without waiting for the interval.
        reporter.report(report(5));
        let closing = tokio::spawn(reporter.close(Duration::from_secs(5)));
        let last = next_apply(&mut handle).await;
        assert_eq!(last["status"]["lastProgress"]["batchId"], 5);
        closing.await.expect("close finishes");
    }

    #[tokio::test]
    async fn a_failure_skips_the_throttle() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let reporter = StatusReporter::start(client, target(), Duration::from_secs(3600));
        reporter.report(report(1));
        next_apply(&mut handle).await;
        reporter.report(report(2));
        reporter.report_failure(
            "Unity Catalog at https://uc: cannot look up table a.b.c: HTTP 401".into(),
            Some("CatalogUnauthorized"),
        );
        let failure = next_apply(&mut handle).await;
        assert_eq!(
            failure["status"]["workers"][0]["error"],
            "Unity Catalog at https://uc: cannot look up table a.b.c: HTTP 401"
        );
        assert_eq!(
            failure["status"]["workers"][0]["errorReason"],
            "CatalogUnauthorized"
        );
        assert_eq!(
            failure["status"]["lastProgress"]["batchId"], 2,
            "the failure keeps the last progress"
        );
        reporter.close(Duration::from_secs(5)).await;
    }
}
