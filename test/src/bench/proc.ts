/**
 * CPU time and resident memory of a process and its descendants (a `--workers` server is a primary
 * and its workers), read from /proc. Linux only; elsewhere they read as 0 and the table says n/a.
 */
import { readdirSync, readFileSync } from 'node:fs';

const TICKS_PER_SECOND = 100; // USER_HZ, 100 on every Linux architecture the bench runs on

interface Stat {
  readonly ppid: number;
  /** utime + stime, seconds. */
  readonly cpu: number;
}

function stat(pid: number): Stat | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: fields are counted after its last ')'.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return { ppid: Number(fields[1]), cpu: (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND };
  } catch {
    return undefined;
  }
}

/** `pid` and every live descendant. */
export function processTree(pid: number): number[] {
  let all: { pid: number; ppid: number }[];
  try {
    all = readdirSync('/proc')
      .filter((name) => /^\d+$/.test(name))
      .map((name) => ({ pid: Number(name), ppid: stat(Number(name))?.ppid ?? -1 }));
  } catch {
    return [pid];
  }
  const tree = [pid];
  for (let index = 0; index < tree.length; index++) for (const entry of all) if (entry.ppid === tree[index]) tree.push(entry.pid);
  return tree;
}

/** CPU seconds (user + system) used so far by `pid` and its descendants. */
export function cpuSeconds(pid: number): number {
  return processTree(pid).reduce((sum, member) => sum + (stat(member)?.cpu ?? 0), 0);
}

/** Resident set size, MiB, of `pid` and its descendants. */
export function rssMiB(pid: number): number {
  let kib = 0;
  for (const member of processTree(pid)) {
    try {
      const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${member}/status`, 'utf8'));
      kib += Number(match?.[1] ?? 0);
    } catch {
      // gone meanwhile
    }
  }
  return kib / 1024;
}

/** CPU used by a process between construction and the last sample, sampled while it lives. */
export class CpuMeter {
  private readonly start: number;
  private last: number;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly pid: number) {
    this.start = cpuSeconds(pid);
    this.last = this.start;
    // A short-lived process is gone before anyone asks: sample as it runs.
    this.timer = setInterval(() => this.sample(), 100);
    this.timer.unref();
  }

  private sample(): void {
    const now = cpuSeconds(this.pid);
    if (now > 0) this.last = now;
  }

  /** CPU seconds used so far. */
  used(): number {
    this.sample();
    return this.last - this.start;
  }

  /** Stops sampling; the share of one core used over `wallSeconds`. */
  sharePerCore(wallSeconds: number): number {
    clearInterval(this.timer);
    return wallSeconds > 0 ? (this.last - this.start) / wallSeconds : 0;
  }
}
