/**
 * One dependency `/readyz` asks about (store, audit sink, keys, issuers). A check answers `undefined` when
 * the dependency can serve, or a short operator-facing reason (no secrets, no addresses) when it cannot.
 */
export interface ReadinessCheck {
  readonly name: string;
  check(): Promise<string | undefined> | string | undefined;
}

export interface ReadinessReport {
  readonly ready: boolean;
  /** Each check's answer: `ok` or why not. */
  readonly checks: Readonly<Record<string, string>>;
}

/** A check that does not answer in time counts as failing: a probe must never hang on a stuck dependency. */
const CHECK_TIMEOUT_MS = 1_000;

export async function runReadinessChecks(checks: readonly ReadinessCheck[]): Promise<ReadinessReport> {
  const answers = await Promise.all(
    checks.map(async (entry) => {
      let timer: NodeJS.Timeout | undefined;
      try {
        const timeout = new Promise<string>((done) => {
          timer = setTimeout(() => done('no answer in time'), CHECK_TIMEOUT_MS);
          timer.unref();
        });
        const answer = await Promise.race([Promise.resolve(entry.check()), timeout]);
        return [entry.name, answer ?? 'ok'] as const;
      } catch {
        return [entry.name, 'check failed'] as const;
      } finally {
        clearTimeout(timer);
      }
    }),
  );
  return { ready: answers.every(([, answer]) => answer === 'ok'), checks: Object.fromEntries(answers) };
}
