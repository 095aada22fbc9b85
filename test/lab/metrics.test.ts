// A real Prometheus (Debian's package, started here on loopback with a generated config and a
// 1 s scrape interval) scrapes the runtime's /metrics while traffic runs through the rings of
// the lab's NVMe (iommufd: Identify by DMA, its admin completions on MSI-X vector 0) and e1000e
// (legacy container: ICS raises MSI-X vector 2, once while masked). Its query API must then
// return nonzero MMIO, config and interrupt series for each device, and every expression of
// dashboards/*.json must name metrics the live /metrics has and return data.
import { type ChildProcess, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Runtime } from '../../src/coordinator/runtime.js';
import { memfdRegionSource } from '../../src/dma/backend.js';
import { dashboardExprs, substituteVariables } from '../../src/metrics/dashboards.js';
import { checkPromql } from '../../src/metrics/promql-names.js';
import { startMetricsServer } from '../../src/metrics/server.js';
import { busMaster, E1000E, e1000eRaise, GuestMsix, sleep, until } from '../support/guest-irq.js';
import { labDevice, requireLab } from '../support/lab.js';
import { NvmeAdmin } from '../support/nvme-admin.js';
import {
  byDevice,
  loopbackUp,
  PROMETHEUS,
  query,
  startPrometheus,
  stopPrometheus,
} from '../support/prometheus.js';
import { skipBecause } from '../support/skip.js';

const DASHBOARDS = fileURLToPath(new URL('../../../dashboards/', import.meta.url));
const MSI_ADDR = 0xfee00000;

const t = suite('metrics: a real Prometheus scrapes the runtime under NVMe and e1000e traffic');
t.before(() => {
  requireLab();
  loopbackUp();
});

