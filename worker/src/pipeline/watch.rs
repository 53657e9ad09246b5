//! Readiness beyond the loop's heartbeat: a thread that asks, every few seconds, whether the
//! brokers answer and the table's storage holds the table, and keeps /readyz red (with the
//! reason) while either does not. The pipeline itself keeps retrying meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tracing::warn;

use crate::outputs::metrics::Metrics;
use crate::sink::SharedTable;
use crate::source::BrokerCheck;

/// How often the brokers and the table are looked at.
const CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// How long one check waits for an answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The watching thread; it stops when this is dropped (within a check).
pub(super) struct Watch {
    stop: Arc<AtomicBool>,
}

impl Watch {
    pub(super) fn start(
        brokers: BrokerCheck,
        table: SharedTable,
        runtime: Handle,
        metrics: Arc<Metrics>,
    ) -> Option<Watch> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let started = std::thread::Builder::new()
            .name("reachability".into())
            .spawn(move || {
                while !stopping.load(Ordering::SeqCst) {
                    let began = Instant::now();
                    metrics.set_reachability("brokers", brokers.check(CHECK_TIMEOUT));
                    let table_outcome = match table.reach_probe() {
                        Ok(probe) => runtime
                            .block_on(async {
                                tokio::time::timeout(CHECK_TIMEOUT, probe.check()).await
                            })
                            .unwrap_or_else(|_| {
                                Err(format!(
                                    "the Delta table's storage did not answer within {} s",
                                    CHECK_TIMEOUT.as_secs()
                                ))
                            }),
                        Err(error) => Err(error.to_string()),
                    };
                    metrics.set_reachability("table", table_outcome);
                    let rest = CHECK_INTERVAL.saturating_sub(began.elapsed());
                    let until = Instant::now() + rest;
                    while Instant::now() < until && !stopping.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            });
        match started {
            Ok(_) => Some(Watch { stop }),
            Err(error) => {
                warn!(%error, "cannot start the reachability checks: /readyz follows the pipeline's turns only");
                None
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
