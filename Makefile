# Tributary: images, the generated CRD, tests. `make help` lists the targets.

REGISTRY ?= ghcr.io/tributary-dev
TAG ?= 0.1.0
# Extra flags for `docker buildx bake`, e.g. --load, --push, --set *.platform=linux/arm64
BAKE_FLAGS ?=
CRD := crds/streamingingestions.tributary.dev.yaml
CHART := charts/tributary

.PHONY: help images image-operator image-worker crd test test-chart e2e-kind

help:
	@echo "make images      build both container images (docker buildx bake; REGISTRY=$(REGISTRY) TAG=$(TAG))"
	@echo "make crd         regenerate $(CRD) and $(CHART)/crds/ from the Rust types"
	@echo "make test        every test (scripts/test: the chart and Argo CD health tests, then Rust)"
	@echo "make test-chart  only the chart and Argo CD health tests ($(CHART)/tests/run.sh)"
	@echo "make e2e-kind    the real-cluster suite (needs Docker, kind, kubectl, helm)"

images:
	REGISTRY=$(REGISTRY) TAG=$(TAG) docker buildx bake $(BAKE_FLAGS)

image-operator image-worker: image-%:
	REGISTRY=$(REGISTRY) TAG=$(TAG) docker buildx bake $(BAKE_FLAGS) $*

crd:
	cargo run --quiet --bin crdgen

# scripts/test runs the chart tests first, so `make test` runs each test once.
test:
	bash scripts/test

test-chart:
	$(CHART)/tests/run.sh

e2e-kind:
	e2e/kind/run.sh
