"""Shared helpers of the chart tests: a real Helm engine (helm-python-sdk), no cluster."""

from __future__ import annotations

import pathlib

import pytest
import yaml

import helm_python as helm

TESTS_DIR = pathlib.Path(__file__).resolve().parent
CHART_DIR = TESTS_DIR.parent
REPO_DIR = CHART_DIR.parent.parent
VALUES_DIR = TESTS_DIR / "values"

RELEASE = "tributary"
NAMESPACE = "tributary-system"


def values_file(name: str) -> dict:
    """A values file of tests/values/, as `helm install -f` would read it."""
    return yaml.safe_load((VALUES_DIR / name).read_text()) or {}


class Rendered:
    """The objects a `helm template` of the chart produces."""

    def __init__(self, templates: dict[str, str]):
        self.templates = templates
        self.notes = next((text for path, text in templates.items() if path.endswith("NOTES.txt")), "")
        self.objects: list[dict] = []
        for path, text in templates.items():
            if path.endswith(".txt"):
                continue
            for doc in yaml.safe_load_all(text):
                if doc is not None:
                    doc.setdefault("metadata", {})
                    self.objects.append(doc)

    def kinds(self) -> list[str]:
        return sorted(o["kind"] for o in self.objects)

    def of_kind(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str) -> dict:
        found = self.of_kind(kind)
        assert len(found) == 1, f"expected one {kind}, found {len(found)}: {self.kinds()}"
        return found[0]

    def deployment(self) -> dict:
        return self.one("Deployment")

    def container(self) -> dict:
        containers = self.deployment()["spec"]["template"]["spec"]["containers"]
        assert len(containers) == 1
        return containers[0]


@pytest.fixture(scope="session")
def chart():
    loaded = helm.Chart.load(CHART_DIR)
    yield loaded
    loaded.close()


@pytest.fixture(scope="session")
def render(chart):
    def _render(values: dict | None = None, *, name: str = RELEASE, namespace: str = NAMESPACE) -> Rendered:
        return Rendered(chart.render(values or {}, name=name, namespace=namespace, is_install=True))

    return _render
