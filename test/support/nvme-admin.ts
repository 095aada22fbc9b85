// A minimal NVMe admin-queue driver for lab tests, speaking to the controller only through a
// device ring (as a guest would through MMIO) with its queues in guest RAM (DMA).
import { createHash } from 'node:crypto';
import type { RingClient } from '../../src/ring/client.js';

const REG = { CAP: 0x0, CC: 0x14, CSTS: 0x1c, AQA: 0x24, ASQ: 0x28, ACQ: 0x30 } as const;
const ENTRIES = 16;

export interface AdminQueues {
  /** Guest RAM as bytes, and the GPA its first byte is at. */
  ram: Uint8Array;
  ramGpa: bigint;
  sqGpa: bigint;
  cqGpa: bigint;
}

export class NvmeAdmin {
  #tail = 0;
  #head = 0;
  #phase = 1;
  #cid = 0;
  readonly stride: number;

  constructor(
    readonly c: RingClient,
    readonly q: AdminQueues,
  ) {
    this.stride = 4 << Number((c.barRead64(0, REG.CAP) >> 32n) & 0xfn);
  }

  #at(gpa: bigint): number {
    return Number(gpa - this.q.ramGpa);
  }

  #waitReady(ready: boolean, ms = 10_000): void {
    const until = Date.now() + ms;
    while (((this.c.barRead(0, REG.CSTS, 4) & 1) === 1) !== ready) {
      if (Date.now() > until)
        throw new Error(`NVMe CSTS.RDY did not become ${ready ? 1 : 0} within ${ms} ms`);
    }
  }

  /** Reset the controller and bring it up with the admin queues at sqGpa/cqGpa. */
  enable(): void {
    const cmd = this.c.cfgRead(0x4, 2);
    this.c.cfgWrite(0x4, 2, cmd | 0x6); // memory space + bus master
    this.c.barWrite(0, REG.CC, 4, 0);
    this.#waitReady(false);
    this.q.ram.fill(0, this.#at(this.q.sqGpa), this.#at(this.q.sqGpa) + ENTRIES * 64);
    this.q.ram.fill(0, this.#at(this.q.cqGpa), this.#at(this.q.cqGpa) + ENTRIES * 16);
    this.c.barWrite(0, REG.AQA, 4, ((ENTRIES - 1) << 16) | (ENTRIES - 1));
    this.c.barWrite64(0, REG.ASQ, this.q.sqGpa);
    this.c.barWrite64(0, REG.ACQ, this.q.cqGpa);
    this.c.barWrite(0, REG.CC, 4, (4 << 20) | (6 << 16) | 1); // IOCQES 16 B, IOSQES 64 B, EN
    this.#waitReady(true);
    this.#tail = this.#head = 0;
    this.#phase = 1;
  }

  /** Identify Controller (CNS 1) into the 4 KiB at IOVA `prp1`; returns the completion status field. */
  identifyController(prp1: bigint, ms = 10_000): number {
    return this.admin(0x06, { prp1, cdw10: 1 }, ms); // CNS 1: controller
  }

  /** One admin command: fills an SQ entry, rings SQ0's doorbell, waits for its completion; returns the status field. */
  admin(
    opcode: number,
    f: { nsid?: number; prp1?: bigint; prp2?: bigint; cdw10?: number; cdw11?: number },
    ms = 10_000,
  ): number {
    const cid = ++this.#cid & 0xffff;
    const sqe = new DataView(
      this.q.ram.buffer,
      this.q.ram.byteOffset + this.#at(this.q.sqGpa) + this.#tail * 64,
      64,
    );
    fillSqe(sqe, opcode, cid, f);
    this.#tail = (this.#tail + 1) % ENTRIES;
    this.c.barWrite(0, 0x1000, 4, this.#tail); // SQ0 tail doorbell
    const cqe = new DataView(
      this.q.ram.buffer,
      this.q.ram.byteOffset + this.#at(this.q.cqGpa) + this.#head * 16,
      16,
    );
    const dw3 = waitCqe(cqe, this.#phase, cid, ms);
    this.#head = (this.#head + 1) % ENTRIES;
    if (this.#head === 0) this.#phase ^= 1;
    this.c.barWrite(0, 0x1000 + this.stride, 4, this.#head); // CQ0 head doorbell
    return dw3 >>> 17;
  }

  /**
   * Create I/O queue pair 1 (polled, no interrupt) with its CQ at `cqGpa` and SQ at `sqGpa`,
   * and read `bytes` from namespace `nsid` at byte offset `offset` into guest RAM at `bufGpa`,
   * in 128 KiB commands whose PRP lists go at `prpGpa` (a 4 KiB page).
   */
  readBlocks(a: {
    nsid: number;
    offset: bigint;
    bytes: number;
    bufGpa: bigint;
    cqGpa: bigint;
    sqGpa: bigint;
    prpGpa: bigint;
  }): void {
    const N = ENTRIES,
      PAGE = 4096,
      CHUNK = 32 * PAGE,
      LBA = 512;
    this.q.ram.fill(0, this.#at(a.cqGpa), this.#at(a.cqGpa) + N * 16);
    check(
      this.admin(0x05, { prp1: a.cqGpa, cdw10: ((N - 1) << 16) | 1, cdw11: 1 }),
      'Create I/O CQ',
    ); // PC=1, no IEN
    check(
      this.admin(0x01, { prp1: a.sqGpa, cdw10: ((N - 1) << 16) | 1, cdw11: (1 << 16) | 1 }),
      'Create I/O SQ',
    ); // CQID 1, PC
    let tail = 0,
      head = 0,
      phase = 1,
      cid = 0;
    const prp = new DataView(this.q.ram.buffer, this.q.ram.byteOffset + this.#at(a.prpGpa), PAGE);
    for (let done = 0; done < a.bytes; done += CHUNK) {
      const len = Math.min(CHUNK, a.bytes - done),
        pages = Math.ceil(len / PAGE),
        buf = a.bufGpa + BigInt(done);
      for (let i = 1; i < pages; i++) prp.setBigUint64((i - 1) * 8, buf + BigInt(i * PAGE), true);
      const prp2 = pages === 2 ? buf + BigInt(PAGE) : pages > 2 ? a.prpGpa : 0n;
      const lba = (a.offset + BigInt(done)) / BigInt(LBA);
      cid = (cid + 1) & 0xffff;
      const sqe = new DataView(
        this.q.ram.buffer,
        this.q.ram.byteOffset + this.#at(a.sqGpa) + tail * 64,
        64,
      );
      fillSqe(sqe, 0x02, cid, {
        nsid: a.nsid,
        prp1: buf,
        prp2,
        cdw10: Number(lba & 0xffffffffn),
        cdw11: Number(lba >> 32n),
        cdw12: len / LBA - 1,
      });
      tail = (tail + 1) % N;
      this.c.barWrite(0, 0x1000 + 2 * this.stride, 4, tail); // SQ1 tail doorbell
      const cqe = new DataView(
        this.q.ram.buffer,
        this.q.ram.byteOffset + this.#at(a.cqGpa) + head * 16,
        16,
      );
      check(waitCqe(cqe, phase, cid, 10_000) >>> 17, `Read at byte ${a.offset + BigInt(done)}`);
      head = (head + 1) % N;
      if (head === 0) phase ^= 1;
      this.c.barWrite(0, 0x1000 + 3 * this.stride, 4, head); // CQ1 head doorbell
    }
    check(this.admin(0x00, { cdw10: 1 }), 'Delete I/O SQ');
    check(this.admin(0x04, { cdw10: 1 }), 'Delete I/O CQ');
  }
}

function check(status: number, what: string): void {
  if (status !== 0) throw new Error(`NVMe ${what} failed with status 0x${status.toString(16)}`);
}

function fillSqe(
  sqe: DataView,
  opcode: number,
  cid: number,
  f: {
    nsid?: number;
    prp1?: bigint;
    prp2?: bigint;
    cdw10?: number;
    cdw11?: number;
    cdw12?: number;
  },
): void {
  for (let i = 0; i < 64; i += 4) sqe.setUint32(i, 0, true);
  sqe.setUint32(0, opcode | (cid << 16), true);
  sqe.setUint32(4, f.nsid ?? 0, true);
  sqe.setBigUint64(24, f.prp1 ?? 0n, true);
  sqe.setBigUint64(32, f.prp2 ?? 0n, true);
  sqe.setUint32(40, f.cdw10 ?? 0, true);
  sqe.setUint32(44, f.cdw11 ?? 0, true);
  sqe.setUint32(48, f.cdw12 ?? 0, true);
}

/** Wait for the completion queue entry's phase bit; returns its DW3 after checking the command id. */
function waitCqe(cqe: DataView, phase: number, cid: number, ms: number): number {
  const until = Date.now() + ms;
  while (((cqe.getUint32(12, true) >>> 16) & 1) !== phase) {
    if (Date.now() > until)
      throw new Error(`no NVMe completion for command ${cid} within ${ms} ms`);
  }
  const dw3 = cqe.getUint32(12, true);
  if ((dw3 & 0xffff) !== cid)
    throw new Error(`completion for command ${dw3 & 0xffff}, expected ${cid}`);
  return dw3;
}

/** The model number (bytes 24..63) of an Identify Controller page. */
export const modelNumber = (page: Uint8Array): string =>
  Buffer.from(page.subarray(24, 64)).toString('latin1').trim();

/** The md5 of a data buffer, as the guest's md5sum prints it. */
export const md5 = (b: Uint8Array): string => createHash('md5').update(b).digest('hex');
