//! `Pipeline::open`: the set-up stages, in order. The broker is checked before anything is
//! claimed or created; the checkpoint is claimed before the tables are opened; the offsets a
//! run reads are fixed before the consumer joins its group.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use deltalake::TableProperty;
use rdkafka::consumer::BaseConsumer;
use tokio::runtime::Handle;
use tracing::info;
use tributary_crds::{
    AppliedReset, MetadataColumn, OnError, StreamingIngestion, StreamingIngestionSpec, TriggerKind,
};

use super::shape::Shaping;
use super::watch::Watch;
use super::{Pipeline, RunSummary};
use crate::batch::{MinOffsets, ReadAhead, Schedule, TopicNames};
use crate::checkpoint::{self, AppliedResetRecord, AvailableNowRun, CheckpointDir, OwnerClaim};
use crate::decode::Decoder;
use crate::error::{Error, Result};
use crate::outputs::Telemetry;
use crate::partition::{OffsetMap, TopicPartition, from_partition_offsets, to_partition_offsets};
use crate::record::Payloads;
use crate::secrets;
use crate::sink::{
    DeadLetterTable, DeltaSink, Maintenance, OpenOptions, ResetCommit, ResetOutcome, SharedTable,
    TxnIds, VacuumPolicy, catalog, dead_letter_schema,
};
use crate::source::{
    self, Fetched, RunTargets, Source, SourceConfig, SparkCheckpoint, SparkTakeover, StartResolver,
};
use crate::tuning::Tuning;
use deltalake::arrow::datatypes::SchemaRef;

/// Bytes read ahead over all partitions before the partition being read is paused.
const READ_AHEAD_BYTES: usize = 16 << 20;
/// Delta checkpoint interval of tables the worker creates, unless the spec sets one.
const DEFAULT_DELTA_CHECKPOINT_INTERVAL: i32 = 10;

/// Which ingestion this is.
pub(super) struct Identity {
    namespace: String,
    name: String,
}

