// An owned file descriptor with the path it names in errors; close() is idempotent.
import { readlinkSync } from 'node:fs';
import { close, open, type Target } from '../native/libc.js';
import { InvalidSpecError, NotFoundError } from './errors.js';

export class OwnedFd implements Target {
  #fd: number;
  constructor(
    fd: number,
    readonly path: string,
  ) {
    this.#fd = fd;
  }

  static open(path: string, flags: number): OwnedFd {
    return new OwnedFd(open(path, flags), path);
  }

  /**
   * Take over fd `fd`, which this process inherited from whoever opened `opened` (a privileged
   * helper). `what` names it in errors; `expect`, when given, must match what the fd points at.
   */
  static inherited(fd: number, what: string, opened: string, expect?: RegExp): OwnedFd {
    if (!Number.isInteger(fd) || fd < 0)
      throw new InvalidSpecError(`${what} must be a non-negative integer, got ${fd}`);
    let link: string;
    try {
      link = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      throw new NotFoundError(
        `${what} ${fd} is not open in this process: pass the number of an fd opened on ${opened} and inherited by this process`,
        'fd',
        String(fd),
      );
    }
    if (expect && !expect.test(link))
      throw new InvalidSpecError(`${what} ${fd} is ${link}, not ${opened}`);
    return new OwnedFd(fd, `${link} (fd ${fd})`);
  }

  get fd(): number {
    if (this.#fd < 0) throw new Error(`${this.path}: file descriptor already closed`);
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    close(fd);
  }
}
