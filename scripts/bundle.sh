#!/usr/bin/env bash
# Production bundle: the broker and every built-in plugin as npm would publish them (npm pack of the built
# workspaces), installed with production dependencies only. OUTDIR/node_modules/.bin/tessera is the broker.
# Run `npm run build` first. Used by the Dockerfile and by test/e2e/bundle.test.ts.
set -euo pipefail

usage='usage: scripts/bundle.sh OUTDIR   (OUTDIR must be empty or absent)'
[[ $# -eq 1 ]] || { echo "$usage" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
[[ -z $(ls -A "$out") ]] || { echo "bundle: $out is not empty" >&2; exit 1; }

# The SDK and the SPIFFE library come as dependencies of the plugins; the testkit and the workload client
# are not part of a broker.
workspaces=(core libraries/sdk libraries/spiffe $(cd "$root" && printf '%s ' plugins/*))
for workspace in "${workspaces[@]}"; do
  [[ -f $root/$workspace/dist/index.js ]] || { echo "bundle: $workspace is not built (npm run build)" >&2; exit 1; }
done

# Tarballs stay in the bundle (a few hundred KB): package.json and package-lock.json then name files that
# exist, so `npm ci --omit=dev` inside OUTDIR reproduces node_modules exactly.
mkdir "$out/packages"
(cd "$root" && npm pack --json --loglevel=error --pack-destination "$out/packages" "${workspaces[@]/#/--workspace=}") >"$out/packages/pack.json"

node - "$out" <<'EOF'
const { readFileSync, rmSync, writeFileSync } = require('node:fs');
const out = process.argv[2];
const packed = JSON.parse(readFileSync(`${out}/packages/pack.json`, 'utf8'));
rmSync(`${out}/packages/pack.json`);
const dependencies = Object.fromEntries(packed.map((entry) => [entry.name, `file:packages/${entry.filename}`]));
const bundle = { name: 'tessera-bundle', version: '0.0.0', private: true, description: 'Tessera broker: production install', dependencies };
writeFileSync(`${out}/package.json`, `${JSON.stringify(bundle, null, 2)}\n`);
EOF

# Third-party packages resolve within the ranges the packages declare; install scripts are not needed.
(cd "$out" && npm install --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
echo "bundle: $out/node_modules/.bin/tessera"
