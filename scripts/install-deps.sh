#!/usr/bin/env bash
# Installs what building and testing Tributary needs on a fresh Debian 12 machine with Rust.
# Idempotent: installs only what is missing.
set -euo pipefail

need_apt=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
# librdkafka is built from source by rdkafka-sys's configure script (C compiler, make, perl,
# zlib); SASL_SSL needs OpenSSL's headers. lua5.1 runs the Argo CD health check tests. The
# openssl CLI makes the test CA and broker certificates of the worker's SASL_SSL (Event Hubs) tests.
for pkg in build-essential perl pkg-config libssl-dev zlib1g-dev python3-venv lua5.1 openssl; do
  have_pkg "$pkg" || need_apt+=("$pkg")
done
# Java 17 and Maven for Apache Kafka and Spark's jars; Node and npm for Azurite.
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi


# ---- cargo-nextest, the test runner ----
# Built without optimisation: it starts processes and waits for them, so its own speed does not
# show. On 2 cores its release build took 12 min 44 s of a cold run, this one 4 min.
install_nextest() {
  CARGO_PROFILE_RELEASE_OPT_LEVEL=0 CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 CARGO_PROFILE_RELEASE_LTO=false \
    cargo install cargo-nextest --locked --quiet
}

# ---- Azurite: Azure's storage emulator, for the worker's ADLS tests (worker/tests/it/adls.rs) ----
# Installed into a cache directory, not the repository; the tests start
# $HOME/.cache/tributary/azurite/node_modules/.bin/azurite-blob themselves (or $TRIBUTARY_AZURITE_BLOB).
# 3.35.0: the last release that runs on the machine's Node 20 (3.37 needs Node 22).
install_azurite() {
  AZURITE_VERSION=3.35.0
  AZURITE_DIR="$HOME/.cache/tributary/azurite"
  installed_azurite=$(node -p "require('$AZURITE_DIR/node_modules/azurite/package.json').version" 2>/dev/null || true)
  if [ "$installed_azurite" != "$AZURITE_VERSION" ]; then
    echo "installing azurite@$AZURITE_VERSION into $AZURITE_DIR"
    mkdir -p "$AZURITE_DIR"
    (cd "$AZURITE_DIR" && npm install --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >/dev/null)
  fi
}

# ---- Apache Kafka: the broker of the tests and the benchmark (testkit/src/kafka.rs) ----
# The jars of org.apache.kafka:kafka_2.13 and its runtime dependencies, copied by Maven from
# Maven Central into $HOME/.cache/tributary/kafka-<version>/ (never into the repository); the
# tests run `java -cp 'DIR/*' kafka.Kafka server.properties`. The version is the pom's.
install_kafka() {
  KAFKA_POM="$(cd "$(dirname "$0")" && pwd)/kafka/pom.xml"
  KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM")
  [ -n "$KAFKA_VERSION" ] || { echo "no <kafka.version> in $KAFKA_POM" >&2; exit 1; }
  KAFKA_DIR="$HOME/.cache/tributary/kafka-$KAFKA_VERSION"
  if [ ! -f "$KAFKA_DIR/kafka_2.13-$KAFKA_VERSION.jar" ] || [ ! -f "$KAFKA_DIR/.complete" ]; then
    echo "installing Apache Kafka $KAFKA_VERSION into $KAFKA_DIR"
    rm -rf "$KAFKA_DIR.tmp"
    mvn -q -B -Dmaven.repo.local="$HOME/.cache/tributary/m2" -f "$KAFKA_POM" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$KAFKA_DIR.tmp"
    touch "$KAFKA_DIR.tmp/.complete"
    rm -rf "$KAFKA_DIR"
    mv "$KAFKA_DIR.tmp" "$KAFKA_DIR"
  fi
}

