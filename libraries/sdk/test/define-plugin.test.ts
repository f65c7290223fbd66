import { describe, expect, expectTypeOf, it } from 'vitest';
import { z } from 'zod';
import {
  definePlugin,
  isPluginDefinition,
  token,
  tokens,
  type Clock,
  type KeyRing,
  type SubjectValidator,
  type Token,
  type TokenValue,
} from '../src/index.js';

describe('definePlugin', () => {
  it('types config from the schema and deps from the tokens', () => {
    definePlugin({
      name: 'typed',
      version: '1.0.0',
      apiVersion: '^1',
      config: z.object({ audience: z.string(), ttl: z.number().default(60) }),
      deps: { clock: tokens.clock, keys: tokens.keyRing },
      init({ config, deps }) {
        expectTypeOf(config).toEqualTypeOf<{ audience: string; ttl: number }>();
        expectTypeOf(deps.clock).toEqualTypeOf<Clock>();
        expectTypeOf(deps.keys).toEqualTypeOf<KeyRing>();
        return {};
      },
    });
  });

  it('brands the definition so any copy of the SDK recognises it', () => {
    const plugin = definePlugin({ name: 'ok', version: '1.0.0', apiVersion: '^1', config: z.object({}), deps: {}, init: () => ({}) });
    expect(isPluginDefinition(plugin)).toBe(true);
    expect(isPluginDefinition({ name: 'ok', version: '1.0.0', apiVersion: '^1', init: () => ({}) })).toBe(false);
    expect(Object.isFrozen(plugin)).toBe(true);
  });

  it.each([
    [{ name: 'Not_Kebab' }, /kebab-case/],
    [{ version: '' }, /version/],
    [{ apiVersion: '' }, /apiVersion/],
    [{ config: {} }, /zod schema/],
    [{ init: 'nope' }, /init/],
    [{ deps: { clock: 'tessera.clock' } }, /deps.clock/],
  ])('names the plugin and the problem: %o', (override, message) => {
    const base = { name: 'broken', version: '1.0.0', apiVersion: '^1', config: z.object({}), deps: {}, init: () => ({}) };
    expect(() => definePlugin({ ...base, ...override } as never)).toThrow(message);
  });
});

describe('DI tokens', () => {
  it('carry their type and are distinct symbols', () => {
    const a = token<SubjectValidator>('tessera.test');
    const b = token<SubjectValidator>('tessera.test');
    expect(typeof a).toBe('symbol');
    expect(a).not.toBe(b);
    expectTypeOf<TokenValue<typeof a>>().toEqualTypeOf<SubjectValidator>();
    expectTypeOf(tokens.clock).toEqualTypeOf<Token<Clock>>();
  });

  it('are unique across the SDK', () => {
    const all = Object.values(tokens);
    expect(new Set(all).size).toBe(all.length);
    expect(all.map((item) => item.description)).toEqual(Object.keys(tokens).map((key) => `tessera.${key}`));
  });
});
