#!/usr/bin/env bash
# Installs the Keycloak distribution the bench's Keycloak peer runs, into .tools/keycloak (git-ignored):
# the official Quarkus zip from Maven Central, checked against the sha1 Central publishes beside it, then
# `kc.sh build` once so the bench can `start --optimized` (no build-time re-augmentation inside the timing).
# Idempotent: a finished install (marker file with the version and build options) is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

version=26.7.3
tools="$PWD/.tools/keycloak"
home="$tools/keycloak-$version"
# Build-time options: must match what test/src/bench/peers/keycloak.ts starts with (`start --optimized`
# refuses to run if the runtime's build-time options differ from the build's).
build_options=(--db=dev-file --health-enabled=false --metrics-enabled=false)
marker="$home/.tessera-built"
java_home="${JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}"

if [[ -f "$marker" && "$(cat "$marker")" == "$version ${build_options[*]}" ]]; then
  echo "install-keycloak: Keycloak $version already built in $home"
  exit 0
fi

[[ -x "$java_home/bin/java" ]] || { echo "install-keycloak: no java at $java_home/bin/java (Keycloak 26.7 needs Java 21+)" >&2; exit 1; }
command -v unzip >/dev/null || { echo "install-keycloak: unzip not found" >&2; exit 1; }

base="https://repo.maven.apache.org/maven2/org/keycloak/keycloak-quarkus-dist/$version"
zip="$tools/keycloak-quarkus-dist-$version.zip"
mkdir -p "$tools"
start=$SECONDS

if [[ ! -f "$zip" ]]; then
  echo "install-keycloak: downloading $base/keycloak-quarkus-dist-$version.zip"
  # Into a .part file first so an interrupted download is never taken for a complete one.
  curl -fsSL --retry 3 -o "$zip.part" "$base/keycloak-quarkus-dist-$version.zip" \
    || { echo "install-keycloak: download of keycloak-quarkus-dist-$version.zip failed" >&2; exit 1; }
  mv "$zip.part" "$zip"
fi

expected=$(curl -fsSL --retry 3 "$base/keycloak-quarkus-dist-$version.zip.sha1" | tr -d '[:space:]' | cut -c1-40) \
  || { echo "install-keycloak: download of the .zip.sha1 failed" >&2; exit 1; }
actual=$(sha1sum "$zip" | cut -d' ' -f1)
if [[ "$expected" != "$actual" ]]; then
  rm -f "$zip"
  echo "install-keycloak: sha1 mismatch for $zip (Maven Central says $expected, file is $actual); deleted it" >&2
  exit 1
fi

# A fresh unpack: a half-built earlier attempt must not leave stale augmentation behind.
rm -rf "$home"
unzip -q "$zip" -d "$tools"
[[ -x "$home/bin/kc.sh" ]] || { echo "install-keycloak: $home/bin/kc.sh missing after unzip" >&2; exit 1; }

echo "install-keycloak: kc.sh build ${build_options[*]}"
JAVA_HOME="$java_home" "$home/bin/kc.sh" build "${build_options[@]}" >"$tools/build.log" 2>&1 \
  || { tail -n 20 "$tools/build.log" >&2; echo "install-keycloak: kc.sh build failed (log: $tools/build.log)" >&2; exit 1; }

echo "$version ${build_options[*]}" >"$marker"
echo "install-keycloak: Keycloak $version installed and built in $home in $((SECONDS - start)) s"
