#!/usr/bin/env bash
# The real-cluster suite: kind + the chart + a real Kafka + the examples, end to end.
#
#   e2e/kind/run.sh
#
# Needs Docker (with buildx), kind, kubectl, helm and python3 on the PATH. Not run by .ci/run.
#
# Environment:
#   KIND_CLUSTER=tributary-e2e   cluster name; an existing cluster of that name is reused
#   KIND_NODE_IMAGE=             node image (default: the kind release's own)
#   KEEP_CLUSTER=0               1: leave the cluster running at the end (for a look around)
#   SKIP_BUILD=0                 1: use the images already in Docker (REGISTRY/TAG below)
#   REGISTRY=ghcr.io/tributary-dev  TAG=e2e   image names built, loaded and installed
#   READINGS=20000               sensor readings produced before the examples start
#   TIMEOUT=300                  seconds each wait may take
#
# Each step says what it does; on failure the cluster's state, events and logs are printed.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$repo/e2e/kind"
cluster="${KIND_CLUSTER:-tributary-e2e}"
registry="${REGISTRY:-ghcr.io/tributary-dev}"
tag="${TAG:-e2e}"
readings="${READINGS:-20000}"
more_readings=5000
timeout="${TIMEOUT:-300}"
operator_image="$registry/tributary-operator:$tag"
worker_image="$registry/tributary-worker:$tag"
release=tributary
release_ns=tributary-system
topic=sensor-readings

work="$(mktemp -d)"
export KUBECONFIG="$work/kubeconfig"
created_cluster=0

step() { printf '\n=== %s\n' "$*"; }
fail() { printf '\nFAIL: %s\n' "$*" >&2; exit 1; }
kafka() { kubectl -n kafka exec -i deploy/kafka -- "$@"; }

# Polls a command until it succeeds, for at most $1 seconds.
eventually() {
  local limit="$1"; shift
  local deadline=$((SECONDS + limit))
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 5
  done
}

diagnostics() {
  set +e
  echo
  echo "=== diagnostics"
  kubectl get nodes -o wide
  kubectl get streamingingestions -A -o wide
  kubectl get all,pvc,cm,sa,role,rolebinding -n iot
  kubectl get all -n "$release_ns"
  kubectl get streamingingestions -n iot -o yaml
  kubectl get events -A --sort-by=.lastTimestamp | tail -60
  kubectl logs -n "$release_ns" deploy/"$release"-operator --tail=200
  for pod in $(kubectl get pods -n iot -l tributary.dev/ingestion -o name); do
    echo "--- $pod"
    kubectl logs -n iot "$pod" --all-containers --tail=100
  done
  kubectl logs -n kafka deploy/kafka --tail=50
}

finish() {
  local rc=$?
  [ "$rc" -eq 0 ] || diagnostics
  if [ "$created_cluster" = 1 ] && [ "${KEEP_CLUSTER:-0}" != 1 ]; then
    step "deleting kind cluster $cluster"
    kind delete cluster --name "$cluster" || true
  elif [ "${KEEP_CLUSTER:-0}" = 1 ]; then
    echo "cluster $cluster kept: export KUBECONFIG=$KUBECONFIG"
  fi
  [ "${KEEP_CLUSTER:-0}" = 1 ] || rm -rf "$work"
  if [ "$rc" -eq 0 ]; then echo "e2e/kind: PASS"; else echo "e2e/kind: FAIL ($rc)" >&2; fi
  exit "$rc"
}
trap finish EXIT

for tool in docker kind kubectl helm python3; do
  command -v "$tool" >/dev/null || fail "$tool is not on the PATH"
done

# --- cluster, images, chart -------------------------------------------------------------------

if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  step "reusing kind cluster $cluster"
  kind export kubeconfig --name "$cluster" --kubeconfig "$KUBECONFIG"
  # Start from no data: an earlier run's topic and tables would spoil the row counts.
  kubectl delete streamingingestions --all -n iot --ignore-not-found --timeout="${timeout}s" 2>/dev/null || true
  kubectl delete namespace iot kafka --ignore-not-found --wait=true --timeout="${timeout}s"
else
  step "creating kind cluster $cluster"
  kind create cluster --name "$cluster" --kubeconfig "$KUBECONFIG" --wait 180s \
    ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}
  created_cluster=1
fi

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  step "building $operator_image and $worker_image (docker buildx bake)"
  (cd "$repo" && REGISTRY="$registry" TAG="$tag" docker buildx bake --load operator worker)
fi
step "loading the images into the cluster"
kind load docker-image --name "$cluster" "$operator_image" "$worker_image"