impl Identity {
    pub(super) fn of(ingestion: &StreamingIngestion) -> Identity {
        Identity {
            namespace: ingestion
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: ingestion
                .metadata
                .name
                .clone()
                .unwrap_or_else(|| "ingestion".into()),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The tables a batch is committed to.
struct Tables {
    data: DeltaSink,
    maintenance: Option<Maintenance>,
    dead_letter: Option<DeltaSink>,
}

impl Pipeline {
    /// Opens every stage of one ingestion; nothing is read yet.
    pub fn open(
        ingestion: &StreamingIngestion,
        bootstrap_override: Option<&str>,
        tuning: &Tuning,
        stop: Arc<AtomicBool>,
        runtime: Handle,
        telemetry: Telemetry,
        takeover: Option<&SparkTakeover>,
    ) -> Result<Pipeline> {
        let identity = Identity::of(ingestion);
        let spec = &ingestion.spec;
        let kind = spec.trigger_kind().map_err(Error::Unsupported)?;
        let source = check_source(ingestion, bootstrap_override, kind)?;
        // The checkpoint's storage options default to the sink's, so both are resolved first.
        let storage_options = secrets::storage_options(
            &spec.sink.delta.storage_options,
            &spec.sink.delta.secret_storage_options,
            "spec.sink.delta",
        )?;
        let metadata_columns = spec.metadata_columns();
        let keep_headers = metadata_columns.contains(&MetadataColumn::Headers);
        let decoder = Decoder::new(&spec.format, &metadata_columns)?;
        let shaping = Shaping::new(spec, &decoder, &runtime)?;
        // A table named through Unity Catalog is resolved (and registered when absent) before
        // the checkpoint is claimed, so a refused token or an unknown table leaves nothing.
        let sink_table = runtime.block_on(catalog::locate_sink(
            &spec.sink.delta,
            shaping.table_schema(),
            &storage_options,
            &format!("Written by Tributary ingestion {identity}"),
        ))?;
        let table_uri = sink_table.location.clone();
        let sink_description = format!("DeltaSink[{}]", sink_table.description);
        let table_options = sink_table.storage_options.clone();
        let renewal = sink_table.catalog.and_then(|(client, resolved)| {
            catalog::Renewal::of(client, &resolved, storage_options.clone())
        });
        let checkpoint = claim_checkpoint(spec, &storage_options, &identity, &runtime)?;
        let query_id = runtime
            .block_on(checkpoint.metadata(spec.checkpoint.query_id.as_deref()))?
            .id;
        let run_id = uuid::Uuid::new_v4().to_string();
        info!(query_id, run_id, "query identity");

        let tables = open_tables(
            spec,
            &table_uri,
            &table_options,
            &storage_options,
            &decoder,
            shaping.table_schema(),
            &identity,
            kind,
            tuning,
            &runtime,
        )?;
        let ids = TxnIds::for_query(&query_id);
        let table = SharedTable::new(tables.data, runtime.clone(), ids.clone());
        let mut dead_letter = tables
            .dead_letter
            .map(|sink| DeadLetterTable::new(sink, ids, runtime.clone(), query_id.clone()));

        let metadata_client = source::metadata_client(&source)?;
        let brokers = source::BrokerCheck::new(&source)?;
        let initial = initial_offsets(
            &metadata_client,
            &source,
            &checkpoint,
            &table,
            &table_uri,
            &runtime,
            takeover,
        )?;
        let reset_now = apply_reset(
            spec,
            &identity,
            tuning,
            &metadata_client,
            &source,
            (&table, &checkpoint, &runtime),
            dead_letter.as_mut(),
            &query_id,
            &telemetry,
        )?;
        let targets = run_targets(
            kind,
            &metadata_client,
            &source,
            &checkpoint,
            &run_id,
            &runtime,
            reset_now,
        )?;
        let source = start_source(
            source,
            metadata_client,
            initial,
            &table,
            targets.as_ref(),
            tuning.group_instance_id.as_deref(),
        )?;
        let fail_on_data_loss = source.config().read.fail_on_data_loss();
        let watch = Watch::start(
            brokers,
            table.clone(),
            runtime.clone(),
            telemetry.metrics.clone(),
        );
        let committer = super::committer::Committer::start_thread(table.clone(), dead_letter)?;

        Ok(Pipeline {
            name: identity.to_string(),
            query_id: query_id.clone(),
            run_id,
            source,
            table,
            sink_description,
            renewal,
            committer,
            in_flight: None,
            next_batch_id: 0,
            maintenance: tables.maintenance,
            decoder,
            shaping,
            checkpoint,
            runtime,
            schedule: Schedule::new(kind),
            targets,
            max_offsets_per_trigger: spec
                .source
                .read_options()
                .and_then(|r| r.max_offsets_per_trigger),
            min_offsets: min_offsets(spec, kind)?,
            read_ahead: ReadAhead::new(tuning.read_ahead_records, READ_AHEAD_BYTES),
            topic_names: TopicNames::default(),
            payloads: Payloads::default(),
            fetched: Fetched::default(),
            keep_headers,
            spare_records: Vec::new(),
            max_batch_bytes: tuning.max_batch_bytes,
            stop,
            offsets_lost: false,
            topic_missing: false,
            fail_on_data_loss,
            previous_start: None,
            telemetry,
            _watch: watch,
            summary: RunSummary {
                query_id,
                table: table_uri,
                ..RunSummary::default()
            },
        })
    }
}

/// minOffsetsPerTrigger with maxTriggerDelay, for a continuous query (a run to completion
/// reads up to its end in batches of maxOffsetsPerTrigger, as Spark ignores the minimum for
/// availableNow).
fn min_offsets(spec: &StreamingIngestionSpec, kind: TriggerKind) -> Result<Option<MinOffsets>> {
    let Some(read) = spec.source.read_options() else {
        return Ok(None);
    };
    let Some(min) = read.min_offsets_per_trigger else {
        return Ok(None);
    };
    if kind.runs_to_completion() {
        info!("minOffsetsPerTrigger does not apply to a run to completion");
        return Ok(None);
    }
    let delay = read
        .max_trigger_delay()
        .map_err(|e| Error::Unsupported(format!("maxTriggerDelay: {e}")))?;
    Ok(Some(MinOffsets::new(min, delay)))
}

/// Resolves the source's settings and checks the brokers: refused credentials, an untrusted
/// certificate or an unreachable broker stop the worker here, before the checkpoint is claimed
/// or the table created for a query that cannot read.
fn check_source(
    ingestion: &StreamingIngestion,
    bootstrap_override: Option<&str>,
    kind: TriggerKind,
) -> Result<SourceConfig> {
    let source = SourceConfig::from_ingestion(ingestion, bootstrap_override)?;
    info!(bootstrap = %source.bootstrap, group = %source.group_id, options = %source.describe_options(), trigger = %Schedule::describe(kind), "starting");
    source::probe(&source)?;
    Ok(source)
}

/// Opens the checkpoint location and claims it for this ingestion.
fn claim_checkpoint(
    spec: &StreamingIngestionSpec,
    sink_storage_options: &HashMap<String, String>,
    identity: &Identity,
    runtime: &Handle,
) -> Result<CheckpointDir> {
    runtime.block_on(CheckpointDir::open(
        &spec.checkpoint.location,
        &checkpoint::storage_options(&spec.checkpoint, sink_storage_options)?,
        &OwnerClaim {
            namespace: identity.namespace.clone(),
            name: identity.name.clone(),
        },
    ))
}

/// Opens (creating) the data table, a second handle on it for background compaction, and the
/// dead-letter table when `onError: deadLetter` (with the sink's own storage options: vended
/// credentials are for the data table only).
#[allow(clippy::too_many_arguments)]
fn open_tables(
    spec: &StreamingIngestionSpec,
    table_uri: &str,
    table_options: &HashMap<String, String>,
    storage_options: &HashMap<String, String>,
    decoder: &Decoder,
    table_schema: SchemaRef,
    identity: &Identity,
    kind: TriggerKind,
    tuning: &Tuning,
    runtime: &Handle,
) -> Result<Tables> {
    let delta = &spec.sink.delta;
    let checkpoint_interval = delta
        .checkpoint_interval
        .unwrap_or(DEFAULT_DELTA_CHECKPOINT_INTERVAL);
    let description = format!("Written by Tributary ingestion {identity}");
    let properties = table_properties(delta);
    let open_data = || {
        runtime.block_on(DeltaSink::open(OpenOptions {
            uri: table_uri,
            storage_options: table_options.clone(),
            schema: table_schema.clone(),
            partition_by: delta.partition_by.clone(),
            checkpoint_interval,
            target_file_size: delta.target_file_size.map(|s| s as u64),
            parquet: tuning.parquet,
            description: &description,
            merge_schema: delta.merge_schema.unwrap_or(false),
            properties: properties.clone(),
        }))
    };
    let data = open_data()?;
    // Queries that run for long compact their small files in the background, on a second
    // handle (a long availableNow backfill writes one ~1 MiB file per batch); once is one batch.
    let vacuum = delta.vacuum.as_ref().map(|vacuum| VacuumPolicy {
        interval: tuning.vacuum_interval(vacuum.interval()),
        retain_hours: vacuum.retain_hours(),
        enforce_retention: vacuum.retention_duration_check(),
    });
    let upkeep = tuning.compaction_interval().is_some() || vacuum.is_some();
    let maintenance = if kind != TriggerKind::Once && upkeep {
        Maintenance::new(open_data()?, tuning, vacuum)?
    } else {
        None
    };
    let dead_letter_table = spec.format.json().and_then(|f| f.dead_letter.as_ref());
    let dead_letter = match (decoder.on_error(), dead_letter_table) {
        (OnError::DeadLetter, Some(dead_letter)) => {
            Some(runtime.block_on(DeltaSink::open_or_create(
                &dead_letter.uri,
                storage_options.clone(),
                dead_letter_schema(),
                Vec::new(),
                checkpoint_interval,
                None,
                &format!("Dead letters of Tributary ingestion {identity}"),
            ))?)
        }
        (OnError::DeadLetter, None) => {
            return Err(Error::Unsupported(
                "onError: deadLetter needs format.json.deadLetter.uri".into(),
            ));
        }
        _ => None,
    };
    Ok(Tables {
        data,
        maintenance,
        dead_letter,
    })
}

/// The table properties spec.sink.delta sets explicitly (a default checkpoint interval is set
/// on new tables only, never over a value someone chose for an existing table).
fn table_properties(delta: &tributary_crds::DeltaSink) -> Vec<(String, String)> {
    let name = |property: TableProperty| property.as_ref().to_string();
    let mut properties = Vec::new();
    if let Some(interval) = delta.checkpoint_interval {
        properties.push((
            name(TableProperty::CheckpointInterval),
            interval.to_string(),
        ));
    }
    if let Some(duration) = &delta.log_retention_duration {
        properties.push((name(TableProperty::LogRetentionDuration), duration.clone()));
    }
    if let Some(duration) = &delta.deleted_file_retention_duration {
        properties.push((
            name(TableProperty::DeletedFileRetentionDuration),
            duration.clone(),
        ));
    }
    properties
}

/// The query's starting offsets: those the checkpoint recorded when the query was new, or
/// resolved now and recorded (the first writer wins, and every later start reads its numbers).
/// A query starting for the first time refuses a table in which another Tributary query already
/// recorded offsets of the same partitions: its checkpoint is that query's lost or replaced one,
/// and reading again from the starting offsets would write every record twice. A new query
/// taking over from Spark starts where the Spark query's last batch in the table ended; once
/// recorded, the Spark checkpoint is never read again.
fn initial_offsets(
    client: &BaseConsumer,
    source: &SourceConfig,
    checkpoint: &CheckpointDir,
    table: &SharedTable,
    table_uri: &str,
    runtime: &Handle,
    takeover: Option<&SparkTakeover>,
) -> Result<OffsetMap> {
    if let Some(initial) = runtime.block_on(checkpoint.initial_offsets())? {
        if let Some(takeover) = takeover {
            info!(spark_checkpoint = %takeover.checkpoint, "the checkpoint already holds this query's starting offsets: the Spark checkpoint is not read again");
        }
        return Ok(initial);
    }
    let tps = source::subscription_partitions(client, &source.subscription, &source.bootstrap)?;
    if let Some((other, offsets)) = table.offsets_of_other_queries(&tps)? {
        return Err(Error::TableWrittenByAnotherQuery {
            table: table_uri.to_string(),
            other,
            offsets: offsets
                .iter()
                .map(|(tp, offset)| format!("{tp}: {offset}"))
                .collect::<Vec<_>>()
                .join(", "),
            checkpoint: checkpoint.location().to_string(),
        });
    }
    let resolved = match takeover {
        Some(takeover) => spark_handover(&tps, takeover, checkpoint, table, runtime)?,
        None => source::resolve_starting_offsets(client, source, tps)?,
    };
    runtime.block_on(checkpoint.save_initial_offsets(&resolved))
}

/// The starting offsets of a takeover: the end offsets of the Spark query's last batch that the
/// table holds (its txn version for the Spark query id), for the partitions `tps` read now. A
/// Spark checkpoint in an object store is read with this query's checkpoint credentials.
fn spark_handover(
    tps: &[TopicPartition],
    takeover: &SparkTakeover,
    checkpoint: &CheckpointDir,
    table: &SharedTable,
    runtime: &Handle,
) -> Result<OffsetMap> {
    let spark = runtime.block_on(SparkCheckpoint::open(
        &takeover.checkpoint,
        checkpoint.storage_options(),
    ))?;
    runtime.block_on(spark.check_stopped(takeover.quiet, std::time::SystemTime::now()))?;
    let batch = table.txn_version(spark.query_id())?;
    let handover = runtime.block_on(spark.handover(batch))?;
    let offsets = handover.start_offsets(spark.location(), tps)?;
    info!(
        spark_query_id = handover.query_id,
        spark_batch = ?handover.batch,
        offsets = ?to_partition_offsets(&offsets),
        "taking over from the Spark query"
    );
    Ok(offsets)
}

/// Applies spec.reset when the table does not record it yet: where each partition moves is
/// read from the brokers now, then the dead-letter table's offsets move (when there is one),
/// then the data table's, each in one commit carrying the reset's id, so that a worker killed
/// at any point applies the rest at its next start and never the same reset twice. Runs before
/// the consumer takes any partition, so every partition starts where the table then says.
/// The checkpoint keeps a copy of the record (the table's marker could expire under
/// delta.setTransactionRetentionDuration); either one means applied. Returns whether this
/// worker applied it now.
#[allow(clippy::too_many_arguments)]
fn apply_reset(
    spec: &StreamingIngestionSpec,
    identity: &Identity,
    tuning: &Tuning,
    client: &BaseConsumer,
    source: &SourceConfig,
    (table, checkpoint, runtime): (&SharedTable, &CheckpointDir, &Handle),
    dead_letter: Option<&mut DeadLetterTable>,
    query_id: &str,
    telemetry: &Telemetry,
) -> Result<bool> {
    let Some(reset) = &spec.reset else {
        return Ok(false);
    };
    let applied = |at_ms: i64, version: Option<i64>| AppliedReset {
        id: reset.id.clone(),
        applied_at: chrono::DateTime::from_timestamp_millis(at_ms)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default(),
        delta_version: version,
    };
    let record = |at_ms: i64| {
        runtime.block_on(checkpoint.record_reset(&AppliedResetRecord {
            id: reset.id.clone(),
            applied_at_ms: at_ms,
        }))
    };
    if let Some(recorded) = runtime.block_on(checkpoint.applied_reset(&reset.id))? {
        info!(reset = %reset.id, "the checkpoint records this reset as applied: it is not applied again");
        telemetry.reset_applied(query_id, applied(recorded.applied_at_ms, None));
        return Ok(false);
    }
    if let Some(at_ms) = table.reset_applied_at(&reset.id)? {
        info!(reset = %reset.id, "the table already records this reset: it is not applied again");
        record(at_ms)?;
        telemetry.reset_applied(query_id, applied(at_ms, None));
        return Ok(false);
    }
    let target = reset.target().map_err(|reason| Error::Reset {
        id: reset.id.clone(),
        reason,
    })?;
    info!(reset = %reset.id, to = %reset.describe_target(), "applying the offset reset");
    let offsets = source::reset_offsets(client, source, &reset.id, &target)?;
    let commit = ResetCommit {
        id: reset.id.clone(),
        offsets,
        to: reset.describe_target(),
        ingestion: identity.to_string(),
        worker: tuning
            .group_instance_id
            .clone()
            .unwrap_or_else(|| "a standalone worker".to_string()),
        at_ms: chrono::Utc::now().timestamp_millis(),
    };
    info!(reset = %commit.id, offsets = ?to_partition_offsets(&commit.offsets), "the reset moves these partitions");
    if let Some(dead_letter) = dead_letter {
        dead_letter.apply_reset(&commit)?;
    }
    match table.apply_reset(&commit)? {
        ResetOutcome::AlreadyApplied { at_ms } => {
            info!(reset = %commit.id, "another worker applied this reset first");
            record(at_ms)?;
            telemetry.reset_applied(query_id, applied(at_ms, None));
            Ok(false)
        }
        ResetOutcome::Applied { at_ms, version } => {
            info!(reset = %commit.id, version, "offset reset applied");
            record(at_ms)?;
            telemetry.reset_applied(query_id, applied(at_ms, Some(version)));
            Ok(true)
        }
    }
}

/// The end offsets of a run to completion: availableNow's (an unfinished earlier run's, or the
/// latest now, recorded before reading), or once's (the latest now); None for a continuous
/// query. After a reset an unfinished run's targets are planned again: they were chosen for
/// the offsets before it.
fn run_targets(
    kind: TriggerKind,
    client: &BaseConsumer,
    source: &SourceConfig,
    checkpoint: &CheckpointDir,
    run_id: &str,
    runtime: &Handle,
    reset_now: bool,
) -> Result<Option<OffsetMap>> {
    match kind {
        TriggerKind::AvailableNow => {
            let unfinished = runtime
                .block_on(checkpoint.available_now())?
                .filter(|run| !run.finished && !reset_now)
                .map(|run| from_partition_offsets(&run.targets));
            let targets = source::available_now_targets(client, source, unfinished)?;
            if let RunTargets::Planned(planned) = &targets {
                runtime.block_on(checkpoint.save_available_now(&AvailableNowRun {
                    run_id: run_id.to_string(),
                    planned_at: chrono::Utc::now().to_rfc3339(),
                    targets: to_partition_offsets(planned),
                    finished: false,
                }))?;
            }
            Ok(Some(targets.into_offsets()))
        }
        TriggerKind::Once => Ok(Some(source::run_end_offsets(client, source)?)),
        TriggerKind::Default | TriggerKind::ProcessingTime(_) => Ok(None),
    }
}

/// Starts the consumer, with the table as the judge of where each partition starts. A run to
/// completion reads known partitions with a single worker (validation keeps replicas at 1), so
/// it assigns them directly instead of joining the group.
fn start_source(
    source: SourceConfig,
    metadata_client: BaseConsumer,
    initial: OffsetMap,
    table: &SharedTable,
    targets: Option<&OffsetMap>,
    group_instance_id: Option<&str>,
) -> Result<Source> {
    let offsets_client = Arc::new(metadata_client);
    let resolver = StartResolver {
        table_offsets: Box::new({
            let table = table.clone();
            move |tps: &[TopicPartition]| table.committed_offsets(tps)
        }),
        offsets_client: Arc::downgrade(&offsets_client),
        initial,
        fail_on_data_loss: source.read.fail_on_data_loss(),
        bootstrap: source.bootstrap.clone(),
    };
    let fixed: Option<Vec<TopicPartition>> = targets.map(|t| t.keys().cloned().collect());
    Source::start(
        source,
        resolver,
        offsets_client,
        fixed.as_deref(),
        group_instance_id,
    )
}
