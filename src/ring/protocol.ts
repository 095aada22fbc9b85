// The device ring's shared-memory layout: a header, fixed 64-byte request slots, one "free"
// word per slot, and a bulk data area (one block per slot). Both sides index the same
// Int32Array (ringWords) with these constants.
import koffi from 'koffi';

/**
 * Header words (Int32 indexes). Words written by producers and words written by the consumer
 * sit on separate 64-byte cache lines, so neither side's writes evict the other's. They are
 * plain numeric constants, not an object's fields: the hot paths index with them on every
 * request, and V8 folds an imported constant where it loads an object's field (measured: ~10 ns
 * per request, both sides together).
 */
// line 0: read-mostly
export const H_MAGIC = 0;
export const H_CAPACITY = 1;
export const H_BULK_BYTES = 2;
export const H_STATE = 3; // RING_STATE
export const H_EPOCH = 4; // bumped by each consumer that attaches (a restarted worker)
export const H_ATTENTION = 5; // bumped by whoever posts a message to the consumer's thread (see attentionSignal)
// line 1: producers
export const H_TAIL = 16; // next ticket a producer claims
export const H_DOORBELL = 17; // bumped by a producer that finds the consumer sleeping; the consumer waits on it
export const H_FULL_WAITERS = 18; // producers waiting for a free slot
export const H_FULL_WAITS = 19; // times a producer slept on a full ring (back-pressure; metrics)
// line 2: the consumer, written per request
export const H_HEAD = 32; // next ticket the consumer serves
export const H_TAKEN = 33; // ticket+1 of the request the consumer has taken (stored before its handler runs)
// line 3: the consumer, written only around sleeps (producers read it on every publish)
export const H_SLEEPING = 48; // 1 while the consumer is (about to be) waiting on DOORBELL
export const HEADER_BYTES = 256;
export const RING_MAGIC = 0x56464952; // "RIFV"
export const RING_STATE = { OPEN: 0, CLOSED: 1 } as const;

/** Slot words, relative to the slot's first word. */
export const S_SEQ = 0; // ticket t's request: published at t+1, completed at t+2 (initially the slot index)
export const S_OP = 1;
export const S_INDEX = 2; // BAR index for BAR ops
export const S_SIZE = 3;
export const S_OFF_LO = 4;
export const S_OFF_HI = 5;
export const S_STATUS = 6;
export const S_ID = 7; // caller's request id, echoed back
export const S_WAITER = 8; // 1 while the producer waits on SEQ
export const S_DATA = 12; // 16 bytes of inline data (words 12..15)
export const SLOT_BYTES = 64;
export const SLOT_WORDS = SLOT_BYTES / 4;
export const INLINE_BYTES = 16;

export const OP = {
  NOP: 0,
  CFG_READ: 1,
  CFG_WRITE: 2,
  BAR_READ: 3,
  BAR_WRITE: 4,
} as const;
export type Op = (typeof OP)[keyof typeof OP];

/** Completion status: 0 is success, negatives name what was wrong with the request. */
export const STATUS = {
  OK: 0,
  BAD_OP: -1,
  BAD_BAR: -2,
  OUT_OF_RANGE: -3,
  BAD_WIDTH: -4,
  MISALIGNED: -5,
  IO_ERROR: -6, // the device call failed; the errno is in DATA word 0
  NOT_READY: -7, // the device is not set up yet (or is being restarted)
  // A worker died while handling the request: its effect on the device is unknown (it may have
  // happened), and it was not replayed. Set by the next server on the ring (see H_TAKEN).
  WORKER_DIED: -8,
  // The device has failed: its worker kept failing (or is stuck in a kernel call) and its
  // supervisor stopped restarting it. Completed at once by the coordinator, never by the device.
  DEVICE_FAILED: -9,
} as const;

const STATUS_TEXT: Record<number, string> = {
  [STATUS.BAD_OP]: 'unknown operation',
  [STATUS.BAD_BAR]: 'BAR index is not an implemented memory BAR',
  [STATUS.OUT_OF_RANGE]: 'offset/size outside the region',
  [STATUS.BAD_WIDTH]: 'unsupported access width',
  [STATUS.MISALIGNED]: 'access not naturally aligned',
  [STATUS.IO_ERROR]: 'device I/O failed',
  [STATUS.NOT_READY]: 'device not ready',
  [STATUS.WORKER_DIED]:
    'lost: the device worker died while handling it; effect unknown, not replayed',
  [STATUS.DEVICE_FAILED]:
    'the device has failed (its worker kept failing or is stuck); remove and add it again',
};
export const statusText = (s: number): string => STATUS_TEXT[s] ?? (s === 0 ? 'ok' : `status ${s}`);
export const statusName = (s: number): string =>
  Object.entries(STATUS).find(([, v]) => v === s)?.[0] ?? `STATUS_${s}`;

export interface RingGeometry {
  capacity: number;
  bulkBytes: number;
}

/**
 * Free words, one per slot (in their own cache lines after the slots): the ticket that may claim
 * the slot next. A producer releases its slot by storing ticket+capacity there, after reading its
 * result. Only producers touch these lines, so a release does not pull the slot's line back from
 * the consumer (who polls the next slot's line, not this one). Initially slot i's word is i.
 */
export const freeWord = (g: RingGeometry, slot: number): number =>
  (HEADER_BYTES + g.capacity * SLOT_BYTES) / 4 + slot;
const freeBytes = (g: RingGeometry): number => Math.ceil((g.capacity * 4) / 64) * 64;