step "a wrong value is refused by the chart's schema (real helm)"
if helm template "$release" "$repo/charts/tributary" --set replicas=two >/dev/null 2>"$work/schema.err"; then
  fail "helm accepted replicas=two"
fi
grep -q "/replicas" "$work/schema.err" || fail "helm's refusal does not name /replicas: $(cat "$work/schema.err")"

step "installing the chart"
helm upgrade --install "$release" "$repo/charts/tributary" \
  --namespace "$release_ns" --create-namespace \
  -f "$here/values.yaml" \
  --set image.repository="$registry/tributary-operator" --set image.tag="$tag" \
  --set worker.image.repository="$registry/tributary-worker" --set worker.image.tag="$tag" \
  --set worker.image.pullPolicy=IfNotPresent \
  --wait --timeout "${timeout}s"
kubectl -n "$release_ns" rollout status deploy/"$release"-operator --timeout="${timeout}s"
kubectl get crd streamingingestions.tributary.dev >/dev/null

step "the operator's RBAC is least privilege"
sa="system:serviceaccount:$release_ns:$release-operator"
[ "$(kubectl auth can-i get secrets -n iot --as="$sa")" = yes ] || fail "operator cannot get secrets"
[ "$(kubectl auth can-i list secrets -n iot --as="$sa" || true)" = no ] || fail "operator can list secrets"
[ "$(kubectl auth can-i delete streamingingestions -n iot --as="$sa" || true)" = no ] || fail "operator can delete ingestions"
[ "$(kubectl auth can-i patch streamingingestions --subresource=status -n iot --as="$sa")" = yes ] || fail "operator cannot patch status"
[ "$(kubectl auth can-i create leases -n "$release_ns" --as="$sa")" = yes ] || fail "operator cannot create leases"

# --- Kafka and data ---------------------------------------------------------------------------

step "starting Kafka (apache/kafka, KRaft, single node)"
kubectl apply -f "$here/kafka.yaml"
kubectl -n kafka rollout status deploy/kafka --timeout="${timeout}s"
eventually "$timeout" kafka /opt/kafka/bin/kafka-topics.sh --bootstrap-server localhost:9092 --list >/dev/null \
  || fail "Kafka does not answer"
kafka /opt/kafka/bin/kafka-topics.sh --bootstrap-server localhost:9092 --create --if-not-exists \
  --topic "$topic" --partitions 3 --replication-factor 1

# Sensor readings as JSON lines; every 1000th has a temperature that is not a number, which the
# examples' onError: rescue keeps (in _rescued_data) rather than drops.
produce() {
  local first="$1" count="$2"
  awk -v first="$first" -v count="$count" 'BEGIN {
    split("plant-a plant-b plant-c", sites, " ");
    for (i = first; i < first + count; i++) {
      temp = (i % 1000 == 999) ? "\"hot\"" : sprintf("%.2f", 18 + (i % 170) / 10);
      printf("{\"device_id\":\"sensor-%04d\",\"site\":\"%s\",\"temperature\":%s,\"humidity\":%.1f,\"battery_pct\":%d,\"status\":\"%s\",\"timestamp\":\"2026-11-20T%02d:%02d:%02dZ\"}\n",
        i % 500, sites[i % 3 + 1], temp, 30 + (i % 50), 100 - (i % 100), (i % 97 == 0) ? "WARN" : "OK",
        int(i / 3600) % 24, int(i / 60) % 60, i % 60);
    }
  }' | kafka /opt/kafka/bin/kafka-console-producer.sh --bootstrap-server localhost:9092 --topic "$topic" \
        --producer-property acks=all --producer-property linger.ms=20
}

topic_size() {
  kafka /opt/kafka/bin/kafka-get-offsets.sh --bootstrap-server localhost:9092 --topic "$topic" --time -1 \
    | awk -F: '{ sum += $3 } END { print sum + 0 }'
}

step "producing $readings sensor readings to $topic"
produce 0 "$readings"
[ "$(topic_size)" -eq "$readings" ] || fail "topic holds $(topic_size) records, expected $readings"

# --- the examples -----------------------------------------------------------------------------

step "creating namespace iot, the claim lake and a reader pod"
kubectl apply -f "$here/iot.yaml"
kubectl -n iot wait --for=condition=Ready pod/lake-reader --timeout="${timeout}s"

step "applying the continuous and availableNow examples"
kubectl apply -f "$repo/examples/sensor-readings.yaml" -f "$repo/examples/sensor-readings-available-now.yaml"

step "waiting for stream/sensor-readings to be Ready"
kubectl -n iot wait --for=condition=Ready stream/sensor-readings --timeout="${timeout}s"
step "waiting for stream/sensor-readings-batch to succeed"
kubectl -n iot wait --for=jsonpath='{.status.phase}'=Succeeded stream/sensor-readings-batch --timeout="${timeout}s"

