"""The kind suite's (e2e/kind/) files that can be checked without a cluster: its manifests match
what the examples expect, and its Delta log reader counts rows right."""

from __future__ import annotations

import subprocess
import sys

import yaml

from conftest import REPO_DIR

KIND_DIR = REPO_DIR / "e2e" / "kind"


def manifests(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((KIND_DIR / name).read_text()) if d]


def test_kafka_is_where_the_examples_look():
    objects = {(o["kind"], o["metadata"]["name"]): o for o in manifests("kafka.yaml")}
    service = objects[("Service", "kafka")]
    assert service["metadata"]["namespace"] == "kafka"
    assert service["spec"]["ports"][0]["port"] == 9092
    deployment = objects[("Deployment", "kafka")]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert deployment["spec"]["template"]["spec"]["enableServiceLinks"] is False
    env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    advertised = env["KAFKA_ADVERTISED_LISTENERS"].split("://", 1)[1]
    for example in ("sensor-readings.yaml", "sensor-readings-available-now.yaml"):
        spec = yaml.safe_load((REPO_DIR / "examples" / example).read_text())["spec"]
        assert spec["source"]["kafka"]["bootstrapServers"] == advertised, example


def test_lake_claim_is_what_the_examples_mount():
    objects = {(o["kind"], o["metadata"]["name"]): o for o in manifests("iot.yaml")}
    claim = objects[("PersistentVolumeClaim", "lake")]
    assert claim["metadata"]["namespace"] == "iot"
    reader = objects[("Pod", "lake-reader")]
    assert reader["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "lake"
    for example in ("sensor-readings.yaml", "sensor-readings-available-now.yaml"):
        doc = yaml.safe_load((REPO_DIR / "examples" / example).read_text())
        assert doc["metadata"]["namespace"] == "iot"
        delta = doc["spec"]["sink"]["delta"]
        assert delta["volume"]["claimName"] == "lake"
        assert delta["uri"].startswith(delta["volume"]["mountPath"] + "/")
        assert delta["uri"] in (KIND_DIR / "run.sh").read_text()


def run_delta_log(text: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(KIND_DIR / "delta_log.py")], input=text, capture_output=True, text=True)


def test_delta_log_reader_counts_live_rows():
    log = "\n".join([
        "### /lake/t/_delta_log/00000000000000000000.json",
        '{"protocol":{"minReaderVersion":1,"minWriterVersion":2}}',
        '{"metaData":{"id":"t"}}',
        "### /lake/t/_delta_log/00000000000000000001.json",
        '{"txn":{"appId":"q-0","version":7}}',
        '{"add":{"path":"part-1.parquet","stats":"{\\"numRecords\\":10}"}}',
        '{"add":{"path":"part-2.parquet","stats":"{\\"numRecords\\":5}"}}',
        "### /lake/t/_delta_log/00000000000000000002.json",
        '{"remove":{"path":"part-1.parquet"}}',
        '{"remove":{"path":"part-2.parquet"}}',
        '{"add":{"path":"compacted.parquet","stats":"{\\"numRecords\\":15}"}}',
        "### /lake/t/_delta_log/00000000000000000003.json",
        '{"txn":{"appId":"q-0","version":9}}',
        '{"add":{"path":"part-3.parquet","stats":"{\\"numRecords\\":4}"}}',
        "",
    ])
    done = run_delta_log(log)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "commits=4 rows=19 files=2 txn=2"


def test_delta_log_reader_refuses_adds_without_row_counts():
    log = "### 00000000000000000000.json\n" '{"add":{"path":"a.parquet","stats":"{}"}}\n'
    done = run_delta_log(log)
    assert done.returncode != 0 and "numRecords" in done.stderr
