import { z } from 'zod';

export const adminConfigSchema = z
  .object({
    clients: z
      .array(z.string().min(1))
      .default([])
      .describe('Clients (private_key_jwt) that may manage kill-switch entries at {issuer}/admin/revocations; empty: no admin API'),
  })
  .strict()
  .default({ clients: [] })
  .describe('The admin API on the public listener: only for the listed clients, each request authenticated by a fresh client assertion');
