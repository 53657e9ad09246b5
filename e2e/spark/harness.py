"""A local-mode Spark session with Delta Lake and the Kafka source, driven by line-delimited JSON.

The Rust tests (e2e/tests/it/spark/) start one of these per test and send it requests, one JSON
object per line on stdin; each answer is one JSON object per line on the original stdout. Spark's
own output (the JVM's stdout and stderr, Python's prints) goes to stderr, which the test keeps in
a file and shows when something fails. One process serves many requests, so a test pays for
Spark's start-up once.

Requests: {"op": NAME, ...}; answers: {"ok": true, ...} or {"ok": false, "error": TEXT}.
The operations are in checks.py.
"""

import glob
import json
import os
import sys
import time
import traceback


def spark_session(work_dir):
    """Spark in local mode on 127.0.0.1: two cores, no UI, a small driver, UTC, Delta's catalog,
    and the jars install-deps.sh put in the cache (never resolved at run time)."""
    jars_dir = os.environ.get("TRIBUTARY_SPARK_JARS")
    if not jars_dir:
        raise SystemExit("TRIBUTARY_SPARK_JARS is not set (run scripts/install-deps.sh)")
    jars = sorted(glob.glob(os.path.join(jars_dir, "*.jar")))
    if not any("delta-spark" in os.path.basename(j) for j in jars):
        raise SystemExit(f"no delta-spark jar in {jars_dir} (run scripts/install-deps.sh)")
    # Spark picks the host's address unless told; everything here stays on the loopback.
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    os.environ["SPARK_LOCAL_DIRS"] = os.path.join(work_dir, "spark-local")
    from pyspark.sql import SparkSession

    here = os.path.dirname(os.path.abspath(__file__))
    java_options = " ".join(
        [
            f"-Dlog4j.configurationFile=file:{os.path.join(here, 'log4j2.properties')}",
            f"-Dderby.system.home={os.path.join(work_dir, 'derby')}",
            "-Djava.net.preferIPv4Stack=true",
            "-XX:+UseSerialGC",
            # The JIT's optimising tier costs more than it saves in a test's short session.
            "-XX:TieredStopAtLevel=1",
        ]
    )
    builder = (
        SparkSession.builder.master("local[2]")
        .appName("tributary-e2e")
        .config("spark.jars", ",".join(jars))
        .config("spark.driver.memory", os.environ.get("TRIBUTARY_SPARK_DRIVER_MEMORY", "1g"))
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.extraJavaOptions", java_options)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.warehouse.dir", os.path.join(work_dir, "warehouse"))
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        # A streaming query in a test polls often; the default 10 s of an idle Delta source is
        # too slow for a test with deadlines.
        .config("spark.sql.streaming.pollingDelay", "100ms")
    )
    return builder.getOrCreate()


def main():
    # Answers go to the original stdout; everything else written to fd 1 from here on (the
    # JVM's output included, which inherits the descriptor) goes to stderr.
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    work_dir = os.environ.get("TRIBUTARY_SPARK_WORK_DIR") or os.getcwd()
    started = time.monotonic()
    spark = spark_session(work_dir)
    import checks

    context = checks.Context(spark, work_dir)
    answers.write(
        json.dumps(
            {
                "ok": True,
                "ready": True,
                "spark_version": spark.version,
                "startup_seconds": round(time.monotonic() - started, 2),
            }
        )
        + "\n"
    )
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            operation = getattr(checks, "op_" + request.get("op", ""), None)
            if operation is None:
                raise ValueError(f"unknown operation {request.get('op')!r}")
            started = time.monotonic()
            answer = operation(context, request)
            answer.setdefault("ok", True)
            answer["seconds"] = round(time.monotonic() - started, 2)
        except Exception as e:  # noqa: BLE001 - every failure goes back to the test as text
            traceback.print_exc()
            answer = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        answers.write(json.dumps(answer, default=str) + "\n")
    context.stop()
    spark.stop()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