# ---- Spark with Delta Lake and the Kafka source, for the e2e Spark suite (e2e/tests/it/spark) ----
# pyspark (which bundles Spark's own jars) into a virtualenv, and the delta-spark, delta-storage
# and spark-sql-kafka-0-10 jars with their runtime dependencies from Maven Central into a
# versioned folder (e2e/spark/pom.xml), minus every artifact pyspark already ships; the tests
# hand those jars to Spark with spark.jars, so nothing is resolved when a test runs.
# Versions are pinned in e2e/spark/requirements.txt and e2e/spark/pom.xml (they must match).
install_spark() {
  SPARK_CACHE="$HOME/.cache/tributary"
  SPARK_VENV="$SPARK_CACHE/spark-venv"
  SPARK_SOURCES="$(cd "$(dirname "$0")/.." && pwd)/e2e/spark"
  SPARK_REQUIREMENTS="$SPARK_SOURCES/requirements.txt"
  SPARK_POM="$SPARK_SOURCES/pom.xml"
  # java and mvn: from the apt step above
  spark_requirements_hash=$(sha256sum "$SPARK_REQUIREMENTS" | cut -c1-16)
  if [ "$(cat "$SPARK_VENV/.requirements" 2>/dev/null)" != "$spark_requirements_hash" ]; then
    echo "installing pyspark and delta-spark into $SPARK_VENV"
    rm -rf "$SPARK_VENV"
    python3 -m venv "$SPARK_VENV"
    "$SPARK_VENV/bin/pip" install -q --disable-pip-version-check -r "$SPARK_REQUIREMENTS"
    echo "$spark_requirements_hash" >"$SPARK_VENV/.requirements"
  fi
  spark_version=$(sed -n 's|.*<spark.version>\(.*\)</spark.version>.*|\1|p' "$SPARK_POM")
  delta_version=$(sed -n 's|.*<delta.version>\(.*\)</delta.version>.*|\1|p' "$SPARK_POM")
  SPARK_JARS="$SPARK_CACHE/spark-jars-$spark_version-delta-$delta_version"
  spark_pom_hash=$(sha256sum "$SPARK_POM" | cut -c1-16)
  if [ "$(cat "$SPARK_JARS/.pom" 2>/dev/null)" != "$spark_pom_hash" ]; then
    echo "copying the Delta and Kafka jars for Spark $spark_version into $SPARK_JARS"
    staging="$SPARK_JARS.partial"
    rm -rf "$staging" && mkdir -p "$staging"
    mvn -q -B -f "$SPARK_POM" -Dmaven.repo.local="$SPARK_CACHE/m2" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$staging" \
      dependency:list -DincludeScope=runtime -DoutputFile="$staging/.artifacts" >/dev/null
    # Drop what Spark already has (Scala, Hadoop, Jackson, Parquet, log4j, ...): pyspark's
    # version is the one Spark runs with, and a second copy on the class path only invites clashes.
    "$SPARK_VENV/bin/python" - "$staging" <<'PY'
import os, re, sys, pyspark
staging = sys.argv[1]
spark_jars = os.listdir(os.path.join(os.path.dirname(pyspark.__file__), "jars"))
line = re.compile(r"^\s+[\w.\-]+:([\w.\-]+):jar:(?:[\w.\-]+:)?([\w.\-]+):(?:compile|runtime)")
for text in open(os.path.join(staging, ".artifacts")):
    m = line.match(text)
    if not m:
        continue
    artifact, version = m.groups()
    if any(re.fullmatch(re.escape(artifact) + r"-\d[\w.\-]*\.jar", j) for j in spark_jars):
        for jar in os.listdir(staging):
            if re.fullmatch(re.escape(f"{artifact}-{version}") + r"(-[\w.]+)?\.jar", jar):
                os.remove(os.path.join(staging, jar))
PY
    echo "$spark_pom_hash" >"$staging/.pom"
    rm -rf "$SPARK_JARS" && mv "$staging" "$SPARK_JARS"
  fi
}

