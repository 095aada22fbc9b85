// bench ffi: the per-call cost of the bindings on the MMIO hot path (pread/pwrite of 4 bytes
// through koffi on a memfd standing in for a BAR), against C doing the same calls.
import { execFileSync } from 'node:child_process';
import { raw } from '../native/libc.js';
import { MemfdRegion } from '../src/memory/memfd-region.js';
import { compileC, median, round } from './support.js';

export function benchFfi(n = 200_000, rounds = 9): Record<string, number> {
  const bar = new MemfdRegion('bench-bar', 16384);
  const fd = bar.fd.fd;
  const buf = Buffer.alloc(4);
  const rd: number[] = [],
    wr: number[] = [];
  for (let i = 0; i < 20_000; i++) raw.pread(fd, buf, 4, 8); // warm up
  for (let k = 0; k < rounds; k++) {
    let t = process.hrtime.bigint();
    for (let i = 0; i < n; i++)
      if (raw.pread(fd, buf, 4, 8 + (i & 0xff) * 4) !== 4) throw new Error('pread failed');
    const t1 = process.hrtime.bigint();
    for (let i = 0; i < n; i++)
      if (raw.pwrite(fd, buf, 4, 8 + (i & 0xff) * 4) !== 4) throw new Error('pwrite failed');
    const t2 = process.hrtime.bigint();
    rd.push(Number(t1 - t) / n);
    wr.push(Number(t2 - t1) / n);
    t = t2;
  }
  bar.close();
  const [cRead, cWrite] = execFileSync(compileC('pio'), [String(n), String(rounds)], {
    encoding: 'utf8',
  })
    .trim()
    .split(' ')
    .map(Number) as [number, number];
  const jsRead = median(rd),
    jsWrite = median(wr);
  console.log(
    `pread  4 B: koffi ${jsRead.toFixed(0)} ns, C ${cRead.toFixed(0)} ns, ratio ${(jsRead / cRead).toFixed(2)}`,
  );
  console.log(
    `pwrite 4 B: koffi ${jsWrite.toFixed(0)} ns, C ${cWrite.toFixed(0)} ns, ratio ${(jsWrite / cWrite).toFixed(2)}`,
  );
  return {
    pread_ns: round(jsRead, 1),
    pread_c_ns: round(cRead, 1),
    pread_ratio: round(jsRead / cRead, 2),
    pwrite_ns: round(jsWrite, 1),
    pwrite_c_ns: round(cWrite, 1),
    pwrite_ratio: round(jsWrite / cWrite, 2),
  };
}
