/** A ```sh block of a Markdown guide, with the section it is in and the line right above its fence. */
export interface ShellBlock {
  /** 1-based line of the opening fence. */
  readonly line: number;
  /** The `## ` heading it sits under. */
  readonly section: string;
  /** Its commands: non-empty lines that are not comments. */
  readonly commands: readonly string[];
  /** The line above the fence, trimmed: where `<!-- tested: FILE -->` or `<!-- untested: why -->` goes. */
  readonly marker: string;
  /** The FILE of a `<!-- tested: FILE -->` marker. */
  readonly testedBy?: string;
}

/** Every ```sh block of `doc`, in order: the guides mark each with the test that runs its commands. */
export function shellBlocks(doc: string): ShellBlock[] {
  const lines = doc.split('\n');
  const blocks: ShellBlock[] = [];
  let section = '';
  lines.forEach((line, index) => {
    if (line.startsWith('## ')) section = line.slice(3);
    if (line.trim() !== '```sh') return;
    const end = lines.findIndex((candidate, at) => at > index && candidate.trim() === '```');
    const marker = (lines[index - 1] ?? '').trim();
    const tested = /^<!-- tested: (\S+) -->$/.exec(marker);
    blocks.push({
      line: index + 1,
      section,
      commands: lines.slice(index + 1, end).map((command) => command.trim()).filter((command) => command !== '' && !command.startsWith('#')),
      marker,
      ...(tested ? { testedBy: tested[1]! } : {}),
    });
  });
  return blocks;
}
