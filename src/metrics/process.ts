// prom-client's default process and Node.js metrics (CPU, memory, fds, event-loop lag, GC),
// checked by promtool like the rest. prom-client also serves three gauges named *_total
// (nodejs_active_handles_total ...), which promtool refuses for a non-counter; each is only the
// sum of the same family by type (nodejs_active_handles{type}), so they are left out.
import { collectDefaultMetrics, Registry } from 'prom-client';

export function registerProcessMetrics(registry: Registry): void {
  const own = new Registry();
  collectDefaultMetrics({ register: own });
  for (const m of own.getMetricsAsArray()) {
    const { name, type } = m as unknown as { name: string; type: string };
    if (type === 'gauge' && name.endsWith('_total')) continue;
    registry.registerMetric(m as unknown as Parameters<Registry['registerMetric']>[0]);
  }
}
