// errno numbers to their names (EPERM, EBUSY, ...), and the error every failed call throws.
import { constants } from 'node:os';

const names = new Map<number, string>();
// Where two names share a number, the first listed is the one Linux documents.
for (const preferred of ['EAGAIN', 'EDEADLK', 'EOPNOTSUPP']) {
  const n = (constants.errno as Record<string, number>)[preferred];
  if (n !== undefined) names.set(n, preferred);
}
for (const [name, n] of Object.entries(constants.errno as Record<string, number>))
  if (!names.has(n)) names.set(n, name);

export function errnoName(errno: number): string {
  return names.get(errno) ?? `errno ${errno}`;
}

export function errnoNumber(name: string): number {
  const n = (constants.errno as Record<string, number>)[name];
  if (n === undefined) throw new Error(`unknown errno name ${name}`);
  return n;
}

/** A failed system call: `VFIO_DEVICE_BIND_IOMMUFD on /dev/vfio/devices/vfio0: EPERM`. */
export class SysError extends Error {
  override readonly name: string = 'SysError';
  readonly code: string;
  /** The fix named in parentheses after the errno, if any (the message holds it too). */
  readonly hint: string | undefined;
  constructor(
    readonly call: string,
    readonly target: string,
    readonly errno: number,
    hint?: string,
  ) {
    super(`${call} on ${target}: ${errnoName(errno)}${hint ? ` (${hint})` : ''}`);
    this.code = errnoName(errno);
    this.hint = hint || undefined;
  }
}
