#!/usr/bin/env bash
# Installs what building and testing Tributary needs on a fresh Debian 12 machine with Rust.
# Idempotent: installs only what is missing.
set -euo pipefail

need_apt=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
# librdkafka is built from source by rdkafka-sys's configure script (C compiler, make, perl,
# zlib); SASL_SSL needs OpenSSL's headers. lua5.1 runs the Argo CD health check tests.
for pkg in build-essential perl pkg-config libssl-dev zlib1g-dev python3-venv lua5.1; do
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
