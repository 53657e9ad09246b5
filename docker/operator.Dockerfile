# syntax=docker/dockerfile:1.7
# tributary-operator: the controller reconciling StreamingIngestion resources.
#
#   docker buildx bake operator        (from the repository root; see docker-bake.hcl)
#   docker build -f docker/operator.Dockerfile -t tributary-operator:dev .
#
# The runtime image is distroless: no shell, no package manager, user 65532 (nonroot).

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
# The operator is pure Rust (kube with rustls + ring): a C toolchain for ring is all it needs.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config \
 && rm -rf /var/lib/apt/lists/*
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0
WORKDIR /src
COPY . .
RUN --mount=type=cache,id=tributary-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=tributary-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=tributary-target-operator,target=/src/target,sharing=locked \
    cargo build --release --locked -p tributary-operator --bin tributary-operator \
 && install -D -m 0755 target/release/tributary-operator /out/tributary-operator
RUN sh docker/check-runtime-libs.sh /out/tributary-operator

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="tributary-operator" \
      org.opencontainers.image.description="Tributary operator: runs StreamingIngestion resources as Deployments, Jobs and CronJobs" \
      org.opencontainers.image.source="https://github.com/tributary-dev/tributary" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/tributary-operator /usr/local/bin/tributary-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/tributary-operator"]
CMD ["run"]
