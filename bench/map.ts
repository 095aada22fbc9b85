// bench map (run it in the lab: `lab/run -- node dist/bench/main.js map`): mapping 256 MiB of
// memfd guest RAM for DMA through the runtime (GuestMemory over an IommufdContext with an NVMe
// attached: split, IOMMU_IOAS_MAP_FILE, bookkeeping) against C making the same ioctls, in the
// same guest run, interleaved (the emulated guest's timing drifts). Target: C / runtime ≥ 0.9.
import { execFileSync } from 'node:child_process';
import * as iommufd from '../native/iommufd.js';
import { memfdRegionSource } from '../src/dma/backend.js';
import { GuestMemory } from '../src/dma/guest-memory.js';
import { IommufdContext } from '../src/dma/iommufd-context.js';
import { MemfdRegion } from '../src/memory/memfd-region.js';
import { cdevOf, findFunctions } from '../src/platform/pci-sysfs.js';
import { compileC, median, round } from './support.js';

const MIB = 256,
  ROUNDS = 5,
  ALTERNATIONS = 3;

/** ROUNDS map/unmap cycles through the runtime; also the bare ioctl from this process. */
function runtimeRounds(
  bdf: string,
  ram: MemfdRegion,
  size: bigint,
  out: { map: number[]; unmap: number[]; bare: number[] },
): void {
  const ctx = IommufdContext.open('bench');
  const dev = ctx.attachPciDevice(bdf);
  const table = new GuestMemory();
  table.addBackend(ctx);
  // Warm the JS path: under emulation, cold interpreted code would dominate a single map.
  for (let i = 0; i < 200; i++)
    table.removeRegion(
      table.addRegion({ name: 'warm', gpa: 0n, size: 1n << 20n, memory: memfdRegionSource(ram) }),
    );
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = performance.now();
    const region = table.addRegion({ name: 'ram', gpa: 0n, size, memory: memfdRegionSource(ram) });
    const t1 = performance.now();
    table.removeRegion(region);
    out.map.push(t1 - t0);
    out.unmap.push(performance.now() - t1);
    const t2 = performance.now();
    iommufd.ioasMapFile(ctx.iommufd, ctx.ioasId!, ram.fd.fd, 0n, size, 0n);
    out.bare.push(performance.now() - t2);
    iommufd.ioasUnmap(ctx.iommufd, ctx.ioasId!, 0n, size);
  }
  dev.detach();
  ctx.close();
}

export function benchMap(): Record<string, number> {
  const nvme = findFunctions(0x1b36, 0x0010).filter((f) => f.driver === 'vfio-pci');
  if (nvme.length === 0)
    throw new Error(
      'bench map needs an NVMe bound to vfio-pci: run it in the lab (lab/run -- node dist/bench/main.js map)',
    );
  const bdf = nvme[0]!.bdf;
  const size = BigInt(MIB) << 20n;
  const ram = new MemfdRegion('bench-ram', Number(size));
  const c = compileC('map');
  const js = { map: [] as number[], unmap: [] as number[], bare: [] as number[] };
  const cMap: number[] = [],
    cUnmap: number[] = [];
  for (let k = 0; k < ALTERNATIONS; k++) {
    runtimeRounds(bdf, ram, size, js);
    // The C program binds the same device after the runtime let it go.
    const [m, u] = execFileSync(c, [cdevOf(bdf)!, String(MIB), String(ROUNDS)], {
      encoding: 'utf8',
    })
      .trim()
      .split(' ')
      .map(Number) as [number, number];
    cMap.push(m);
    cUnmap.push(u);
  }
  ram.close();
  const jm = median(js.map),
    ju = median(js.unmap),
    bare = median(js.bare),
    cm = median(cMap),
    cu = median(cUnmap);
  console.log(
    `map 256 MiB: runtime ${jm.toFixed(1)} ms (bare ioctl from node ${bare.toFixed(1)} ms), C ${cm.toFixed(1)} ms, C/runtime ${(cm / jm).toFixed(3)}; unmap: runtime ${ju.toFixed(1)} ms, C ${cu.toFixed(1)} ms`,
  );
  return {
    map256_runtime_ms: round(jm, 2),
    map256_bare_ioctl_ms: round(bare, 2),
    map256_c_ms: round(cm, 2),
    map256_ratio: round(cm / jm, 3),
    unmap256_runtime_ms: round(ju, 2),
    unmap256_c_ms: round(cu, 2),
  };
}
