// Guest RAM stand-in: a memfd of a given size, mapped shared into this process.

import { SysError } from '../../native/errno.js';
import { C, check, errno, MAP_FAILED, raw, view } from '../../native/libc.js';
import { OwnedFd } from '../fd.js';

export class MemfdRegion {
  readonly fd: OwnedFd;
  readonly hva: bigint;
  #bytes: Uint8Array | undefined;

  constructor(
    readonly name: string,
    readonly size: number,
  ) {
    const fd = check(raw.memfd_create(name, C.MFD_CLOEXEC), 'memfd_create', name);
    this.fd = new OwnedFd(fd, `memfd:${name}`);
    check(raw.ftruncate(fd, size), 'ftruncate', this.fd.path);
    const hva = raw.mmap(null, size, C.PROT_READ | C.PROT_WRITE, C.MAP_SHARED, fd, 0);
    if (hva === MAP_FAILED || hva === 0n) {
      const e = new SysError('mmap', this.fd.path, errno());
      this.fd.close();
      throw e;
    }
    this.hva = hva;
  }

  /** The mapping as bytes (no copy); valid until close(). */
  get bytes(): Uint8Array {
    return (this.#bytes ??= new Uint8Array(view(this.hva, this.size)));
  }

  close(): void {
    this.#bytes = undefined;
    raw.munmap(this.hva, this.size);
    this.fd.close();
  }
}
