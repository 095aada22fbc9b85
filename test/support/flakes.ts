// Known lab signatures and the flake ledger. A retry is a claim that the failure was not ours:
// only a failure matching a row of lab/signatures.tsv is retried, each retry prints
// `FLAKE <id> (<where>)` and appends that line to the ledger (FLAKE_LEDGER, else .flake-ledger
// at the repository's root; lab/run writes there too), and the runs end with the counts.
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GUEST_PANIC } from './guest-console.js';
import { repoRoot } from './paths.js';

export type SignatureScope = 'lab-boot' | 'lab-kernel' | 'lab-qemu' | 'guest' | 'qemu-guest';

export interface LabSignature {
  id: string;
  scope: SignatureScope;
  match: RegExp;
  why: string;
  shown: string;
}

export const SIGNATURES_FILE = join(repoRoot, 'lab/signatures.tsv');

/** The rows of lab/signatures.tsv. */
export function labSignatures(file = SIGNATURES_FILE): LabSignature[] {
  const rows = readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() && !l.startsWith('#'));
  return rows.slice(1).map((l, i) => {
    const [id, scope, match, why, shown] = l.split('\t');
    if (!id || !scope || !match || !why || !shown)
      throw new Error(`${file}: row ${i + 1} needs 5 tab-separated columns: ${l}`);
    return { id, scope: scope as SignatureScope, match: new RegExp(match, 'm'), why, shown };
  });
}

/**
 * The signature of `scope` that `text` (how a run ended: a summary line and the console's tail)
 * matches, if any. Never one when the text shows a guest kernel's death (GUEST_PANIC): that is a
 * failure, whatever ended the run after it.
 */
export function matchSignature(scope: SignatureScope, text: string): LabSignature | undefined {
  if (GUEST_PANIC.test(text)) return undefined;
  return labSignatures().find((s) => s.scope === scope && s.match.test(text));
}

export const ledgerPath = (): string => process.env.FLAKE_LEDGER ?? join(repoRoot, '.flake-ledger');

/** Print and record one retry. */
export function recordFlake(id: string, where: string): void {
  const line = `FLAKE ${id} (${where})`;
  console.log(`    ${line}`);
  appendFileSync(ledgerPath(), `${line}\n`);
}

/** The ledger's lines (FLAKE <id> (<where>)), all of them or from line `from` on. */
export function ledgerLines(from = 0): string[] {
  const p = ledgerPath();
  if (!existsSync(p)) return [];
  return readFileSync(p, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('FLAKE '))
    .slice(from);
}

/** "N flakes (id: n, id: n)" for ledger lines. */
export function ledgerSummary(lines: string[]): string {
  const by = new Map<string, number>();
  for (const l of lines) {
    const id = l.split(' ')[1]!;
    by.set(id, (by.get(id) ?? 0) + 1);
  }
  const parts = [...by].map(([id, n]) => `${id}: ${n}`);
  return `${lines.length} flake${lines.length === 1 ? '' : 's'}${parts.length ? ` (${parts.join(', ')})` : ''}`;
}

/** How a boot ended, as test/support/guest-boot.ts's BootEnd says it. */
export interface EndLike {
  kind: string;
  detail: string;
  text: string;
}

/** A boot ended by a known lab signature: booted again by withLabRetries. */
export class LabRetry extends Error {
  constructor(
    readonly signature: LabSignature,
    readonly end: EndLike,
  ) {
    super(`${signature.id}: ${end.detail}`);
  }
}

/** How many boots of one kind at most while each ends with a known lab signature. */
export const LAB_BOOTS = 2;

/** `boot` again while it throws a LabRetry, LAB_BOOTS in all; each retry is a FLAKE line. */
export async function withLabRetries<T>(what: string, boot: () => Promise<T>): Promise<T> {
  for (let n = 1; ; n++) {
    try {
      return await boot();
    } catch (e) {
      if (!(e instanceof LabRetry) || n === LAB_BOOTS) throw e;
      recordFlake(e.signature.id, `${what}, boot ${n} of ${LAB_BOOTS}`);
      for (const line of e.end.text.split('\n').slice(-8)) console.log(`      | ${line}`);
    }
  }
}

/**
 * Nothing if the boot passed; a LabRetry if it ended with a known lab signature of `scopes`;
 * else an Error with how it ended, the console's tail and `dump` (vCPU and device states).
 */
export function checkEnd(end: EndLike, scopes: SignatureScope[], dump = ''): void {
  if (end.kind === 'pass') return;
  for (const scope of scopes) {
    const sig = matchSignature(scope, end.text);
    if (sig) throw new LabRetry(sig, end);
  }
  throw new Error(`${end.text}${dump ? `\n${dump}` : ''}`);
}
