// A vfio-user client's region reads and writes, as requests on the device's ring (any thread):
// config space (region 7) in naturally aligned pieces of up to 4 bytes, each through the
// runtime's config emulation; a BAR in aligned pieces of up to 8 bytes, or in the ring's bulk
// blocks when longer. A piece the worker answers with a non-OK status ends the access with
// the errno it means (RegionIoError), the pieces before it done.
import * as vfio from '../../native/vfio.js';
import { OP, type RingClient, STATUS } from '../threads.js';

const CONFIG = vfio.VFIO_C.VFIO_PCI_CONFIG_REGION_INDEX;

export class RegionIoError extends Error {
  constructor(
    readonly errnoName: 'EINVAL' | 'EIO' | 'EAGAIN' | 'ENODEV',
    message: string,
  ) {
    super(message);
    this.name = 'RegionIoError';
  }
}

const ERRNO_OF: Record<number, RegionIoError['errnoName']> = {
  [STATUS.BAD_OP]: 'EINVAL',
  [STATUS.BAD_BAR]: 'EINVAL',
  [STATUS.OUT_OF_RANGE]: 'EINVAL',
  [STATUS.BAD_WIDTH]: 'EINVAL',
  [STATUS.MISALIGNED]: 'EINVAL',
  [STATUS.IO_ERROR]: 'EIO',
  [STATUS.NOT_READY]: 'EAGAIN',
  [STATUS.WORKER_DIED]: 'EIO',
  [STATUS.DEVICE_FAILED]: 'ENODEV',
};

export class RingRegions {
  constructor(readonly ring: RingClient) {}

  read(index: number, offset: bigint, into: Uint8Array): void {
    this.#each(index, offset, into, false);
  }

  write(index: number, offset: bigint, data: Uint8Array): void {
    this.#each(index, offset, data, true);
  }

  #each(index: number, offset: bigint, buf: Uint8Array, write: boolean): void {
    const cfg = index === CONFIG;
    const base = Number(offset);
    const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    for (let p = 0; p < buf.length; ) {
      const at = base + p,
        left = buf.length - p;
      const n = cfg ? 0 : Math.min(left, this.ring.geometry.bulkBytes);
      if (n > 8) {
        // The worker takes any length over 8 at any alignment as one bulk access.
        this.#bulk(index, at, buf.subarray(p, p + n), write);
        p += n;
        continue;
      }
      const w = width(at, left, cfg ? 4 : 8);
      this.#piece(cfg, index, at, w, dv, p, write);
      p += w;
    }
  }

  #piece(
    cfg: boolean,
    index: number,
    at: number,
    w: number,
    dv: DataView,
    p: number,
    write: boolean,
  ): void {
    const op = cfg ? (write ? OP.CFG_WRITE : OP.CFG_READ) : write ? OP.BAR_WRITE : OP.BAR_READ;
    const lo = write ? readLo(dv, p, w) : 0;
    const hi = write && w === 8 ? dv.getInt32(p + 4, true) : 0;
    const status = this.ring.call(op, cfg ? 0 : index, at, w, lo, hi);
    if (status !== STATUS.OK) throw failed(status, index, at, w, write);
    if (write) return;
    if (w === 1) dv.setUint8(p, this.ring.lo & 0xff);
    else if (w === 2) dv.setUint16(p, this.ring.lo & 0xffff, true);
    else {
      dv.setInt32(p, this.ring.lo, true);
      if (w === 8) dv.setInt32(p + 4, this.ring.hi, true);
    }
  }

  #bulk(index: number, at: number, part: Uint8Array, write: boolean): void {
    try {
      if (write) this.ring.barWriteBulk(index, at, part);
      else this.ring.barReadBulk(index, at, part);
    } catch (e) {
      const status = (e as { status?: number }).status;
      if (typeof status !== 'number') throw e;
      throw failed(status, index, at, part.length, write);
    }
  }
}

/** The widest naturally aligned access (1, 2, 4 or up to `max`) that fits at `at`. */
function width(at: number, left: number, max: number): number {
  // No array literal here: this runs once per piece of every trapped access.
  for (let w = max; w > 1; w >>= 1) if (w <= left && at % w === 0) return w;
  return 1;
}

function readLo(dv: DataView, p: number, w: number): number {
  return w === 1 ? dv.getUint8(p) : w === 2 ? dv.getUint16(p, true) : dv.getInt32(p, true);
}

function failed(
  status: number,
  index: number,
  at: number,
  w: number,
  write: boolean,
): RegionIoError {
  const what = `${write ? 'write' : 'read'} of ${w} byte(s) at ${index === CONFIG ? 'config' : `BAR ${index}`}+0x${at.toString(16)}`;
  return new RegionIoError(ERRNO_OF[status] ?? 'EIO', `${what}: ring status ${status}`);
}
