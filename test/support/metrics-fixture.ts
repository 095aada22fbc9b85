// A metrics source over synthetic devices (the real DeviceHandle, ring and shared memory; a
// synthetic worker instead of VFIO) and a fake DMA backend with real DmaStats: what the
// exporter's unit tests and the scrape-time bench read; `sample` reads a value out of the text.
import { DeviceHandle } from '../../src/coordinator/device-handle.js';
import { DmaStats } from '../../src/dma/dma-stats.js';
import type { MetricsBackend, MetricsDevice, MetricsSource } from '../../src/metrics/exporter.js';
import { FakeBackend } from './fake-dma-backend.js';
import { supportUrl } from './threads.js';

export interface Fixture {
  source: MetricsSource;
  devices: MetricsDevice[];
  handles: DeviceHandle[];
  backend: FakeBackend & { stats: DmaStats };
  close(): Promise<void>;
}

export async function metricsFixture(n: number): Promise<Fixture> {
  const backend = Object.assign(new FakeBackend('ctx0'), { stats: new DmaStats() });
  const handles: DeviceHandle[] = [];
  try {
    for (let i = 0; i < n; i++)
      handles.push(
        await DeviceHandle.start({
          name: `dev${i}`,
          device: { fd: -1, path: 'synthetic' },
          workerUrl: supportUrl('synthetic-device-worker.js'),
          ring: { capacity: 16, bulkBytes: 64 },
        }),
      );
  } catch (e) {
    for (const h of handles) await h.shutdown();
    throw e;
  }
  const devices: MetricsDevice[] = handles.map((handle, i) => ({
    port: `dev${i}`,
    bdf: `0000:00:0${i % 10}.0`,
    backend,
    handle,
  }));
  return {
    source: { devices: () => devices, backends: (): MetricsBackend[] => [backend] },
    devices,
    handles,
    backend,
    close: async () => {
      for (const h of handles) await h.shutdown();
    },
  };
}

/** The value of the sample `name{labels}` in a text exposition (labels matched as a subset). */
export function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const want = Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`));
    if (want) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return Number.NaN;
}
