/**
 * google.protobuf.Struct as proto-loader decodes it (`oneofs: true`: each Value names its
 * member in `kind`), turned into plain JSON. Well-known types keep protobufjs's camelCase names.
 */

interface ProtoValue {
  kind?: string;
  nullValue?: unknown;
  numberValue?: number;
  stringValue?: string;
  boolValue?: boolean;
  structValue?: ProtoStruct | null;
  listValue?: { values?: ProtoValue[] } | null;
}

interface ProtoStruct {
  fields?: Record<string, ProtoValue>;
}

// Claims from a local agent are trusted input, but a bound keeps a hostile one from blowing the stack.
const MAX_DEPTH = 32;

/** Converts a decoded Struct to a JSON object. Throws when it nests deeper than 32 levels. */
export function structToJson(struct: ProtoStruct | null | undefined, depth = 0): Record<string, unknown> {
  if (depth > MAX_DEPTH) throw new Error('Struct nests too deep');
  const result: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(struct?.fields ?? {})) {
    // defineProperty: a claim named `__proto__` must stay a plain key.
    Object.defineProperty(result, key, { value: valueToJson(value, depth + 1), enumerable: true, writable: true, configurable: true });
  }
  return result;
}

function valueToJson(value: ProtoValue, depth: number): unknown {
  if (depth > MAX_DEPTH) throw new Error('Struct nests too deep');
  switch (value.kind) {
    case 'numberValue':
      return value.numberValue;
    case 'stringValue':
      return value.stringValue;
    case 'boolValue':
      return value.boolValue;
    case 'structValue':
      return structToJson(value.structValue, depth);
    case 'listValue':
      return (value.listValue?.values ?? []).map((item) => valueToJson(item, depth + 1));
    default:
      return null;
  }
}
