import { describe, expect, it } from 'vitest';
import { splitDerSequences } from '../src/der.js';
import { structToJson } from '../src/struct.js';

describe('splitDerSequences', () => {
  it('splits short- and long-form SEQUENCEs', () => {
    const short = Buffer.from([0x30, 0x00]);
    const long = Buffer.concat([Buffer.from([0x30, 0x82, 0x01, 0x00]), Buffer.alloc(256, 1)]);
    expect(splitDerSequences(Buffer.concat([short, long, short]))).toEqual([short, long, short]);
    expect(splitDerSequences(Buffer.alloc(0))).toEqual([]);
  });

  it.each([
    ['not a SEQUENCE', [0x02, 0x01, 0x00]],
    ['truncated length', [0x30]],
    ['indefinite length (BER)', [0x30, 0x80, 0x00, 0x00]],
    ['length bytes missing', [0x30, 0x82, 0x01]],
    ['value shorter than its length', [0x30, 0x05, 0x01]],
    ['more than four length bytes', [0x30, 0x85, 0, 0, 0, 0, 1, 0]],
  ])('refuses %s', (_name, bytes) => {
    expect(() => splitDerSequences(Buffer.from(bytes))).toThrow();
  });
});

describe('structToJson', () => {
  it('converts every Value kind', () => {
    const struct = {
      fields: {
        s: { kind: 'stringValue', stringValue: 'x' },
        n: { kind: 'numberValue', numberValue: 1.5 },
        b: { kind: 'boolValue', boolValue: false },
        z: { kind: 'nullValue', nullValue: 'NULL_VALUE' },
        unset: {},
        l: { kind: 'listValue', listValue: { values: [{ kind: 'stringValue', stringValue: 'a' }] } },
        o: { kind: 'structValue', structValue: { fields: { k: { kind: 'numberValue', numberValue: 2 } } } },
      },
    };
    expect(structToJson(struct)).toEqual({ s: 'x', n: 1.5, b: false, z: null, unset: null, l: ['a'], o: { k: 2 } });
    expect(structToJson(null)).toEqual({});
  });

  it('keeps a __proto__ claim as a plain key', () => {
    // JSON.parse makes an own `__proto__` key, as protobuf map decoding can.
    const fields = JSON.parse('{"__proto__":{"kind":"stringValue","stringValue":"x"}}') as Record<string, object>;
    const json = structToJson({ fields });
    expect(Object.getPrototypeOf(json)).toBe(Object.prototype);
    expect(Object.keys(json)).toEqual(['__proto__']);
  });

  it('refuses absurd nesting', () => {
    let value: Record<string, unknown> = { kind: 'stringValue', stringValue: 'deep' };
    for (let i = 0; i < 40; i += 1) value = { kind: 'listValue', listValue: { values: [value] } };
    expect(() => structToJson({ fields: { deep: value } })).toThrow();
  });
});
