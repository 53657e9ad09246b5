# syntax=docker/dockerfile:1.7
# tributary-worker: the ingestion engine (Kafka / Event Hubs -> Delta Lake).
#
#   docker buildx bake worker          (from the repository root; see docker-bake.hcl)
#   docker build -f docker/worker.Dockerfile -t tributary-worker:dev .
#
# The runtime image is distroless: no shell, no package manager, user 65532 (nonroot).

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
# librdkafka is built from source by rdkafka-sys's configure script: a C toolchain, perl and
# pkg-config; OpenSSL's headers for SASL_SSL (Event Hubs); zlib's for compressed batches.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential perl pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
# zlib is not in the distroless image: link it statically. OpenSSL 3 is (libssl3), so it stays
# a shared library and gets the runtime image's security updates.
ENV LIBZ_SYS_STATIC=1 \
    CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0
WORKDIR /src
COPY . .
RUN --mount=type=cache,id=tributary-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=tributary-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=tributary-target-worker,target=/src/target,sharing=locked \
    cargo build --release --locked -p tributary-worker --bin tributary-worker \
 && install -D -m 0755 target/release/tributary-worker /out/tributary-worker
RUN sh docker/check-runtime-libs.sh /out/tributary-worker

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="tributary-worker" \
      org.opencontainers.image.description="Tributary ingestion worker: Kafka / Event Hubs -> Delta Lake, exactly once" \
      org.opencontainers.image.source="https://github.com/tributary-dev/tributary" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/tributary-worker /usr/local/bin/tributary-worker
USER 65532:65532
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/tributary-worker"]
CMD ["--help"]