if (!existsSync(PROMETHEUS)) {
  skipBecause(
    t,
    'Prometheus scrapes MMIO, config and interrupt series per device; dashboards return data',
    `${PROMETHEUS} is missing (Debian package prometheus; .ci/run installs it)`,
  );
} else {
  t(
    'Prometheus scrapes MMIO, config and interrupt series per device; dashboards return data',
    async () => {
      const t0 = Date.now();
      const lines: Record<string, unknown>[] = [];
      const rec = (o: Record<string, unknown>): void => {
        lines.push(o);
      };
      const logger = { error: rec, warn: rec, info: rec, debug: rec };
      const rt = await Runtime.start(
        { iommu: [{ id: 'ctx0' }], memory: [{ size: 16n << 20n }] },
        { logger },
      );
      const dir = mkdtempSync(join(tmpdir(), 'vfr-prometheus-'));
      let prom: ChildProcess | undefined;
      let server: Awaited<ReturnType<typeof startMetricsServer>> | undefined;
      try {
        const relayed: Record<string, number> = {};
        const count = (port: string) => () => {
          relayed[port] = (relayed[port] ?? 0) + 1;
        };
        const nvme = await rt.addDevice(
          { bdf: labDevice('nvme'), port: 'nvme0', iommu: 'ctx0' },
          { onInterrupt: count('nvme0') },
        );
        const nic = await rt.addDevice(
          { bdf: labDevice('e1000e'), port: 'nic0' },
          { onInterrupt: count('nic0') },
        );
        server = await startMetricsServer('127.0.0.1:0', (r) =>
          rt.registerMetrics(r, { process: true }),
        );
        let promPort: number;
        [prom, promPort] = await startPrometheus(`127.0.0.1:${server.port}`, dir);
        const tReady = Date.now();
        for (let i = 0; (await query(promPort, 'up == 1')).length === 0; i++) {
          if (i > 100) throw new Error('Prometheus has not scraped the runtime in 20 s');
          await sleep(200);
        }

        // NVMe: MSI-X vector 0 for the admin completion queue, then Identify by DMA.
        const nc = nvme.handle.client();
        busMaster(nc);
        const ngm = new GuestMsix(nc, nvme.handle.description);
        ngm.control(true, true);
        ngm.program(0, MSI_ADDR, 0x40);
        ngm.control(true, false);
        ngm.mask(0, false);
        const admin = new NvmeAdmin(nc, {
          ram: rt.ram[0]!.bytes,
          ramGpa: 0n,
          sqGpa: 0x10000n,
          cqGpa: 0x20000n,
        });
        admin.enable();
        // e1000e: RxQ0 on MSI-X vector 2.
        const ec = nic.handle.client();
        busMaster(ec);
        const egm = new GuestMsix(ec, nic.handle.description);
        egm.control(true, true);
        egm.program(2, MSI_ADDR, 0x42);
        egm.control(true, false);
        egm.mask(2, false);
        ec.barWrite(0, E1000E.IVAR, 4, 0x8 | 2);
        ec.barWrite(0, E1000E.IMS, 4, E1000E.RXQ0);
        for (let round = 0; round < 3; round++) {
          for (let i = 0; i < 4; i++) assert.is(admin.identifyController(0x30000n), 0);
          for (let i = 0; i < 4; i++) {
            e1000eRaise(ec);
            await sleep(5);
          }
          for (let i = 0; i < 200; i++) {
            nc.cfgRead(0, 4);
            ec.cfgRead(0, 4);
          }
          await sleep(600);
        }
        // One firing while masked (pended, delivered on unmask).
        egm.mask(2, true);
        e1000eRaise(ec);
        await until(
          'the masked firing pended',
          () => nic.handle.interruptCounts('msix', 2).pended > 0,
        );
        egm.mask(2, false);
        // A DMA map the kernel refuses (EEXIST: guest RAM is mapped there), counted by errno.
        assert.throws(() =>
          rt.contexts.get('ctx0')!.mapFixed(0n, 4096n, memfdRegionSource(rt.ram[0]!)),
        );
        await until(
          'interrupts relayed',
          () => (relayed.nvme0 ?? 0) > 0 && (relayed.nic0 ?? 0) > 0,
        );
        await sleep(2500); // two scrapes after the traffic

        const mmio = await byDevice(promPort, 'vfio_runtime_bar_accesses_total');
        const cfg = await byDevice(
          promPort,
          'vfio_runtime_ring_requests_total{op=~"cfg_read|cfg_write"}',
        );
        const irq = await byDevice(promPort, 'vfio_runtime_irq_fired_total');
        const rate = await byDevice(promPort, 'rate(vfio_runtime_bar_accesses_total[10s])');
        console.log(
          `    Prometheus ready ${((tReady - t0) / 1000).toFixed(1)} s into the test; MMIO ${JSON.stringify(mmio)}, config ${JSON.stringify(cfg)}, interrupts fired ${JSON.stringify(irq)}, MMIO rate/s ${JSON.stringify(rate)}; relayed ${JSON.stringify(relayed)}`,
        );
        for (const d of ['nvme0', 'nic0']) {
          assert.ok(mmio[d]! > 0, `${d}: MMIO series nonzero`);
          assert.ok(cfg[d]! > 0, `${d}: config series nonzero`);
          assert.ok(irq[d]! > 0, `${d}: interrupt series nonzero`);
          assert.ok(rate[d]! > 0, `${d}: MMIO rate nonzero`);
        }
        const pended = await query(promPort, 'vfio_runtime_irq_pended_total{device="nic0"}');
        assert.ok(
          pended.some((r) => Number(r.value[1]) > 0),
          'nic0: a pended interrupt',
        );
        const failed = await query(promPort, 'vfio_runtime_dma_kernel_failures_total');
        assert.equal(
          failed.map((r) => [r.metric.context, r.metric.op, r.metric.errno, r.value[1]]),
          [['ctx0', 'map', 'EEXIST', '1']],
        );

        // promtool on the live output of real devices.
        const live = await (await fetch(server.url)).text();
        const pt = spawnSync('/usr/bin/promtool', ['check', 'metrics'], {
          input: live,
          encoding: 'utf8',
        });
        console.log(
          `    promtool check metrics on the live /metrics (${live.length} bytes): exit ${pt.status}, '${`${pt.stdout}${pt.stderr}`.trim()}'`,
        );
        assert.is(`${pt.stdout}${pt.stderr}`.trim(), '', 'promtool: no problem');

        // Every dashboard expression: its metrics are in the live /metrics, and it returns data.
        let n = 0;
        const empty: string[] = [];
        for (const file of readdirSync(DASHBOARDS).filter((f) => f.endsWith('.json'))) {
          for (const e of dashboardExprs(
            JSON.parse(readFileSync(join(DASHBOARDS, file), 'utf8')),
          )) {
            const expr = substituteVariables(e, '10s');
            for (const name of checkPromql(expr).names)
              assert.ok(live.includes(name), `${file}: ${name} is not in the live /metrics`);
            if ((await query(promPort, expr)).length === 0) empty.push(`${file}: ${expr}`);
            n++;
          }
        }
        console.log(`    ${n} dashboard expressions run against Prometheus, ${empty.length} empty`);
        assert.equal(empty, [], 'every dashboard expression returns data');
        console.log(`    lab time ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      } finally {
        await stopPrometheus(prom);
        await server?.close();
        await rt.shutdown();
        rmSync(dir, { recursive: true, force: true });
      }
      // One log line per lifecycle event, none per request.
      const events = lines.map((l) => `${l.event}${l.device ? ` ${l.device}` : ''}`);
      console.log(`    log events: ${events.join(', ')}`);
      for (const e of [
        'context_opened',
        'memory_mapped',
        'device_attached nvme0',
        'worker_started nvme0',
        'device_attached nic0',
        'worker_exited nic0',
        'device_detached nic0',
        'device_detached nvme0',
        'context_closed',
      ])
        assert.ok(events.includes(e), `logged ${e}`);
      assert.ok(lines.length < 40, `${lines.length} log lines: none per request`);
    },
  );
}

t.run();
