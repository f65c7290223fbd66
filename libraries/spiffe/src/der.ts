/**
 * Splits the concatenated DER certificates the Workload API sends (`x509_svid`, `bundle`,
 * `federated_bundles`) into one buffer per certificate. Only the outer SEQUENCE framing is read;
 * the certificates themselves are left for the TLS stack to parse.
 */

/** Splits concatenated DER SEQUENCEs. Throws when the framing is broken. */
export function splitDerSequences(bytes: Uint8Array): Buffer[] {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const parts: Buffer[] = [];
  let offset = 0;
  while (offset < buffer.length) {
    if (buffer[offset] !== 0x30) throw new Error('not a DER SEQUENCE');
    const first = buffer[offset + 1];
    if (first === undefined) throw new Error('truncated DER length');
    let length: number;
    let header: number;
    if (first < 0x80) {
      length = first;
      header = 2;
    } else {
      // Long form; 0x80 (indefinite length) is BER, not DER. Four length bytes cover 4 GiB.
      const count = first & 0x7f;
      if (count === 0 || count > 4 || offset + 2 + count > buffer.length) throw new Error('bad DER length');
      length = buffer.readUIntBE(offset + 2, count);
      header = 2 + count;
    }
    const end = offset + header + length;
    if (end > buffer.length) throw new Error('truncated DER value');
    parts.push(buffer.subarray(offset, end));
    offset = end;
  }
  return parts;
}
