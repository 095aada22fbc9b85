// The Grafana dashboards, as code (Grafana's own typed builders, @grafana/grafana-foundation-sdk):
// overview (devices, health, MMIO, config and interrupt rates), device (MMIO rate and latency
// heatmap by BAR, interrupts by vector and path, ring depth and back-pressure, worker state)
// and DMA. `npm run dashboards` writes them to dashboards/*.json (dashboards-write.ts); a unit
// test fails if the checked-in files differ, parses every expression with Prometheus's PromQL
// parser and checks each metric name against the exporter; the lab test runs them against a
// live Prometheus. Only the generator imports the SDK (a dev dependency), never the runtime.
import * as dashboard from '@grafana/grafana-foundation-sdk/dashboard';
import * as heatmap from '@grafana/grafana-foundation-sdk/heatmap';
import * as prometheus from '@grafana/grafana-foundation-sdk/prometheus';
import * as stat from '@grafana/grafana-foundation-sdk/stat';
import * as statetimeline from '@grafana/grafana-foundation-sdk/statetimeline';
import * as timeseries from '@grafana/grafana-foundation-sdk/timeseries';

/** Grafana's reference to the dashboard's datasource variable (Grafana syntax, not a JS template). */
const DS = { type: 'prometheus', uid: ['$', '{datasource}'].join('') };
const RATE = '$__rate_interval';

const datasource = (): dashboard.DatasourceVariableBuilder =>
  new dashboard.DatasourceVariableBuilder('datasource').label('Prometheus').type('prometheus');

/** A multi-value variable over a label of a metric (All by default). */
const labelVar = (name: string, metric: string, label = name): dashboard.QueryVariableBuilder =>
  new dashboard.QueryVariableBuilder(name)
    .label(name)
    .datasource(DS)
    .query({ query: `label_values(${metric}, ${label})`, refId: name })
    .definition(`label_values(${metric}, ${label})`)
    .refresh(dashboard.VariableRefresh.OnTimeRangeChanged)
    .multi(true)
    .includeAll(true)
    .allValue('.+')
    .current({ text: 'All', value: '$__all' });

const q = (expr: string, legend: string, ref = 'A'): prometheus.DataqueryBuilder =>
  new prometheus.DataqueryBuilder().datasource(DS).expr(expr).legendFormat(legend).refId(ref);

function series(
  title: string,
  unit: string,
  queries: [string, string][],
  w = 12,
): timeseries.PanelBuilder {
  const p = new timeseries.PanelBuilder().title(title).datasource(DS).unit(unit).height(8).span(w);
  queries.forEach(([e, l], i) => {
    p.withTarget(q(e, l, String.fromCharCode(65 + i)));
  });
  return p;
}

const single = (title: string, expr: string, unit = 'none'): stat.PanelBuilder =>
  new stat.PanelBuilder()
    .title(title)
    .datasource(DS)
    .unit(unit)
    .height(4)
    .span(6)
    .withTarget(q(expr, title));

/** One of our dashboards: title, uid suffix, tag, refresh, the last hour, the datasource. */
const board = (title: string, uid: string): dashboard.DashboardBuilder =>
  new dashboard.DashboardBuilder(title)
    .uid(`vfio-runtime-${uid}`)
    .tags(['vfio-runtime'])
    .refresh('30s')
    .time({ from: 'now-1h', to: 'now' })
    .withVariable(datasource());

