// A piscina task: make one kernel map call (see src/dma/map-offload.ts) and answer with data.
import { SysError } from '../native/errno.js';
import * as iommufd from '../native/iommufd.js';
import * as vfio from '../native/vfio.js';
import type { KernelMapCall, KernelMapResult } from '../src/dma/map-offload.js';

export default function mapTask(call: KernelMapCall): KernelMapResult {
  const t = { fd: call.fd, path: call.path };
  const t0 = performance.now();
  try {
    switch (call.op) {
      case 'IOMMU_IOAS_MAP_FILE':
        iommufd.ioasMapFile(t, call.ioas, call.memfd, call.offset, call.length, call.iova);
        break;
      case 'IOMMU_IOAS_MAP':
        iommufd.ioasMap(t, call.ioas, call.va, call.length, call.iova);
        break;
      case 'VFIO_IOMMU_MAP_DMA':
        vfio.mapDma(t, call.va, call.iova, call.length);
        break;
    }
  } catch (e) {
    if (e instanceof SysError) return { ok: false, errno: e.errno, message: e.message };
    return { ok: false, errno: 0, message: e instanceof Error ? e.message : String(e) };
  }
  return { ok: true, ms: performance.now() - t0 };
}
