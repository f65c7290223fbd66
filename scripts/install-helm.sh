#!/usr/bin/env bash
# Builds helm and the chart's manifest validator into .tools/helm/bin (git-ignored), for test/deploy.
# Both from source through the Go module proxy, the only way to get them here. helm v4.3.2's go.mod
# asks for Go >= 1.26.0; the validator is deploy/helm/validate, pinned to one Kubernetes release.
set -euo pipefail
cd "$(dirname "$0")/.."

version=v4.3.2
tools="$PWD/.tools/helm"
bin="$tools/bin"

command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "install-helm: go not found (need Go >= 1.26.0)" >&2; exit 1; }
# GOTOOLCHAIN=local: an older Go must fail here, not try to download a toolchain.
# -buildvcs=false: the sources sit in the module cache or inside Tessera's work tree, neither is helm's repo.
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:-} -buildvcs=false"

helm_installed() {
  [[ -x "$bin/helm" ]] && [[ "$("$bin/helm" version --template '{{.Version}}' 2>/dev/null)" == "$version" ]]
}

if helm_installed; then
  echo "install-helm: helm $version already in $bin"
else
  start=$SECONDS
  echo "install-helm: building helm $version with $(go version); a cold build takes a few minutes"
  # Not `go install ...@$version`: that needs the proxy's version list, which our proxy refuses.
  # Fetch the exact version, verified against the checksum database as usual, and build it where it
  # lies: the module cache path is fixed per version, so the build cache stays warm across runs.
  dir=$(go mod download -json "helm.sh/helm/v4@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [[ -d "$dir" ]] || { echo "install-helm: go mod download gave no source dir" >&2; exit 1; }
  mkdir -p "$bin"
  # The ldflags are those of helm's Makefile, so `helm version` names the release.
  (cd "$dir" && go build -trimpath -ldflags "-w -s -X helm.sh/helm/v4/internal/version.version=$version" \
    -o "$bin/helm.new" ./cmd/helm)
  mv "$bin/helm.new" "$bin/helm"
  helm_installed || { echo "install-helm: the built helm does not report $version" >&2; exit 1; }
  echo "install-helm: helm $version built in $((SECONDS - start)) s"
fi

# The validator is ours and small: always rebuilt (a no-op from the build cache when nothing changed),
# so an edit to it can never leave a stale binary behind.
start=$SECONDS
mkdir -p "$bin"
(cd deploy/helm/validate && go build -trimpath -o "$bin/k8s-validate.new" .)
mv "$bin/k8s-validate.new" "$bin/k8s-validate"
echo "install-helm: k8s-validate built in $((SECONDS - start)) s"
