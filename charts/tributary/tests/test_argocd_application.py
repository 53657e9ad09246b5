"""examples/argocd/application.yaml: the two Argo CD Applications point at things that exist, the
chart's values in it pass the chart's schema, and the scale advice is in place."""

from __future__ import annotations

import fnmatch

import yaml

from conftest import REPO_DIR

APPLICATIONS = REPO_DIR / "examples" / "argocd" / "application.yaml"
GIT_URL = "https://github.com/tributary-dev/tributary.git"


def applications() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(APPLICATIONS.read_text()) if d]
    assert all(d["apiVersion"] == "argoproj.io/v1alpha1" and d["kind"] == "Application" for d in docs)
    return {d["metadata"]["name"]: d for d in docs}


def brace_patterns(pattern: str) -> list[str]:
    if pattern.startswith("{") and pattern.endswith("}"):
        return pattern[1:-1].split(",")
    return [pattern]


def test_chart_application(render):
    app = applications()["tributary"]
    source = app["spec"]["source"]
    assert source["repoURL"] == GIT_URL
    assert (REPO_DIR / source["path"] / "Chart.yaml").is_file()
    # The values an Argo CD user copies must pass the chart's schema and do what they say.
    rendered = render(source["helm"]["valuesObject"], name=source["helm"]["releaseName"],
                      namespace=app["spec"]["destination"]["namespace"])
    assert "--leader-election" in rendered.container()["args"]
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]


def test_ingestions_application():
    app = applications()["iot-ingestions"]
    source = app["spec"]["source"]
    directory = REPO_DIR / source["path"]
    included = [
        p for p in sorted(directory.glob("*.yaml"))
        if any(fnmatch.fnmatch(p.name, pat) for pat in brace_patterns(source["directory"]["include"]))
    ]
    assert [p.name for p in included] == ["sensor-readings-available-now.yaml", "sensor-readings.yaml"]
    for path in included:
        doc = yaml.safe_load(path.read_text())
        assert doc["kind"] == "StreamingIngestion"
        assert doc["metadata"]["namespace"] == app["spec"]["destination"]["namespace"]
    assert {
        "group": "tributary.dev",
        "kind": "StreamingIngestion",
        "jsonPointers": ["/spec/replicas"],
    } in app["spec"]["ignoreDifferences"]
    assert "RespectIgnoreDifferences=true" in app["spec"]["syncPolicy"]["syncOptions"]
