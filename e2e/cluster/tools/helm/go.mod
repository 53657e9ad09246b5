// Builds helm for the e2e/cluster suite: helm 3.18 is built against Kubernetes 1.33's client
// libraries, the release the suite's control plane runs.
module tributary.dev/e2e/cluster/tools/helm

go 1.24.0

require helm.sh/helm/v3 v3.18.6
