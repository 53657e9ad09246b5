//! The workers' own `status.workers` entries: which belong to pods that are gone, and what the
//! live ones add up to.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use tributary_crds::{StreamingIngestion, WorkerStatus};

fn live_pods(pods: &[Pod]) -> BTreeSet<&str> {
    pods.iter()
        .filter_map(|pod| pod.metadata.name.as_deref())
        .collect()
}

/// Entries of `status.workers` whose pod no longer exists, as (index, pod name), highest index
/// first so that removing them in order keeps the other indices valid. Each worker owns its
/// entry under its own field manager, so nobody else would ever remove it.
pub fn stale_worker_entries(ingestion: &StreamingIngestion, pods: &[Pod]) -> Vec<(usize, String)> {
    let live = live_pods(pods);
    let mut stale: Vec<(usize, String)> = ingestion
        .status
        .iter()
        .flat_map(|status| status.workers.iter().enumerate())
        .filter(|(_, worker)| !live.contains(worker.name.as_str()))
        .map(|(index, worker)| (index, worker.name.clone()))
        .collect();
    stale.reverse();
    stale
}

/// The JSON patch that removes those entries, each guarded by a test of its name: if a worker
/// rewrote the list in between, the API server refuses the whole patch instead of removing
/// the wrong entry.
pub fn prune_workers_patch(stale: &[(usize, String)]) -> json_patch::Patch {
    use json_patch::jsonptr::PointerBuf;
    use json_patch::{PatchOperation, RemoveOperation, TestOperation};
    let operations = stale
        .iter()
        .flat_map(|(index, name)| {
            let entry = index.to_string();
            [
                PatchOperation::Test(TestOperation {
                    path: PointerBuf::from_tokens(["status", "workers", entry.as_str(), "name"]),
                    value: serde_json::Value::String(name.clone()),
                }),
                PatchOperation::Remove(RemoveOperation {
                    path: PointerBuf::from_tokens(["status", "workers", entry.as_str()]),
                }),
            ]
        })
        .collect();
    json_patch::Patch(operations)
}

/// The workers' figures summed over the ingestion.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Totals {
    pub lag: Option<i64>,
    pub processed_rows_per_second: Option<f64>,
}

/// The entries of pods that exist now: a rolled or deleted pod's entry stays in the status
/// until it is pruned (the worker owns it) but speaks for nobody.
pub fn live_entries<'a>(
    entries: &'a [WorkerStatus],
    pods: &[Pod],
) -> impl Iterator<Item = &'a WorkerStatus> {
    let live: BTreeSet<String> = live_pods(pods).into_iter().map(str::to_string).collect();
    entries
        .iter()
        .filter(move |w| live.contains(w.name.as_str()))
}

/// Sums the entries of pods that exist now, so a gone pod's entry does not count twice.
pub fn totals(entries: &[WorkerStatus], pods: &[Pod]) -> Totals {
    let entries: Vec<&WorkerStatus> = live_entries(entries, pods).collect();
    let lags: Vec<i64> = entries.iter().filter_map(|w| w.lag).collect();
    let rates: Vec<f64> = entries
        .iter()
        .filter_map(|w| w.processed_rows_per_second)
        .collect();
    Totals {
        lag: (!lags.is_empty()).then(|| lags.iter().sum()),
        processed_rows_per_second: (!rates.is_empty()).then(|| one_decimal(rates.iter().sum())),
    }
}

/// A rate as people read it. kubectl prints a number column as the float it holds, so the sum
/// is rounded here (to 0.1 rows/s) rather than shown as 21276.59574468085; the workers' own
/// entries and lastProgress keep Spark's unrounded figures.
fn one_decimal(rate: f64) -> f64 {
    (rate * 10.0).round() / 10.0
}
