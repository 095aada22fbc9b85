// How an error becomes the API's answer: the status its kind carries (src/errors.ts,
// `statusCode`) and the body
//   {"error": {"status", "code", "message", "hint"?, ...the kind's fields}}
// read off the error itself (its code, its hint, its own data fields), with no list of classes
// here: a new kind answers with its status and fields with no change to this file.
import { SysError } from '../../native/errno.js';
import { ERR, statusOf, VfrError } from '../index.js';

/** The code of an answer for an error outside the taxonomy (a bug): status 500. */
export const INTERNAL_CODE = 'VFR_ERR_INTERNAL';

/** Keys the body sets itself; a kind's field of the same name (RingError.status, the ring's) stays out. */
const RESERVED = new Set(['status', 'code', 'message', 'hint', 'name', 'stack', 'cause']);

/** A field as JSON carries it: bigints (IOVAs) as hex strings, arrays and plain objects entry by entry. */
function jsonValue(v: unknown): unknown {
  if (typeof v === 'bigint') return `0x${v.toString(16)}`;
  if (Array.isArray(v)) return v.map(jsonValue);
  if (v !== null && typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype)
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, jsonValue(x)]));
  return v;
}

/** The kind's own data fields (resource, id, field, bdf, errno, step, ...); none for an error outside the taxonomy. */
function fieldsOf(e: Error): Record<string, unknown> {
  if (!(e instanceof VfrError) && !(e instanceof SysError)) return {};
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(e)) {
    if (RESERVED.has(k) || v === undefined || typeof v === 'function' || typeof v === 'symbol')
      continue;
    out[k] = jsonValue(v);
  }
  // A raw SysError's code is its errno name; the answer's code is the kind's.
  if (!(e instanceof VfrError)) out.errnoName = e.code;
  return out;
}

/** The answer's body for `e`; its `status` is the HTTP status to answer with. */
export function errorBody(e: unknown): { error: Record<string, unknown> & { status: number } } {
  const err = e instanceof Error ? e : new Error(String(e));
  const code =
    err instanceof VfrError ? err.code : err instanceof SysError ? ERR.KERNEL : INTERNAL_CODE;
  const hint = (err as { hint?: unknown }).hint;
  return {
    error: {
      status: statusOf(err),
      code,
      message: err.message,
      ...(typeof hint === 'string' && hint ? { hint } : {}),
      ...fieldsOf(err),
    },
  };
}