function overview(): dashboard.DashboardBuilder {
  return board('vfio-runtime: overview', 'overview')
    .withRow(new dashboard.RowBuilder('Health'))
    .withPanel(single('Devices', 'count(vfio_runtime_device_info)'))
    .withPanel(single('Workers up', 'sum(vfio_runtime_worker_up)'))
    .withPanel(
      single('Worker restarts (1h)', 'sum(increase(vfio_runtime_worker_restarts_total[1h]))'),
    )
    .withPanel(
      single('Ring errors/s', `sum(rate(vfio_runtime_ring_errors_total[${RATE}]))`, 'reqps'),
    )
    .withRow(new dashboard.RowBuilder('Traffic by device'))
    .withPanel(
      series('Trapped MMIO accesses', 'ops', [
        [`sum by (device) (rate(vfio_runtime_bar_accesses_total[${RATE}]))`, '{{device}}'],
      ]),
    )
    .withPanel(
      series('Config-space accesses', 'ops', [
        [
          `sum by (device) (rate(vfio_runtime_ring_requests_total{op=~"cfg_read|cfg_write"}[${RATE}]))`,
          '{{device}}',
        ],
      ]),
    )
    .withPanel(
      series('Interrupts seen by userspace', 'ops', [
        [`sum by (device) (rate(vfio_runtime_irq_fired_total[${RATE}]))`, '{{device}} fired'],
        [
          `sum by (device) (rate(vfio_runtime_irq_delivered_total[${RATE}]))`,
          '{{device}} delivered',
        ],
      ]),
    )
    .withPanel(
      series('Ring request latency p99', 's', [
        [
          `histogram_quantile(0.99, sum by (device, le) (rate(vfio_runtime_ring_request_duration_seconds_bucket[${RATE}])))`,
          '{{device}}',
        ],
      ]),
    )
    .withRow(new dashboard.RowBuilder('Process'))
    .withPanel(series('CPU', 'percentunit', [[`rate(process_cpu_seconds_total[${RATE}])`, 'cpu']]))
    .withPanel(series('Resident memory', 'bytes', [['process_resident_memory_bytes', 'rss']]));
}

function device(): dashboard.DashboardBuilder {
  const sel = 'device=~"$device"';
  return board('vfio-runtime: device', 'device')
    .withVariable(labelVar('device', 'vfio_runtime_device_info'))
    .withVariable(labelVar('bar', `vfio_runtime_ring_request_duration_seconds_bucket{${sel}}`))
    .withRow(new dashboard.RowBuilder('MMIO'))
    .withPanel(
      series('Trapped MMIO by BAR', 'ops', [
        [
          `sum by (bar, direction) (rate(vfio_runtime_bar_accesses_total{${sel}}[${RATE}]))`,
          'BAR{{bar}} {{direction}}',
        ],
      ]),
    )
    .withPanel(
      series('Trapped MMIO bytes by BAR', 'Bps', [
        [
          `sum by (bar, direction) (rate(vfio_runtime_bar_bytes_total{${sel}}[${RATE}]))`,
          'BAR{{bar}} {{direction}}',
        ],
      ]),
    )
    .withPanel(
      new heatmap.PanelBuilder()
        .title('Ring request latency, BAR $bar')
        .datasource(DS)
        .repeat('bar')
        .repeatDirection('h')
        .maxPerRow(3)
        .height(8)
        .span(8)
        .calculate(false)
        .withTarget(
          q(
            `sum by (le) (rate(vfio_runtime_ring_request_duration_seconds_bucket{${sel}, bar=~"$bar"}[${RATE}]))`,
            '{{le}}',
          ).format(prometheus.PromQueryFormat.Heatmap),
        ),
    )
    .withPanel(
      series('Config-space and error rates', 'ops', [
        [
          `sum by (op) (rate(vfio_runtime_ring_requests_total{${sel}, op=~"cfg_read|cfg_write"}[${RATE}]))`,
          '{{op}}',
        ],
        [`sum by (status) (rate(vfio_runtime_ring_errors_total{${sel}}[${RATE}]))`, '{{status}}'],
      ]),
    )
    .withPanel(
      series('BAR bytes: mapped (no exit) and trapped', 'bytes', [
        [`sum by (bar) (vfio_runtime_bar_mapped_bytes{${sel}})`, 'BAR{{bar}} mapped'],
        [`sum by (bar) (vfio_runtime_bar_trapped_bytes{${sel}})`, 'BAR{{bar}} trapped'],
      ]),
    )
    .withRow(new dashboard.RowBuilder('Interrupts'))
    .withPanel(
      series('Interrupts by vector and path', 'ops', [
        [
          `sum by (kind, vector) (rate(vfio_runtime_irq_fired_total{${sel}}[${RATE}]))`,
          '{{kind}}{{vector}} fired (userspace eventfd)',
        ],
        [
          `sum by (kind, vector) (rate(vfio_runtime_irq_delivered_total{${sel}}[${RATE}]))`,
          '{{kind}}{{vector}} delivered by userspace',
        ],
        [
          `sum(vfio_runtime_irq_kvm_routed{${sel}}) or vector(0)`,
          'vectors on KVM irqfd (in-kernel, not counted)',
        ],
      ]),
    )
    .withPanel(
      series('Masking', 'ops', [
        [
          `sum by (kind, vector) (rate(vfio_runtime_irq_pended_total{${sel}}[${RATE}]))`,
          '{{kind}}{{vector}} pended while masked',
        ],
        [
          `sum by (kind, vector) (rate(vfio_runtime_irq_masks_total{${sel}}[${RATE}]))`,
          '{{kind}}{{vector}} masks',
        ],
        [
          `sum by (kind, vector) (rate(vfio_runtime_irq_unmasks_total{${sel}}[${RATE}]))`,
          '{{kind}}{{vector}} unmasks',
        ],
      ]),
    )
    .withPanel(
      series('Route commits', 'ops', [
        [
          `sum by (device) (rate(vfio_runtime_irq_route_commits_total{${sel}}[${RATE}]))`,
          '{{device}} commits',
        ],
        [
          `sum by (device) (rate(vfio_runtime_irq_route_updates_total{${sel}}[${RATE}]))`,
          '{{device}} route changes',
        ],
      ]),
    )
    .withRow(new dashboard.RowBuilder('Ring and worker'))
    .withPanel(
      series('Ring depth and back-pressure', 'short', [
        [`vfio_runtime_ring_depth{${sel}}`, '{{device}} depth'],
        [`vfio_runtime_ring_full_waiters{${sel}}`, '{{device}} producers waiting'],
        [
          `rate(vfio_runtime_ring_backpressure_waits_total{${sel}}[${RATE}])`,
          '{{device}} back-pressure waits/s',
        ],
      ]),
    )
    .withPanel(
      series('Worker sleeps, wake-ups, event-loop turns', 'ops', [
        [`rate(vfio_runtime_worker_sleeps_total{${sel}}[${RATE}])`, '{{device}} sleeps'],
        [`rate(vfio_runtime_worker_wakes_total{${sel}}[${RATE}])`, '{{device}} wakes'],
        [`rate(vfio_runtime_worker_event_loop_turns_total{${sel}}[${RATE}])`, '{{device}} turns'],
      ]),
    )
    .withPanel(
      new statetimeline.PanelBuilder()
        .title('Worker state')
        .datasource(DS)
        .height(6)
        .span(24)
        .withTarget(
          q(
            `max by (device, state) (vfio_runtime_worker_state{${sel}}) == 1`,
            '{{device}} {{state}}',
          ),
        ),
    )
    .withPanel(
      series('Worker restarts', 'short', [
        [`vfio_runtime_worker_restarts_total{${sel}}`, '{{device}}'],
      ]),
    );
}

