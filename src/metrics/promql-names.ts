// The metric names a PromQL expression reads, found with the Prometheus project's own parser
// (@prometheus-io/lezer-promql, a dev dependency: used by the dashboard checks, not the runtime),
// and the parse errors it reports.
import { parser } from '@prometheus-io/lezer-promql';

export interface PromqlCheck {
  /** Metric names in vector selectors. */
  names: string[];
  /** Offsets of error nodes (empty: the expression parsed). */
  errors: number[];
}

export function checkPromql(expr: string): PromqlCheck {
  const names: string[] = [];
  const errors: number[] = [];
  parser.parse(expr).iterate({
    enter(n) {
      if (n.type.isError) errors.push(n.from);
      if (n.name === 'Identifier' && n.node.parent?.name === 'VectorSelector')
        names.push(expr.slice(n.from, n.to));
    },
  });
  return { names, errors };
}
