// An owned file descriptor with the path it names in errors; close() is idempotent.
import { type Target, close, open } from '../native/libc.js';

export class OwnedFd implements Target {
  #fd: number;
  constructor(fd: number, readonly path: string) { this.#fd = fd; }

  static open(path: string, flags: number): OwnedFd {
    return new OwnedFd(open(path, flags), path);
  }

  get fd(): number {
    if (this.#fd < 0) throw new Error(`${this.path}: file descriptor already closed`);
    return this.#fd;
  }

  get closed(): boolean { return this.#fd < 0; }

  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    close(fd);
  }
}
