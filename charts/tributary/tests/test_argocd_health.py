"""The Argo CD health check (argocd/health.lua) run by a real Lua 5.1 interpreter on every case
of argocd/health_test.yaml, Argo CD's own test layout.

Argo CD runs the script with gopher-lua (Lua 5.1) and the resource as the global table `obj`;
the harness here does the same: it converts each testdata object to a Lua table literal, takes
away the libraries Argo CD's sandbox does not open (os, io, require, load*...), runs the script
file and prints the status and message it returns.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest
import yaml

from conftest import CHART_DIR

ARGOCD_DIR = CHART_DIR / "argocd"
HEALTH_LUA = ARGOCD_DIR / "health.lua"
LUA = "lua5.1"
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended"}


class JsonLikeLoader(yaml.SafeLoader):
    """YAML as Kubernetes reads it: timestamps stay strings (Argo CD sees JSON)."""


JsonLikeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load(path: pathlib.Path):
    return yaml.load(path.read_text(), Loader=JsonLikeLoader)


def lua_string(text: str) -> str:
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if char in '"\\' or byte < 32 or byte > 126:
            out.append(f"\\{byte:03d}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def to_lua(value) -> str:
    """A Lua table literal of a JSON-like value (lists become 1-based arrays, as in gopher-lua)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return lua_string(value)
    if isinstance(value, list):
        return "{" + ", ".join(to_lua(item) for item in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{lua_string(str(k))}] = {to_lua(v)}" for k, v in value.items() if v is not None) + "}"
    raise TypeError(f"cannot convert {type(value).__name__} to Lua: {value!r}")


HARNESS = """\
obj = {obj}
local check = assert(loadfile({script}))
local write = io.write
-- Argo CD's sandbox opens only the base, table, string and math libraries.
os, io, require, dofile, loadfile, loadstring, load, module, package, debug = nil, nil, nil, nil, nil, nil, nil, nil, nil, nil
local hs = check()
assert(type(hs) == "table", "health.lua must return a table")
write(tostring(hs.status), "\\n", tostring(hs.message))
"""


def run_health(script: pathlib.Path, obj: dict, tmp_path: pathlib.Path) -> tuple[str, str]:
    lua = shutil.which(LUA)
    assert lua, f"{LUA} is not installed (apt-get install -y lua5.1)"
    harness = tmp_path / "harness.lua"
    harness.write_text(HARNESS.format(obj=to_lua(obj), script=lua_string(str(script))))
    done = subprocess.run([lua, str(harness)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"lua failed:\n{done.stderr}"
    status, _, message = done.stdout.partition("\n")
    return status, message


CASES = load(ARGOCD_DIR / "health_test.yaml")["tests"]


@pytest.mark.parametrize("case", CASES, ids=[pathlib.Path(c["inputPath"]).stem for c in CASES])
def test_health(case, tmp_path):
    obj = load(ARGOCD_DIR / case["inputPath"])
    assert obj["apiVersion"] == "tributary.dev/v1alpha1" and obj["kind"] == "StreamingIngestion"
    expected = case["healthStatus"]
    assert expected["status"] in ARGO_STATUSES
    assert run_health(HEALTH_LUA, obj, tmp_path) == (expected["status"], expected["message"])


def test_cases_cover_every_status_and_every_testdata_file():
    assert {c["healthStatus"]["status"] for c in CASES} == ARGO_STATUSES
    referenced = sorted(pathlib.Path(c["inputPath"]).name for c in CASES)
    on_disk = sorted(p.name for p in (ARGOCD_DIR / "testdata").glob("*.yaml"))
    assert referenced == on_disk


def test_harness_catches_a_wrong_script(tmp_path):
    """The comparison can fail: a script that always says Healthy disagrees with the cases."""
    wrong = tmp_path / "always-healthy.lua"
    wrong.write_text('return {status = "Healthy", message = "fine"}\n')
    results = [run_health(wrong, load(ARGOCD_DIR / c["inputPath"]), tmp_path) for c in CASES]
    expected = [(c["healthStatus"]["status"], c["healthStatus"]["message"]) for c in CASES]
    assert all(r == ("Healthy", "fine") for r in results)
    assert sum(r != e for r, e in zip(results, expected)) == len(CASES)


def test_lua_table_conversion(tmp_path):
    """Nested maps, lists, numbers, booleans and odd strings reach Lua intact."""
    probe = tmp_path / "probe.lua"
    probe.write_text(
        'return {status = obj.status.conditions[2].type .. "|" .. tostring(#obj.status.conditions), '
        'message = obj.spec.note .. "|" .. tostring(obj.spec.suspend) .. "|" .. tostring(obj.metadata.generation + 1)}\n'
    )
    obj = {
        "metadata": {"generation": 41},
        "spec": {"suspend": False, "note": 'quote " backslash \\ newline \n ünïcode'},
        "status": {"conditions": [{"type": "Ready"}, {"type": "Degraded"}]},
    }
    assert run_health(probe, obj, tmp_path) == ("Degraded|2", 'quote " backslash \\ newline \n ünïcode|false|42')


def test_health_script_uses_no_sandboxed_library():
    text = HEALTH_LUA.read_text()
    for name in ("os.", "io.", "require", "dofile", "loadfile", "loadstring", "debug."):
        assert name not in text, name


def test_readme_snippet_is_the_script():
    readme = (ARGOCD_DIR / "README.md").read_text()
    block = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    config_map = yaml.safe_load(block)
    assert config_map["metadata"]["name"] == "argocd-cm"
    assert config_map["data"]["resource.customizations.health.tributary.dev_StreamingIngestion"] == HEALTH_LUA.read_text()
