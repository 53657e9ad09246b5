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
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy

# ---- Azurite: Azure's storage emulator, for the worker's ADLS tests (worker/tests/it/adls.rs) ----
# Installed into a cache directory, not the repository; the tests start
# $HOME/.cache/tributary/azurite/node_modules/.bin/azurite-blob themselves (or $TRIBUTARY_AZURITE_BLOB).
# 3.35.0: the last release that runs on the machine's Node 20 (3.37 needs Node 22).
AZURITE_VERSION=3.35.0
AZURITE_DIR="$HOME/.cache/tributary/azurite"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "installing nodejs npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
installed_azurite=$(node -p "require('$AZURITE_DIR/node_modules/azurite/package.json').version" 2>/dev/null || true)
if [ "$installed_azurite" != "$AZURITE_VERSION" ]; then
  echo "installing azurite@$AZURITE_VERSION into $AZURITE_DIR"
  mkdir -p "$AZURITE_DIR"
  (cd "$AZURITE_DIR" && npm install --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >/dev/null)
fi

# ---- Kubernetes control plane and helm for e2e/cluster (e2e/tests/it/cluster) ----
# etcd, kube-apiserver, kube-controller-manager, kubectl and helm built from their Go modules at
# pinned versions into $HOME/.cache/tributary/k8s-<version>/bin (skipped when present).
bash "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/e2e/cluster/tools/build.sh"
