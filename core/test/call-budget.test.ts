import { describe, expect, it } from 'vitest';
import { TemporarilyUnavailable } from '@tessera/plugin-sdk';
import { CallBudget } from '../src/oauth/call-budget.js';

describe('CallBudget', () => {
  it('aborts its signal with a TimeoutError and rejects with the refusal once the time runs out', async () => {
    const budget = new CallBudget(20, () => new TemporarilyUnavailable('too slow'));
    await expect(budget.expired).rejects.toBeInstanceOf(TemporarilyUnavailable);
    expect(budget.signal.aborted).toBe(true);
    expect((budget.signal.reason as DOMException).name).toBe('TimeoutError');
  });

  it('never fires once ended: no abort, no refusal built', async () => {
    let built = 0;
    const budget = new CallBudget(20, () => {
      built += 1;
      return new Error('too slow');
    });
    budget.end();
    const outcome = await Promise.race([budget.expired.then(() => 'settled', () => 'rejected'), new Promise((done) => setTimeout(() => done('quiet'), 80))]);
    expect(outcome).toBe('quiet');
    expect(budget.signal.aborted).toBe(false);
    expect(built).toBe(0);
  });
});
