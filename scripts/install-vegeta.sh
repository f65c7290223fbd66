#!/usr/bin/env bash
# Builds the load generator `npm run bench` drives, vegeta, into .tools/vegeta/bin (git-ignored), from the
# Go module proxy. vegeta rather than a Node client: it costs the server's core nothing (it runs pinned
# to the other one), it can hold a constant open-loop rate (latency at half of peak without coordinated
# omission) as well as a fixed concurrency (peak), and it records every request's latency in nanoseconds.
set -euo pipefail
cd "$(dirname "$0")/.."

version=v12.13.0
bin="$PWD/.tools/vegeta/bin"

command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "install-vegeta: go not found" >&2; exit 1; }
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:-} -buildvcs=false"

if [[ -x "$bin/vegeta" ]] && "$bin/vegeta" -version 2>/dev/null | grep -q "Version: $version"; then
  echo "install-vegeta: vegeta $version already in $bin"
  exit 0
fi
start=$SECONDS
# The exact version, checked against the checksum database, built where the module cache holds it.
dir=$(go mod download -json "github.com/tsenart/vegeta/v12@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[[ -d "$dir" ]] || { echo "install-vegeta: go mod download gave no source dir" >&2; exit 1; }
mkdir -p "$bin"
(cd "$dir" && go build -trimpath -ldflags "-s -w -X main.Version=$version" -o "$bin/vegeta.new" .)
mv "$bin/vegeta.new" "$bin/vegeta"
echo "install-vegeta: vegeta $version built in $((SECONDS - start)) s"
