//! The publish stage: a committed batch's progress record (checkpoint and stdout), metrics,
//! status, and the run's totals.

use std::collections::BTreeMap;

use super::Pipeline;
use super::commit::InFlight;
use super::committer::Committed;
use crate::error::Result;
use crate::outputs::metrics::BatchMetrics;
use crate::outputs::progress::{self, BatchFacts};

impl Pipeline {
    /// A landed batch's progress record: `triggerExecution` runs from its start to its
    /// landing, overlapping the next batch's read (the commit runs beside it).
    pub(super) fn publish(&mut self, batch: &InFlight, committed: &Committed) -> Result<()> {
        let (batch_id, started) = (batch.batch_id, batch.started);
        let total_ms = started.elapsed().as_millis() as i64;
        let input_rows = batch.input_rows;
        let output_rows = batch.output_rows;
        let rescued_rows = batch.rescued_rows;
        let partitions = batch.plan.partitions();
        let facts = BatchFacts {
            query_id: self.query_id.clone(),
            run_id: self.run_id.clone(),
            name: self.name.clone(),
            batch_id,
            source_description: self.source.config().description.clone(),
            sink_description: self.sink_description.clone(),
            start: partitions
                .iter()
                .map(|p| (p.tp.clone(), p.start.offset))
                .collect(),
            end: partitions
                .iter()
                .map(|p| (p.tp.clone(), p.cursor))
                .collect(),
            latest: partitions
                .iter()
                .map(|p| (p.tp.clone(), p.latest.max(p.cursor)))
                .collect(),
            input_rows,
            output_rows,
            rescued_rows,
            dead_letter_rows: committed.dead_letter_rows,
            delta_version: Some(committed.version),
            duration_ms: BTreeMap::from_iter(
                [
                    ("latestOffset", Some(batch.latest_offset_ms)),
                    ("fetch", Some(batch.fetch_ms)),
                    ("decode", Some(batch.decode_ms)),
                    ("deadLetter", committed.dead_letter_ms),
                    ("writeParquet", Some(committed.write_ms)),
                    ("commit", Some(committed.commit_ms)),
                    ("triggerExecution", Some(total_ms)),
                ]
                .into_iter()
                .filter_map(|(phase, ms)| Some((phase.to_string(), ms?))),
            ),
            since_previous_s: self
                .previous_start
                .map(|p| started.duration_since(p).as_secs_f64()),
        };
        self.previous_start = Some(started);
        let progress = progress::build(facts);
        self.runtime
            .block_on(self.checkpoint.log_progress(&progress))?;
        progress::emit(&progress);
        self.telemetry.batch_committed(
            &progress,
            &BatchMetrics {
                records: input_rows as u64,
                bytes: batch.input_bytes,
                rows_written: output_rows as u64,
                rescued_rows: rescued_rows as u64,
                dead_letter_rows: committed.dead_letter_rows as u64,
                duration: started.elapsed(),
                delta_version: Some(committed.version),
                commit_conflicts: committed.retries,
            },
            &self.source.assigned_partitions(),
        );
        let summary = &mut self.summary;
        summary.batches += 1;
        summary.input_rows += input_rows;
        summary.output_rows += output_rows;
        summary.rescued_rows += rescued_rows;
        summary.dead_letter_rows += committed.dead_letter_rows;
        summary.files += committed.files;
        summary.delta_version = Some(committed.version);
        Ok(())
    }
}
