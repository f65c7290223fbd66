import type { Clock } from '@tessera/plugin-sdk';

export const systemClock: Clock = { now: () => new Date() };
