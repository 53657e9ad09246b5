#!/usr/bin/env bash
# Chart tests (a real Helm engine, no cluster) and the Argo CD health check tests (real Lua 5.1).
#
#   charts/tributary/tests/run.sh [pytest args...]
#
# Needs python3 with venv (Debian: python3-venv) and lua5.1 (Debian: lua5.1). Python packages go
# into a virtualenv at ${TRIBUTARY_VENV:-$HOME/.cache/tributary/venv}, installed only when missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${TRIBUTARY_VENV:-$HOME/.cache/tributary/venv}"
helm_sdk_version="0.2.2"

if [ ! -x "$venv/bin/python" ]; then
  echo "chart tests: creating virtualenv $venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
fi

if ! "$venv/bin/python" - "$helm_sdk_version" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
assert version("helm-python-sdk") == sys.argv[1]
import helm_python, pytest, yaml  # noqa: F401
PY
then
  echo "chart tests: installing helm-python-sdk==$helm_sdk_version, pytest, pyyaml into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "helm-python-sdk==$helm_sdk_version" pytest pyyaml
fi

if ! command -v lua5.1 >/dev/null 2>&1; then
  echo "chart tests: lua5.1 is missing (apt-get install -y lua5.1); the Argo CD health tests will fail" >&2
fi

export PYTHONDONTWRITEBYTECODE=1
cd "$here"
exec "$venv/bin/python" -m pytest -p no:cacheprovider -q "$here" "$@"
