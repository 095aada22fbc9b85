// A watchdog for tests that drive a child process through kernel calls that can block (VFIO
// cdev opens, device closes): a worker thread that, if not disarmed by `deadlineMs`, writes
// every thread's state, wait channel and kernel stack — of this process and of the child — to
// fd 2 with write(2) (a worker's process.stderr goes through the main thread, which may be the
// one stuck), then SIGKILLs the child. Run as root (the lab) for the kernel stacks.
import { Worker } from 'node:worker_threads';

const BODY = `
const { workerData: { pids, ctl, deadlineMs } } = require('node:worker_threads');
const fs = require('node:fs');
const read = (p) => { try { return fs.readFileSync(p, 'utf8').trim(); } catch (e) { return '(' + e.code + ')'; } };
if (Atomics.wait(ctl, 0, 0, deadlineMs) === 'timed-out') {
  let out = '\\nhang-watchdog: ' + deadlineMs + ' ms passed; threads of ' + pids.join(', ') + ':\\n';
  for (const pid of pids) {
    let tasks = [];
    try { tasks = fs.readdirSync('/proc/' + pid + '/task'); } catch { out += pid + ': gone\\n'; }
    for (const t of tasks) {
      const d = '/proc/' + pid + '/task/' + t + '/';
      const state = (/State:\\s+(.*)/.exec(read(d + 'status')) || [])[1] || '?';
      out += pid + '/' + t + ' ' + read(d + 'comm') + ' [' + state + '] wchan ' + read(d + 'wchan') + '\\n';
      const stack = read(d + 'stack');
      // Idle threads (an event loop's epoll, a futex) are one line; the rest get their stack.
      if (stack && !state.startsWith('R') && !/epoll|futex/.test(read(d + 'wchan'))) out += stack.split('\\n').slice(0, 12).map((l) => '    ' + l).join('\\n') + '\\n';
    }
  }
  fs.writeSync(2, out);
  try { process.kill(pids[pids.length - 1], 'SIGKILL'); } catch {}
  Atomics.store(ctl, 1, 1);
}
`;

export interface HangWatchdog {
  /** Stop watching (the child ended in time). */
  disarm(): Promise<void>;
  /** Did it fire? */
  fired(): boolean;
}

/** Watch this process and `childPid`; at `deadlineMs`, dump both and SIGKILL the child. */
export function watchForHang(childPid: number, deadlineMs: number): HangWatchdog {
  const ctl = new Int32Array(new SharedArrayBuffer(8));
  const w = new Worker(BODY, {
    eval: true,
    workerData: { pids: [process.pid, childPid], ctl, deadlineMs },
  });
  w.unref();
  const exited = new Promise((r) => w.once('exit', r));
  return {
    disarm: async () => {
      w.ref(); // keep the loop alive until it has gone
      Atomics.store(ctl, 0, 1);
      Atomics.notify(ctl, 0);
      await exited;
    },
    fired: () => Atomics.load(ctl, 1) === 1,
  };
}