function dma(): dashboard.DashboardBuilder {
  const sel = 'context=~"$context"';
  return board('vfio-runtime: DMA', 'dma')
    .withVariable(labelVar('context', 'vfio_runtime_dma_mappings'))
    .withPanel(
      series('Mapped guest memory', 'bytes', [
        [`vfio_runtime_dma_mapped_bytes{${sel}}`, '{{backend}} {{context}}'],
      ]),
    )
    .withPanel(
      series('Mappings', 'short', [
        [`vfio_runtime_dma_mappings{${sel}}`, '{{backend}} {{context}}'],
      ]),
    )
    .withPanel(
      series('Map and unmap calls', 'ops', [
        [
          `sum by (context, op) (rate(vfio_runtime_dma_operations_total{${sel}}[${RATE}]))`,
          '{{context}} {{op}}',
        ],
      ]),
    )
    .withPanel(
      series('Mean map and unmap latency', 's', [
        [
          `sum by (context, op) (rate(vfio_runtime_dma_operation_seconds_total{${sel}}[${RATE}])) / sum by (context, op) (rate(vfio_runtime_dma_operations_total{${sel}}[${RATE}]))`,
          '{{context}} {{op}}',
        ],
      ]),
    )
    .withPanel(
      series('Kernel call failures by errno', 'short', [
        [
          `sum by (context, op, errno) (vfio_runtime_dma_kernel_failures_total{${sel}})`,
          '{{context}} {{op}} {{errno}}',
        ],
      ]),
    )
    .withPanel(
      series('vIOMMU invalidations', 'ops', [
        [
          `sum by (viommu) (rate(vfio_runtime_viommu_invalidation_batches_total{${sel}}[${RATE}])) or vector(0)`,
          '{{viommu}}',
        ],
      ]),
    );
}