step "kubectl get streams"
kubectl get streams -n iot | tee "$work/streams.txt"
header="$(head -n 1 "$work/streams.txt")"
for column in NAME PHASE READY TRIGGER REPLICAS LAG AGE; do
  grep -qw "$column" <<<"$header" || fail "kubectl get streams has no $column column: $header"
done
grep -Eq '^sensor-readings[[:space:]].*Running' "$work/streams.txt" || fail "sensor-readings is not listed as Running"
grep -Eq '^sensor-readings-batch[[:space:]].*Succeeded' "$work/streams.txt" || fail "sensor-readings-batch is not listed as Succeeded"
kubectl get si -n iot -o wide

# Summary of a table's Delta log, as read by the reader pod: commits=.. rows=.. files=.. txn=..
table_summary() {
  # shellcheck disable=SC2016 # expanded by the pod's shell
  kubectl -n iot exec lake-reader -- sh -c '
    log="$1/_delta_log"
    [ -f "$log/00000000000000000000.json" ] || { echo "no Delta table at $1" >&2; exit 1; }
    for f in "$log"/*.json; do echo "### $f"; cat "$f"; echo; done' sh "$1" \
    | python3 "$here/delta_log.py"
}
table_rows() { table_summary "$1" | sed -n 's/.*rows=\([0-9]*\).*/\1/p'; }
rows_equal() { [ "$(table_rows "$1")" = "$2" ]; }

step "checking the Delta tables"
batch_table=/lake/bronze/iot/sensor_readings_batch
stream_table=/lake/bronze/iot/sensor_readings
summary="$(table_summary "$batch_table")"; echo "$batch_table: $summary"
[[ "$summary" == *" rows=$readings "* ]] || fail "$batch_table: expected rows=$readings (exactly once), got $summary"
[[ "$summary" != *" txn=0" ]] || fail "$batch_table: commits carry no txn (offset) actions"
kubectl -n iot exec lake-reader -- sh -c "find $batch_table -name '*.parquet' ! -path '*/_delta_log/*' | grep -q ." \
  || fail "$batch_table has no Parquet data files"
eventually "$timeout" rows_equal "$stream_table" "$readings" \
  || fail "$stream_table: expected rows=$readings, got $(table_summary "$stream_table")"
echo "$stream_table: $(table_summary "$stream_table")"

step "scaling stream/sensor-readings to 2 replicas and producing $more_readings more readings"
kubectl -n iot scale stream/sensor-readings --replicas=2
kubectl -n iot wait --for=jsonpath='{.status.readyReplicas}'=2 stream/sensor-readings --timeout="${timeout}s"
produce "$readings" "$more_readings"
total=$((readings + more_readings))
eventually "$timeout" rows_equal "$stream_table" "$total" \
  || fail "$stream_table: expected rows=$total after scaling, got $(table_summary "$stream_table")"
echo "$stream_table: $(table_summary "$stream_table")"
kubectl -n iot wait --for=condition=Ready stream/sensor-readings --timeout="${timeout}s"

# --- deletion cleans up -----------------------------------------------------------------------

step "deleting the ingestions; what they own must go"
kinds=deployments,jobs,cronjobs,configmaps,serviceaccounts,roles,rolebindings
selector='tributary.dev/ingestion in (sensor-readings,sensor-readings-batch)'
kubectl -n iot get "$kinds" -l "$selector" -o name | sort >"$work/owned.txt"
cat "$work/owned.txt"
for expected in deployment.apps/ job.batch/ configmap/ serviceaccount/ role.rbac.authorization.k8s.io/ rolebinding.rbac.authorization.k8s.io/; do
  grep -q "^$expected" "$work/owned.txt" || fail "no $expected object labelled with its ingestion before deletion"
done
kubectl -n iot delete -f "$repo/examples/sensor-readings.yaml" -f "$repo/examples/sensor-readings-available-now.yaml" \
  --wait=true --timeout="${timeout}s"
remaining() {
  local left=()
  while read -r object; do
    kubectl -n iot get "$object" >/dev/null 2>&1 && left+=("$object")
  done <"$work/owned.txt"
  kubectl -n iot get pods -l "$selector" -o name | grep -q . && left+=("pods")
  [ "${#left[@]}" -eq 0 ] || { echo "still there: ${left[*]}"; return 1; }
}
eventually "$timeout" remaining || fail "objects owned by the deleted ingestions remain"
kubectl -n iot get pvc
echo "(checkpoint claims the operator created are kept unless the spec asks otherwise)"
[ -z "$(kubectl get streams -n iot -o name)" ] || fail "streams remain after deletion"
