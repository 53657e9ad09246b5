#!/usr/bin/env bash
# Builds the real Kubernetes parts of the e2e/cluster suite from their Go modules, at the
# versions pinned in kube/go.mod and helm/go.mod beside this script:
#
#   etcd, kube-apiserver, kube-controller-manager, kubectl   (Kubernetes v1.33.5, etcd v3.5.21)
#   helm                                                     (v3.18.6, built on client-go 1.33)
#
# into ${TRIBUTARY_K8S_BIN:-$HOME/.cache/tributary/k8s-v1.33.5/bin}, with the Go module and
# build caches under $HOME/.cache/tributary/go. Skips everything when the binaries are there.
# No kube-scheduler: the suite's process kubelet binds pods to its node itself.
#
# Cold, on 2 cores: see e2e/cluster/README.md for the measured time.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K8S_VERSION=v1.33.5
HELM_VERSION=v3.18.6
bin="${TRIBUTARY_K8S_BIN:-$HOME/.cache/tributary/k8s-$K8S_VERSION/bin}"
tools=(etcd kube-apiserver kube-controller-manager kubectl helm)

missing=()
for tool in "${tools[@]}"; do
  [ -x "$bin/$tool" ] || missing+=("$tool")
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

go_bin="$(command -v go || true)"
[ -n "$go_bin" ] || go_bin=/usr/local/go/bin/go
if [ ! -x "$go_bin" ]; then
  echo "e2e/cluster: Go 1.24 or newer is needed to build ${missing[*]} (not found on PATH or at /usr/local/go)" >&2
  exit 1
fi

export GOMODCACHE="$HOME/.cache/tributary/go/mod"
export GOCACHE="$HOME/.cache/tributary/go/build"
# go.sum pins every module; the local toolchain builds (no toolchain download).
export GOFLAGS="-mod=readonly -trimpath"
export GOTOOLCHAIN=local
mkdir -p "$bin" "$GOMODCACHE" "$GOCACHE"
staging="$(mktemp -d "$bin/.build.XXXXXX")"
trap 'rm -rf "$staging"' EXIT

started=$SECONDS
echo "e2e/cluster: building ${missing[*]} into $bin (Kubernetes $K8S_VERSION, helm $HELM_VERSION; cold: 8 to 10 minutes on 2 idle cores)"

# Version stamps: the API server reports gitVersion (helm checks the chart's kubeVersion
# against it), kubectl and helm print theirs.
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

need_kube=0
for tool in etcd kube-apiserver kube-controller-manager kubectl; do
  [ -x "$bin/$tool" ] || need_kube=1
done
if [ "$need_kube" = 1 ]; then
  (cd "$here/kube" && nice -n 5 "$go_bin" build -ldflags="$k8s_ldflags" -o "$staging/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl \
    go.etcd.io/etcd/server/v3)
  # `go build` names a .../server/v3 main package "server".
  mv "$staging/server" "$staging/etcd"
fi
if [ ! -x "$bin/helm" ]; then
  (cd "$here/helm" && nice -n 5 "$go_bin" build \
    -ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    -o "$staging/helm" helm.sh/helm/v3/cmd/helm)
fi
for tool in "$staging"/*; do
  mv -f "$tool" "$bin/"
done
echo "e2e/cluster: built ${missing[*]} in $((SECONDS - started)) s"