/** The VMM (`vfio-runtime vm`) and its HTTP API: vCPU exits by reason, API requests by route. */
function vm(): dashboard.DashboardBuilder {
  const sel = 'vcpu=~"$vcpu"';
  return board('vfio-runtime: VM and API', 'vm')
    .withVariable(labelVar('vcpu', 'vfio_runtime_vm_exits_total'))
    .withRow(new dashboard.RowBuilder('vCPU exits'))
    .withPanel(
      series('Exits by reason', 'ops', [
        [`sum by (reason) (rate(vfio_runtime_vm_exits_total{${sel}}[${RATE}]))`, '{{reason}}'],
      ]),
    )
    .withPanel(
      series('Exits by vCPU', 'ops', [
        [`sum by (vcpu) (rate(vfio_runtime_vm_exits_total{${sel}}[${RATE}]))`, 'vCPU {{vcpu}}'],
      ]),
    )
    .withPanel(
      series('Mean exit handling time (sampled)', 's', [
        [
          `sum(rate(vfio_runtime_vm_sampled_exit_handling_seconds_total{${sel}}[${RATE}])) / sum(rate(vfio_runtime_vm_sampled_exits_total{${sel}}[${RATE}]))`,
          'handling',
        ],
        [
          `sum(rate(vfio_runtime_vm_sampled_ring_wait_seconds_total{${sel}}[${RATE}])) / sum(rate(vfio_runtime_vm_sampled_exits_total{${sel}}[${RATE}]))`,
          'of it in device rings',
        ],
      ]),
    )
    .withPanel(
      series('Trapped BAR accesses by device', 'ops', [
        [
          `sum by (device) (rate(vfio_runtime_vm_bar_accesses_total{${sel}}[${RATE}]))`,
          '{{device}}',
        ],
      ]),
    )
    .withPanel(
      series('Config, unhandled and refused accesses', 'ops', [
        [`sum(rate(vfio_runtime_vm_pci_config_accesses_total{${sel}}[${RATE}]))`, 'PCI config'],
        [
          `sum by (space) (rate(vfio_runtime_vm_unhandled_accesses_total{${sel}}[${RATE}]))`,
          'unhandled {{space}}',
        ],
        [`sum(rate(vfio_runtime_vm_device_refusals_total{${sel}}[${RATE}]))`, 'refused'],
      ]),
    )
    .withPanel(
      new statetimeline.PanelBuilder()
        .title('vCPU handling an exit')
        .datasource(DS)
        .height(8)
        .span(12)
        .withTarget(q(`max by (vcpu) (vfio_runtime_vm_vcpu_busy{${sel}})`, 'vCPU {{vcpu}}')),
    )
    .withRow(new dashboard.RowBuilder('HTTP API'))
    .withPanel(
      series('Requests by route and status', 'reqps', [
        [
          `sum by (route, status) (rate(vfio_runtime_api_requests_total[${RATE}]))`,
          '{{route}} {{status}}',
        ],
      ]),
    )
    .withPanel(
      series('Rejected by the socket thread, connections', 'short', [
        [
          `sum by (status) (rate(vfio_runtime_api_requests_rejected_total[${RATE}]))`,
          'rejected {{status}}/s',
        ],
        ['sum(vfio_runtime_api_connections_open)', 'open connections'],
      ]),
    );
}

/**
 * Every dashboard by its file name in dashboards/. The VMM's is in dashboards/vm/: the lab's
 * metrics test runs the top-level ones against a runtime that hosts no VM and no API.
 */
export function buildDashboards(): Record<string, dashboard.Dashboard> {
  return {
    'overview.json': overview().build(),
    'device.json': device().build(),
    'dma.json': dma().build(),
    'vm/vm.json': vm().build(),
  };
}

/** A dashboard as checked in: 2-space JSON and a newline. */
export const dashboardJson = (d: dashboard.Dashboard): string => `${JSON.stringify(d, null, 2)}\n`;

/** Every PromQL expression in a dashboard (panel targets and query variables). */
export function dashboardExprs(d: unknown): string[] {
  const out: string[] = [];
  const walk = (x: unknown): void => {
    if (Array.isArray(x)) for (const y of x) walk(y);
    else if (x && typeof x === 'object') {
      const o = x as Record<string, unknown>;
      if (typeof o.expr === 'string') out.push(o.expr);
      for (const v of Object.values(o)) walk(v);
    }
  };
  walk(d);
  return out;
}

/** Grafana's variables replaced by what they stand for with every value selected. */
export const substituteVariables = (expr: string, rateInterval = '1m'): string =>
  expr.replaceAll('$__rate_interval', rateInterval).replace(/\$[a-z_]+/g, '.+');
