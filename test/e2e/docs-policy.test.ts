import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';

const REPO = resolve(import.meta.dirname, '../..');
const CLI = join(REPO, 'core/dist/cli/main.js');
const DOC = 'docs/policy.md';
const doc = await readFile(join(REPO, DOC), 'utf8');

interface ExplainRun {
  readonly line: number;
  readonly config: string;
  readonly request: string;
  readonly output: string;
}

/** `<!-- explain: CONFIG -->`, then a ```json request block, then a ```text block with the printed output. */
function explainRuns(): ExplainRun[] {
  const lines = doc.split('\n');
  const runs: ExplainRun[] = [];
  lines.forEach((line, index) => {
    const marker = /^<!-- explain: (\S+) -->$/.exec(line.trim());
    if (!marker) return;
    const block = (start: number, fence: string) => {
      if (lines[start] !== fence) throw new Error(`${DOC}:${start + 1}: expected ${fence}`);
      const end = lines.indexOf('```', start + 1);
      return { body: `${lines.slice(start + 1, end).join('\n')}\n`, next: end + 1 };
    };
    const request = block(index + 1, '```json');
    const output = block(request.next, '```text');
    runs.push({ line: index + 1, config: marker[1]!, request: request.body, output: output.body });
  });
  return runs;
}

const runs = explainRuns();

/** The example configs name their production key path through TESSERA_KEY_DIR. */
let keyDir = '';
beforeAll(async () => {
  keyDir = await mkdtemp(join(tmpdir(), 'tessera-docs-policy-'));
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  await writeFile(join(keyDir, 'signing-2025-06.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
});

function explain(config: string, requestFile: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(process.execPath, [CLI, 'policy', 'explain', '--config', join(REPO, config), '--request', requestFile], { env: { ...process.env, TESSERA_KEY_DIR: keyDir } }, (error, stdout, stderr) =>
      done({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe(`${DOC}: the explain runs it shows are what the CLI prints`, () => {
  it('has the worked examples: SPIFFE to OAuth, cloud to SPIFFE, and the agent chain (allowed and refused)', () => {
    expect(runs.map((run) => run.config)).toEqual([
      'config/examples/spiffe-to-oauth.yaml',
      'config/examples/cloud-to-spiffe.yaml',
      'config/examples/agent-delegation.yaml',
      'config/examples/agent-delegation.yaml',
    ]);
  });

  it.each(runs.map((run) => [`${run.config} (line ${run.line})`, run] as const))('%s', async (_name, run) => {
    const requestFile = join(keyDir, `request-${run.line}.json`);
    await writeFile(requestFile, run.request);
    const { code, stdout, stderr } = await explain(run.config, requestFile);
    expect(stderr).toBe('');
    expect(stdout).toBe(run.output);
    expect(code).toBe(stdout.includes('\ndecision: allow ') ? 0 : 3);
  });
});

describe('tessera policy explain: usage', () => {
  it('refuses a malformed request file with exit 2, naming the field', async () => {
    const requestFile = join(keyDir, 'bad.json');
    await writeFile(requestFile, JSON.stringify({ client: { id: 'x' }, subject: { issuer: 'i' } }));
    const { code, stderr } = await explain('config/examples/agent-delegation.yaml', requestFile);
    expect(code).toBe(2);
    expect(stderr).toMatch(/subject\.subject/);
  });

  it('refuses an unsafe audience before any rule, as the token endpoint does', async () => {
    const run = runs[0]!;
    const requestFile = join(keyDir, 'unsafe-audience.json');
    await writeFile(requestFile, JSON.stringify({ ...(JSON.parse(run.request) as object), audience: 'https://api.example.test/\u0007' }));
    const { code, stdout } = await explain(run.config, requestFile);
    expect(code).toBe(3);
    expect(stdout).toContain('decision: deny invalid_target: audience syntax');
  });

  it('refuses a request file that is not JSON with exit 2', async () => {
    const requestFile = join(keyDir, 'not-json.json');
    await writeFile(requestFile, '{ nope');
    const { code, stderr } = await explain('config/examples/agent-delegation.yaml', requestFile);
    expect(code).toBe(2);
    expect(stderr).toMatch(/not JSON/);
  });
});
