#!/usr/bin/env bash
# Audits the runtime dependency tree (npm audit --omit=dev) and fails on any high or critical advisory.
# If the registry's advisory service cannot be reached (some mirrors answer the bulk endpoint with 405),
# that is said loudly and the audit is skipped: an unreachable service is not a clean bill of health.
set -uo pipefail
cd "$(dirname "$0")/.."
report=$(npm audit --omit=dev --audit-level=high --json 2>/dev/null)
node - "$report" <<'JS'
const report = JSON.parse(process.argv[2] || '{}');
const counts = report.metadata?.vulnerabilities;
if (!counts) {
  const why = report.statusCode ? `HTTP ${report.statusCode}` : (report.message || report.error?.summary || 'no report');
  console.log(`audit-deps: advisory service unavailable (${why}); runtime dependencies were NOT audited in this run`);
  process.exit(0);
}
const serious = (counts.high ?? 0) + (counts.critical ?? 0);
console.log(`audit-deps: runtime dependencies: ${counts.critical ?? 0} critical, ${counts.high ?? 0} high, ${counts.moderate ?? 0} moderate, ${counts.low ?? 0} low`);
if (serious > 0) {
  for (const [name, entry] of Object.entries(report.vulnerabilities ?? {})) {
    if (entry.severity === 'high' || entry.severity === 'critical') console.log(`  ${entry.severity}: ${name} ${entry.range ?? ''}`);
  }
  process.exit(1);
}
JS
