"""What the Spark suite asks Spark: read Tributary's tables and compare them with what a Spark
user's own pipeline makes of the same Kafka records; run a Delta streaming read; run SQL.

Each `op_NAME(context, request)` answers one request of harness.py with a dict. A check that
finds differences answers {"problems": [...]} (empty when the table is right), so the test can
show every difference at once, each naming the table, the Kafka coordinates and the column.
"""

import json
import threading
import time

from pyspark.sql import Row
from pyspark.sql import functions as F
from pyspark.sql.types import _parse_datatype_string

# At most this many differences are listed per check (the count of all is always given).
MAX_LISTED = 25

METADATA_TYPES = {
    "topic": "string",
    "partition": "int",
    "offset": "bigint",
    "timestamp": "timestamp",
    "timestampType": "int",
    "key": "binary",
    "headers": "array<struct<key:string,value:binary>>",
}


class Context:
    def __init__(self, spark, work_dir):
        self.spark = spark
        self.work_dir = work_dir
        self.streams = {}
        self.ingestions = {}

    def stop(self):
        for stream in self.streams.values():
            stream.query.stop()
        for query in self.ingestions.values():
            query.stop()


def canonical(value):
    """A value Python compares by content: rows and maps as dicts, binary as bytes."""
    if isinstance(value, Row):
        return {k: canonical(v) for k, v in value.asDict().items()}
    if isinstance(value, dict):
        return {canonical(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return value


def coordinates(row):
    return (row["kafka_topic"], row["kafka_partition"], row["kafka_offset"])


def read_expected(spark, path):
    """The records the test produced: topic, partition, offset, key, value (the JSON text) and
    whether the test made the record bad on purpose."""
    schema = "topic string, partition int, offset bigint, key string, value string, bad boolean"
    return spark.read.schema(schema).json(path)


def listed(problems):
    if len(problems) > MAX_LISTED:
        return problems[:MAX_LISTED] + [f"... and {len(problems) - MAX_LISTED} more"]
    return problems


def history(spark, path):
    rows = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").collect()
    return [
        {
            "version": r["version"],
            "operation": r["operation"],
            "operationParameters": dict(r["operationParameters"] or {}),
            "operationMetrics": dict(r["operationMetrics"] or {}),
            "isBlindAppend": r["isBlindAppend"],
            "engineInfo": r["engineInfo"],
        }
        for r in sorted(rows, key=lambda r: r["version"])
    ]


def detail(spark, path):
    r = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").collect()[0]
    return {
        "numFiles": r["numFiles"],
        "partitionColumns": list(r["partitionColumns"]),
        "minReaderVersion": r["minReaderVersion"],
        "minWriterVersion": r["minWriterVersion"],
        "tableFeatures": sorted(r["tableFeatures"] or []),
        "properties": dict(r["properties"] or {}),
    }


def op_check_table(context, request):
    """Reads a table Tributary wrote and compares it, row by row, with Spark's own
    `from_json(value, schema)` of the records produced (the seed pipeline's parse).

    request: name, path, expected (JSON lines of produced records), columns [{name, type}],
    metadata [topic, partition, ...], rescue (bool: the table has _rescued_data)."""
    spark = context.spark
    name, path = request["name"], request["path"]
    columns = request["columns"]
    ddl = ", ".join(f"`{c['name']}` {c['type']}" for c in columns)
    table = spark.read.format("delta").load(path)
    problems = []

    # The table's schema is the declared one, then the metadata columns, then _rescued_data.
    declared = _parse_datatype_string(ddl)
    wanted = [(f.name, f.dataType.simpleString()) for f in declared.fields]
    # Tributary's column names: kafka_<name>, timestampType as kafka_timestamp_type.
    wanted += [
        ("kafka_timestamp_type" if m == "timestampType" else f"kafka_{m}", METADATA_TYPES[m])
        for m in request.get("metadata", [])
    ]
    if request.get("rescue"):
        wanted.append(("_rescued_data", "string"))
    have = [(f.name, f.dataType.simpleString()) for f in table.schema.fields]
    if sorted(have) != sorted(wanted):
        problems.append(f"{name}: Spark sees the schema {have}, expected {wanted}")

    expected = read_expected(spark, request["expected"]).withColumn(
        "data", F.from_json("value", ddl)
    )
    # With onError deadLetter the bad records are in the dead-letter table, not in this one.
    bad_rows_in_table = request.get("bad_rows_in_table", True)
    reference = {}
    for r in expected.collect():
        if r["bad"] and not bad_rows_in_table:
            continue
        reference[(r["topic"], r["partition"], r["offset"])] = r

    try:
        rows = table.collect()
    except Exception as e:  # noqa: BLE001 - name the columns Spark cannot read, then give up
        failing = []
        for field in table.schema.fields:
            try:
                table.select(F.col(f"`{field.name}`")).collect()
            except Exception as column_error:  # noqa: BLE001
                failing.append(f"{field.name}: {str(column_error).splitlines()[0]}")
        problems.append(f"{name}: Spark cannot read the table ({str(e).splitlines()[0]}); columns: {failing}")
        return {"problems": problems, "rows": 0, "history": history(spark, path), "detail": detail(spark, path)}
    seen = {}
    for r in rows:
        key = coordinates(r)
        if key in seen:
            problems.append(f"{name}: {key} appears more than once")
        seen[key] = r
    missing = sorted(set(reference) - set(seen))
    extra = sorted(set(seen) - set(reference))
    if missing:
        problems.append(f"{name}: {len(missing)} produced records are not in the table, e.g. {missing[:5]}")
    if extra:
        problems.append(f"{name}: {len(extra)} rows were never produced, e.g. {extra[:5]}")

    differences = []
    for key in sorted(set(seen) & set(reference)):
        row, ref = seen[key], reference[key]
        if request.get("rescue"):
            rescued = row["_rescued_data"]
            if ref["bad"] and rescued is None:
                differences.append(f"{name} {key}: a bad record has no _rescued_data")
            if not ref["bad"] and rescued is not None:
                differences.append(f"{name} {key}: a good record has _rescued_data {rescued!r}")
        if "key" in request.get("metadata", []):
            want_key = None if ref["key"] is None else ref["key"].encode()
            got_key = canonical(row["kafka_key"])
            if got_key != want_key:
                differences.append(f"{name} {key}: kafka_key is {got_key!r}, produced {want_key!r}")
        if ref["bad"]:
            continue
        parsed = ref["data"]
        for c in columns:
            want = canonical(parsed[c["name"]]) if parsed is not None else None
            got = canonical(row[c["name"]])
            if got != want:
                differences.append(
                    f"{name} {key} column {c['name']} ({c['type']}): the table has {got!r}, "
                    f"Spark's from_json gives {want!r} for {ref['value']}"
                )
    problems += differences
    return {
        "problems": listed(problems),
        "rows": len(seen),
        "history": history(spark, path),
        "detail": detail(spark, path),
    }


def op_check_dead_letter(context, request):
    """Reads a dead-letter table: exactly the bad records, each with its value, key and an error.

    request: name, path, expected (JSON lines; the records with bad=true must be here)."""
    spark = context.spark
    name, path = request["name"], request["path"]
    expected = {
        (r["topic"], r["partition"], r["offset"]): r
        for r in read_expected(spark, request["expected"]).where("bad").collect()
    }
    problems = []
    seen = {}
    for r in spark.read.format("delta").load(path).collect():
        key = coordinates(r)
        if key in seen:
            problems.append(f"{name}: {key} appears more than once")
        seen[key] = r
        ref = expected.get(key)
        if ref is None:
            problems.append(f"{name}: {key} was not a bad record")
            continue
        if canonical(r["value"]) != ref["value"].encode():
            problems.append(f"{name} {key}: value is {r['value']!r}, produced {ref['value']!r}")
        if r["value_text"] != ref["value"]:
            problems.append(f"{name} {key}: value_text is {r['value_text']!r}")
        if not r["error"]:
            problems.append(f"{name} {key}: no error text")
    missing = sorted(set(expected) - set(seen))
    if missing:
        problems.append(f"{name}: bad records missing from the dead-letter table: {missing[:5]}")
    return {
        "problems": listed(problems),
        "rows": len(seen),
        "history": history(spark, path),
        "detail": detail(spark, path),
    }


def op_sql(context, request):
    """Runs statements in order; answers the rows of the last one (values as text)."""
    rows = []
    for statement in request["statements"]:
        rows = context.spark.sql(statement).collect()
    return {"rows": [{k: str(v) for k, v in r.asDict().items()} for r in rows]}


def op_count(context, request):
    """Rows and distinct (topic, partition, offset) of a table, read as a batch."""
    table = context.spark.read.format("delta").load(request["path"])
    rows = table.count()
    distinct = table.select("kafka_topic", "kafka_partition", "kafka_offset").distinct().count()
    return {"rows": rows, "distinct": distinct}


class Stream:
    """A running readStream over a Delta table that records the coordinates of every row it
    receives, batch by batch."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rows = []
        self.batches = 0
        self.query = None

    def each_batch(self, frame, batch_id):
        got = frame.select("kafka_topic", "kafka_partition", "kafka_offset").collect()
        with self.lock:
            self.batches += 1
            self.rows.extend(tuple(r) for r in got)


def op_stream_start(context, request):
    """Starts spark.readStream.format("delta").load(path), as a user reading our table would.

    request: id, path, checkpoint."""
    stream = Stream()
    stream.query = (
        context.spark.readStream.format("delta")
        .load(request["path"])
        .writeStream.foreachBatch(stream.each_batch)
        .option("checkpointLocation", request["checkpoint"])
        .trigger(processingTime="200 milliseconds")
        .queryName(request["id"])
        .start()
    )
    context.streams[request["id"]] = stream
    return {}


def op_stream_rows(context, request):
    """How many rows a running stream has received so far (and whether it failed)."""
    stream = context.streams[request["id"]]
    error = stream.query.exception()
    with stream.lock:
        return {"rows": len(stream.rows), "batches": stream.batches, "error": str(error) if error else None}


def op_stream_finish(context, request):
    """Lets the stream process everything the table holds, stops it and checks that it received
    every produced record exactly once.

    request: id, expected (JSON lines of produced records)."""
    stream = context.streams.pop(request["id"])
    stream.query.processAllAvailable()
    progress = [json.loads(p.json) for p in stream.query.recentProgress]
    stream.query.stop()
    error = stream.query.exception()
    problems = [f"the stream failed: {error}"] if error else []
    expected = {
        (r["topic"], r["partition"], r["offset"])
        for r in read_expected(context.spark, request["expected"]).collect()
    }
    counts = {}
    for key in stream.rows:
        counts[key] = counts.get(key, 0) + 1
    duplicates = sorted(k for k, n in counts.items() if n > 1)
    missing = sorted(expected - set(counts))
    extra = sorted(set(counts) - expected)
    if duplicates:
        problems.append(f"the stream received {len(duplicates)} records more than once, e.g. {duplicates[:5]}")
    if missing:
        problems.append(f"the stream never received {len(missing)} records, e.g. {missing[:5]}")
    if extra:
        problems.append(f"the stream received {len(extra)} rows never produced, e.g. {extra[:5]}")
    return {
        "problems": problems,
        "rows": len(stream.rows),
        "distinct": len(counts),
        "batches": stream.batches,
        "progress_batches": len(progress),
    }


def seed_pipeline(context, request):
    """The seed's own pipeline, the one Tributary replaces: readStream from Kafka,
    `from_json(value, schema)` plus the record's coordinates, writeStream to a Delta table with
    a checkpoint (a DataStreamWriter, trigger not set yet).

    request: id, bootstrap, topic, columns [{name, type}], path, checkpoint, and optionally
    max_offsets_per_trigger."""
    ddl = ", ".join(f"`{c['name']}` {c['type']}" for c in request["columns"])
    reader = (
        context.spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", request["bootstrap"])
        .option("subscribe", request["topic"])
        .option("startingOffsets", "earliest")
    )
    if request.get("max_offsets_per_trigger"):
        reader = reader.option("maxOffsetsPerTrigger", str(request["max_offsets_per_trigger"]))
    rows = reader.load().select(
        F.from_json(F.col("value").cast("string"), ddl).alias("data"),
        F.col("topic").alias("kafka_topic"),
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
    ).select("data.*", "kafka_topic", "kafka_partition", "kafka_offset")
    return (
        rows.writeStream.format("delta")
        .option("checkpointLocation", request["checkpoint"])
        .queryName(request["id"])
    )


def op_ingest_start(context, request):
    """Starts the seed's pipeline (see seed_pipeline) with a batch every `trigger`.
    Answers the query's id (its txn app id in the table)."""
    query = seed_pipeline(context, request).trigger(processingTime=request["trigger"]).start(request["path"])
    context.ingestions[request["id"]] = query
    return {"query_id": query.id}


def op_ingest_available_now(context, request):
    """Runs the seed's pipeline with trigger(availableNow=True) to its end, as the benchmark's
    Spark side. Answers when it started (epoch ms) and how long it ran."""
    started_ms = int(time.time() * 1000)
    started = time.monotonic()
    query = seed_pipeline(context, request).trigger(availableNow=True).start(request["path"])
    query.awaitTermination()
    seconds = time.monotonic() - started
    error = query.exception()
    if error:
        raise RuntimeError(f"the availableNow query failed: {error}")
    return {"query_id": query.id, "started_ms": started_ms, "query_seconds": seconds}


def op_ingest_status(context, request):
    """The last batch a running ingestion finished, and its error if it failed."""
    query = context.ingestions[request["id"]]
    error = query.exception()
    progress = query.lastProgress
    return {
        "batch": progress["batchId"] if progress else None,
        "active": query.isActive,
        "error": str(error) if error else None,
    }


def op_ingest_stop(context, request):
    """Stops an ingestion the way a user does (query.stop()): the batch in flight is abandoned."""
    query = context.ingestions.pop(request["id"])
    query.stop()
    error = query.exception()
    return {"error": str(error) if error else None}
