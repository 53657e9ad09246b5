// Builds both Tributary images: `docker buildx bake` (or `make images`).
//
//   docker buildx bake                                   # both, tagged ghcr.io/tributary-dev/*:0.1.0
//   TAG=dev docker buildx bake --load                    # into the local Docker engine
//   REGISTRY=registry.example.com/data TAG=0.1.0 PLATFORMS=linux/amd64,linux/arm64 \
//     docker buildx bake --push
//
// Build context: the repository root (the Cargo workspace); each Dockerfile has its own
// docker/<name>.Dockerfile.dockerignore.

variable "REGISTRY" {
  default = "ghcr.io/tributary-dev"
}

variable "TAG" {
  default = "0.1.0"
}

// Comma-separated; empty builds for the builder's own platform (what --load needs).
variable "PLATFORMS" {
  default = ""
}

group "default" {
  targets = ["operator", "worker"]
}

target "_common" {
  context   = "."
  platforms = compact(split(",", PLATFORMS))
  labels = {
    "org.opencontainers.image.version" = TAG
    "org.opencontainers.image.source"  = "https://github.com/tributary-dev/tributary"
  }
}

target "operator" {
  inherits   = ["_common"]
  dockerfile = "docker/operator.Dockerfile"
  tags       = ["${REGISTRY}/tributary-operator:${TAG}"]
}

target "worker" {
  inherits   = ["_common"]
  dockerfile = "docker/worker.Dockerfile"
  tags       = ["${REGISTRY}/tributary-worker:${TAG}"]
}