const latencyByte = (g: RingGeometry): number =>
  HEADER_BYTES + g.capacity * SLOT_BYTES + freeBytes(g) + g.capacity * g.bulkBytes;

export function ringBytes(g: RingGeometry): number {
  return latencyByte(g) + LAT_BYTES;
}

/**
 * Request latency as producers see it (publish to completion), sampled 1 in LAT_SAMPLE_MASK+1
 * tickets and pre-bucketed here, after the bulk area, by Atomics.add: the metrics read it at
 * scrape time (src/metrics/ring-latency.ts), so the hot path makes no call into prom-client.
 * Per class (BAR 0-5, config space, other ops): LAT_BUCKETS counts (bucket k holds latencies
 * in (2^(k-1), 2^k] µs; the last is +Inf), then the sampled latencies' sum in ns as two words
 * (low, high: a producer whose add carries out of the low word bumps the high one).
 */
export const LAT_SAMPLE_MASK = 63; // 1 in 64: at 1 in 16 the metrics bench measured 0.92-0.93 of the ring's throughput
export const LAT_BUCKETS = 16;
/** Upper bounds of the finite buckets, in µs: 1, 2, 4, ... 16384. */
export const LAT_BOUNDS_US: readonly number[] = Array.from(
  { length: LAT_BUCKETS - 1 },
  (_, k) => 2 ** k,
);
export const LAT_CLASSES = 8;
export const LAT_CONFIG = 6;
export const LAT_OTHER = 7;
export const LAT_STRIDE = LAT_BUCKETS + 2;
const LAT_BYTES = Math.ceil((LAT_CLASSES * LAT_STRIDE * 4) / 64) * 64;
/** Word index (in ringWords) of the latency area's first class. */
export const latencyWord = (g: RingGeometry): number => latencyByte(g) / 4;

/**
 * A SharedArrayBuffer's memory is only 16-byte aligned, so a ring laid out from byte 0 would put
 * most slots across two cache lines and the header's "separate" lines on shared ones. The ring
 * is laid out from the first 64-byte boundary in its buffer instead; the buffer's last word
 * records that byte offset (0, 16, 32 or 48). Every view of a ring goes through ringWords/ringU8.
 */
export const RING_ALIGN = 64;

/** A new ring in a fresh SharedArrayBuffer. `capacity` must be a power of two ≥ 4. */
export function createRingBuffer(
  g: RingGeometry = { capacity: 64, bulkBytes: 4096 },
): SharedArrayBuffer {
  if (g.capacity < 4 || (g.capacity & (g.capacity - 1)) !== 0)
    throw new RangeError(`ring capacity ${g.capacity} must be a power of two ≥ 4`);
  if (g.bulkBytes % 8 !== 0)
    throw new RangeError(`ring bulk size ${g.bulkBytes} must be a multiple of 8`);
  const sab = new SharedArrayBuffer(ringBytes(g) + RING_ALIGN);
  const base =
    (RING_ALIGN - Number((koffi.address(new Uint8Array(sab)) as bigint) % BigInt(RING_ALIGN))) %
    RING_ALIGN;
  new Int32Array(sab)[sab.byteLength / 4 - 1] = base;
  const h = ringWords(sab);
  h[H_CAPACITY] = g.capacity;
  h[H_BULK_BYTES] = g.bulkBytes;
  for (let i = 0; i < g.capacity; i++) {
    h[slotWord(i) + S_SEQ] = i;
    h[freeWord(g, i)] = i;
  }
  Atomics.store(h, H_MAGIC, RING_MAGIC);
  return sab;
}

/** Byte offset of the ring (its header) in its buffer. */
export function ringOffset(sab: SharedArrayBuffer): number {
  const base =
    sab.byteLength >= RING_ALIGN + HEADER_BYTES ? new Int32Array(sab)[sab.byteLength / 4 - 1]! : -1;
  if (base < 0 || base >= RING_ALIGN || base % 16 !== 0)
    throw new Error('not a device ring (bad alignment word)');
  return base;
}

/** The ring's words: index with H_* and slotWord(i) + S_*. */
export function ringWords(sab: SharedArrayBuffer): Int32Array {
  return new Int32Array(sab, ringOffset(sab), (sab.byteLength - RING_ALIGN) / 4);
}

/** The ring's bytes: index with bulkOffset() and (slotWord(i) + S_DATA) * 4. */
export function ringU8(sab: SharedArrayBuffer): Uint8Array {
  return new Uint8Array(sab, ringOffset(sab), sab.byteLength - RING_ALIGN);
}

export function ringGeometry(sab: SharedArrayBuffer): RingGeometry {
  const h = ringWords(sab);
  if (Atomics.load(h, H_MAGIC) !== RING_MAGIC) throw new Error('not a device ring (bad magic)');
  return { capacity: h[H_CAPACITY]!, bulkBytes: h[H_BULK_BYTES]! };
}

/**
 * A function to call after posting a message to the thread that serves this ring: a server busy
 * with requests turns its event loop only now and then, and this bump makes it turn it within
 * ~100 µs (it checks the word every 64 requests or 256 idle polls). A sleeping server needs no
 * bump: its event loop is free.
 */
export function attentionSignal(sab: SharedArrayBuffer): () => void {
  const h = ringWords(sab);
  return () => {
    Atomics.add(h, H_ATTENTION, 1);
  };
}

export const slotWord = (slot: number): number => HEADER_BYTES / 4 + slot * SLOT_WORDS;
export const bulkOffset = (g: RingGeometry, slot: number): number =>
  HEADER_BYTES + g.capacity * SLOT_BYTES + freeBytes(g) + slot * g.bulkBytes;
