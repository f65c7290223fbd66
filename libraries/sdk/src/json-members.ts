/**
 * True when the (already valid) JSON text names a member twice in any one object, at any depth. JSON
 * parsers disagree on which duplicate wins (JSON.parse keeps the last, others the first or refuse), so a
 * document with one means different things to different readers: RFC 7515 §4 and RFC 7519 §4 allow
 * refusing it, and a security boundary should. Linear in the text; the caller parses the text separately.
 */
export function hasDuplicateMembers(json: string): boolean {
  // One set of names per open object; null for an open array.
  const open: (Set<string> | null)[] = [];
  let expectName = false;
  for (let index = 0; index < json.length; index++) {
    const char = json[index];
    if (char === '"') {
      let end = index + 1;
      while (json[end] !== '"') end += json[end] === '\\' ? 2 : 1;
      const names = open.at(-1);
      if (expectName && names) {
        // Only escaped names need decoding (`"\u0061"` and `"a"` are one name); the rest are their own text.
        const raw = json.slice(index + 1, end);
        const name = raw.includes('\\') ? (JSON.parse(json.slice(index, end + 1)) as string) : raw;
        if (names.has(name)) return true;
        names.add(name);
        expectName = false;
      }
      index = end;
    } else if (char === '{') {
      open.push(new Set());
      expectName = true;
    } else if (char === '[') {
      open.push(null);
      expectName = false;
    } else if (char === '}' || char === ']') {
      open.pop();
      expectName = false;
    } else if (char === ',') {
      expectName = open.at(-1) !== null && open.length > 0;
    }
  }
  return false;
}
