// A minimal NVMe admin-queue driver for lab tests, speaking to the controller only through a
// device ring (as a guest would through MMIO) with its queues in guest RAM (DMA).
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

  constructor(readonly c: RingClient, readonly q: AdminQueues) {
    this.stride = 4 << Number((c.barRead64(0, REG.CAP) >> 32n) & 0xfn);
  }

  #at(gpa: bigint): number { return Number(gpa - this.q.ramGpa); }

  #waitReady(ready: boolean, ms = 10_000): void {
    const until = Date.now() + ms;
    while (((this.c.barRead(0, REG.CSTS, 4) & 1) === 1) !== ready) {
      if (Date.now() > until) throw new Error(`NVMe CSTS.RDY did not become ${ready ? 1 : 0} within ${ms} ms`);
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
    const cid = ++this.#cid & 0xffff;
    const sqe = new DataView(this.q.ram.buffer, this.q.ram.byteOffset + this.#at(this.q.sqGpa) + this.#tail * 64, 64);
    for (let i = 0; i < 64; i += 4) sqe.setUint32(i, 0, true);
    sqe.setUint32(0, 0x06 | (cid << 16), true); // opcode Identify
    sqe.setBigUint64(24, prp1, true); // PRP1
    sqe.setUint32(40, 1, true); // CDW10: CNS = 1, controller
    this.#tail = (this.#tail + 1) % ENTRIES;
    this.c.barWrite(0, 0x1000, 4, this.#tail); // SQ0 tail doorbell
    const cqe = new DataView(this.q.ram.buffer, this.q.ram.byteOffset + this.#at(this.q.cqGpa) + this.#head * 16, 16);
    const until = Date.now() + ms;
    while (((cqe.getUint32(12, true) >>> 16) & 1) !== this.#phase) {
      if (Date.now() > until) throw new Error(`no NVMe completion for command ${cid} within ${ms} ms`);
    }
    const dw3 = cqe.getUint32(12, true);
    if ((dw3 & 0xffff) !== cid) throw new Error(`completion for command ${dw3 & 0xffff}, expected ${cid}`);
    this.#head = (this.#head + 1) % ENTRIES;
    if (this.#head === 0) this.#phase ^= 1;
    this.c.barWrite(0, 0x1000 + this.stride, 4, this.#head); // CQ0 head doorbell
    return dw3 >>> 17;
  }
}

/** The model number (bytes 24..63) of an Identify Controller page. */
export const modelNumber = (page: Uint8Array): string => Buffer.from(page.subarray(24, 64)).toString('latin1').trim();
