// A metric family as prom-client's Registry serializes it (name, help, type, get()), with its
// samples computed at scrape time by a function: the runtime's metrics are read from shared
// memory and plain counters when scraped, so nothing holds prom-client state between scrapes
// and no label set is hashed per update. Registered with registry.registerMetric().
import type { Registry } from 'prom-client';

export type FamilyType = 'counter' | 'gauge' | 'histogram';
export type Labels = Record<string, string>;

/** One sample; `suffix` names a histogram's _bucket/_sum/_count series. */
export interface Sample {
  labels: Labels;
  value: number;
  suffix?: '_bucket' | '_sum' | '_count';
}

interface PromValue {
  labels: Labels;
  value: number;
  metricName?: string;
}

export class Family {
  /** prom-client's Registry may rename a counter (strips _total for OpenMetrics): read, not kept. */
  name: string;
  readonly aggregator = 'sum';
  constructor(
    name: string,
    readonly help: string,
    readonly type: FamilyType,
    readonly samples: () => readonly Sample[],
  ) {
    this.name = name;
  }

  async get(): Promise<{
    name: string;
    help: string;
    type: FamilyType;
    values: PromValue[];
    aggregator: string;
  }> {
    const values: PromValue[] = this.samples().map((s) =>
      s.suffix
        ? { labels: s.labels, value: s.value, metricName: `${this.name}${s.suffix}` }
        : { labels: s.labels, value: s.value },
    );
    return { name: this.name, help: this.help, type: this.type, values, aggregator: 'sum' };
  }

  reset(): void {}
}

/** Register a family on a registry (prom-client's registerMetric takes any object like it). */
export function registerFamily(registry: Registry, f: Family): void {
  (registry as unknown as { registerMetric(m: unknown): void }).registerMetric(f);
}
