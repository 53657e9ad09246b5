//! Progress: one StreamingQueryProgress (crds::status) per micro-batch, shaped after Spark's.
//! Standalone, each goes to stdout as one JSON line, with a short human line on stderr.

use std::collections::BTreeMap;
use std::io::Write;

use tributary_crds::{SinkProgress, SourceProgress, StreamingQueryProgress};

use crate::partition::{OffsetMap, to_partition_offsets};

/// What one batch did, gathered by the pipeline.
pub struct BatchFacts {
    pub query_id: String,
    pub run_id: String,
    pub name: String,
    pub batch_id: i64,
    pub source_description: String,
    pub sink_description: String,
    pub start: OffsetMap,
    pub end: OffsetMap,
    pub latest: OffsetMap,
    pub input_rows: i64,
    pub output_rows: i64,
    pub rescued_rows: i64,
    pub dead_letter_rows: i64,
    pub delta_version: Option<i64>,
    pub duration_ms: BTreeMap<String, i64>,
    /// Seconds since the previous batch started (for inputRowsPerSecond).
    pub since_previous_s: Option<f64>,
}

pub fn build(facts: BatchFacts) -> StreamingQueryProgress {
    let total_ms = facts
        .duration_ms
        .get("triggerExecution")
        .copied()
        .unwrap_or(0);
    let processed = (total_ms > 0).then(|| facts.input_rows as f64 * 1000.0 / total_ms as f64);
    let input = facts
        .since_previous_s
        .filter(|s| *s > 0.0)
        .map(|s| facts.input_rows as f64 / s);
    let behind: i64 = facts
        .latest
        .iter()
        .map(|(tp, latest)| (latest - facts.end.get(tp).copied().unwrap_or(*latest)).max(0))
        .sum();
    StreamingQueryProgress {
        id: facts.query_id,
        run_id: facts.run_id,
        name: Some(facts.name),
        timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        batch_id: facts.batch_id,
        num_input_rows: facts.input_rows,
        input_rows_per_second: input,
        processed_rows_per_second: processed,
        duration_ms: facts.duration_ms,
        sources: vec![SourceProgress {
            description: facts.source_description,
            start_offset: to_partition_offsets(&facts.start),
            end_offset: to_partition_offsets(&facts.end),
            latest_offset: to_partition_offsets(&facts.latest),
            num_input_rows: facts.input_rows,
            input_rows_per_second: input,
            processed_rows_per_second: processed,
            offsets_behind_latest: Some(behind),
        }],
        sink: Some(SinkProgress {
            description: facts.sink_description,
            num_output_rows: facts.output_rows,
            delta_version: facts.delta_version,
            num_rescued_rows: Some(facts.rescued_rows),
            num_dead_letter_rows: Some(facts.dead_letter_rows),
        }),
    }
}

/// Prints a progress record: JSON on stdout, a human line on stderr.
pub fn emit(progress: &StreamingQueryProgress) {
    if let Ok(json) = serde_json::to_string(progress) {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{json}");
        let _ = stdout.flush();
    }
    let sink = progress.sink.as_ref();
    let behind = progress
        .sources
        .first()
        .and_then(|s| s.offsets_behind_latest)
        .unwrap_or(0);
    eprintln!(
        "batch {}: {} rows in {} ms ({:.0} rows/s), rescued {}, dead-lettered {}, Delta version {}, {} offsets behind latest",
        progress.batch_id,
        progress.num_input_rows,
        progress
            .duration_ms
            .get("triggerExecution")
            .copied()
            .unwrap_or(0),
        progress.processed_rows_per_second.unwrap_or(0.0),
        sink.and_then(|s| s.num_rescued_rows).unwrap_or(0),
        sink.and_then(|s| s.num_dead_letter_rows).unwrap_or(0),
        sink.and_then(|s| s.delta_version)
            .map_or_else(|| "-".to_string(), |v| v.to_string()),
        behind
    );
}