# ---- A Unity Catalog server, for the worker's catalog tests (worker/tests/it/catalog_tables.rs) ----
# Not the Java reference server: io.unitycatalog:unitycatalog-server (and unitycatalog-spark) are
# not served by the Maven registry this project's machines reach (404 for every version; only
# unitycatalog-client and unitycatalog-hadoop are), and release downloads are out of reach. The
# tests run olai-uc-server from crates.io instead (open-lakehouse/mangrove, Apache-2.0; its README
# calls it an experimental, unofficial Unity Catalog implementation): a Rust server of the same
# REST API (/api/2.1/unity-catalog: catalogs, schemas, tables, temporary-table-credentials, and
# the /delta/v1 API for managed tables). Its `uc-server` binary is built once into
# $HOME/.cache/tributary/uc-server-<version>/bin (the tests' default; TRIBUTARY_UC_SERVER names
# another); the build directory is removed afterwards. A debug build: the tests ask it for a few
# dozen requests, and it compiles faster (cold: 6.4 min of CPU).
install_uc_server() {
  UC_SERVER_VERSION=0.0.11
  UC_DIR="$HOME/.cache/tributary/uc-server-$UC_SERVER_VERSION"
  if [ "$("$UC_DIR/bin/uc-server" --version 2>/dev/null || true)" != "uc-server $UC_SERVER_VERSION" ]; then
    echo "building olai-uc-server $UC_SERVER_VERSION into $UC_DIR (several minutes)"
    uc_started=$(date +%s)
    # No debug info and no incremental cache: the server is only run, never debugged. Idle
    # 2-core machine: 266 s, 390 CPU s, a 91 MB binary (371 MB with debug info; 2026-12-01).
    CARGO_PROFILE_DEV_DEBUG=0 CARGO_INCREMENTAL=0 \
      nice -n 5 cargo install olai-uc-server --version "$UC_SERVER_VERSION" --features bin --locked \
        --debug --root "$UC_DIR" --target-dir "$HOME/.cache/tributary/uc-server-build" --quiet
    rm -rf "$HOME/.cache/tributary/uc-server-build"
    echo "olai-uc-server built in $(( $(date +%s) - uc_started )) s"
  fi
}

# ---- Kubernetes control plane and helm for e2e/cluster (e2e/tests/it/cluster) ----
# etcd, kube-apiserver, kube-controller-manager, kubectl and helm built from their Go modules at
# pinned versions into $HOME/.cache/tributary/k8s-<version>/bin (skipped when present).
build_kubernetes() {
  bash "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/e2e/cluster/tools/build.sh"
}


# ---- Run them ----
# What waits on the network (Go modules, Maven Central, PyPI, npm) runs in the background while
# the two Rust builds use the cores: on a cold 2-core machine one after the other took 46 min
# (the Go build 20 min, mostly compiling: its module downloads take under a minute).
# Each background part writes a log of its own, shown when it fails.
# Kafka and Spark's jars share one local Maven repository, which is not safe for two Maven
# processes at once: they run one after the other.
install_jvm_parts() {
  install_kafka
  install_spark
}
logs="$(mktemp -d)"
pids=()
# A failure in the foreground ends the script: the background parts end with it.
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$logs"' EXIT
parts=(build_kubernetes install_jvm_parts install_azurite)
for part in "${parts[@]}"; do
  ( set -euo pipefail; started=$SECONDS; "$part"; echo "$part: done in $(( SECONDS - started )) s" ) \
    >"$logs/$part.log" 2>&1 &
  pids+=($!)
done

rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  nextest_started=$SECONDS
  install_nextest
  echo "cargo-nextest built in $(( SECONDS - nextest_started )) s"
fi
install_uc_server

failed=0

for i in "${!parts[@]}"; do
  if wait "${pids[$i]}"; then
    # A part that found everything in place (its log holds only its own "done in" line) says
    # nothing: scripts/test runs this script again after .ci/run has.
    log="$logs/${parts[$i]}.log"
    if grep -qvE "^${parts[$i]}: done in [0-9]+ s$" "$log"; then
      grep -E '(installing|copying|built in|done in)' "$log" || true
    fi
  else
    echo "install-deps: ${parts[$i]} failed; its log:" >&2
    cat "$logs/${parts[$i]}.log" >&2
    failed=1
  fi
done
exit "$failed"
