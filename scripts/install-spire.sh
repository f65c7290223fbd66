#!/usr/bin/env bash
# Builds the SPIRE server and agent that test/interop runs against, into .tools/spire/bin (git-ignored).
# From source through the Go module proxy, the only way to get SPIRE here. Needs Go >= 1.26.6
# (v1.15.3's go.mod) and a C compiler: the sqlite3 datastore is cgo (mattn/go-sqlite3).
set -euo pipefail
cd "$(dirname "$0")/.."

version=v1.15.3
tools="$PWD/.tools/spire"
bin="$tools/bin"

installed() {
  local tool
  for tool in spire-server spire-agent; do
    [[ -x "$bin/$tool" ]] || return 1
    [[ "$("$bin/$tool" --version 2>&1)" == "${version#v}" ]] || return 1
  done
}

if installed; then
  echo "install-spire: SPIRE $version already in $bin"
  exit 0
fi

# Go's official tarball installs outside the default PATH of a minimal environment.
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "install-spire: go not found (need Go >= 1.26.6)" >&2; exit 1; }
start=$SECONDS
echo "install-spire: building SPIRE $version with $(go version); a cold build takes several minutes"
# GOTOOLCHAIN=local: an older Go must fail here, not try to download a toolchain.
# -buildvcs=false: the source sits inside Tessera's git work tree, whose status is not SPIRE's.
export CGO_ENABLED=1 GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:-} -buildvcs=false"

# Not `go install ...@$version`: that needs the proxy's version list (for deprecation notices), and our
# proxy refuses lists (403). Fetch the exact version instead, verified against the checksum database as usual.
dir=$(go mod download -json "github.com/spiffe/spire@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[[ -d "$dir" ]] || { echo "install-spire: go mod download gave no source dir" >&2; exit 1; }

# A fixed path keeps the build cache warm across runs (compile actions key on the source dir).
src="$tools/src"
rm -rf "$src"
mkdir -p "$tools"
cp -R "$dir" "$src"
chmod -R u+w "$src"

# The proxy also refuses github.com/Keyfactor/ejbca-go-client-sdk's source (403), needed only by the
# ejbca UpstreamAuthority built-in, which Tessera never configures: drop that one built-in.
catalog="$src/pkg/server/catalog/upstreamauthority.go"
sed -i -e '/"github.com\/spiffe\/spire\/pkg\/server\/plugin\/upstreamauthority\/ejbca"$/d' \
  -e '/^[[:space:]]*ejbca\.BuiltIn(),$/d' "$catalog"
if grep -q ejbca "$catalog"; then
  echo "install-spire: could not drop the ejbca built-in from $catalog" >&2
  exit 1
fi

# gittag is what SPIRE's Makefile sets (without the v); otherwise --version says "1.15.3-dev-unk".
(cd "$src" && GOBIN="$bin" go install -ldflags "-X github.com/spiffe/spire/pkg/common/version.gittag=${version#v}" \
  ./cmd/spire-server ./cmd/spire-agent)

installed || { echo "install-spire: the built binaries do not report ${version#v}" >&2; exit 1; }
echo "install-spire: SPIRE $version built in $((SECONDS - start)) s"
