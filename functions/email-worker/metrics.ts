/**
 * GET /email-worker/metrics (Bearer METRICS_TOKEN): the Prometheus text format. The delivery numbers
 * come from the tracking database in one call (email.metric_samples: counters folded from the audit
 * trail, gauges read now; the SQL defines every family's type and help); this adds what only the
 * process answering knows: the tracker's circuit breaker and the SMTP relay it sends through.
 */
import type { Sql } from "postgres";
import { bearerToken, secretsEqual } from "../_shared/auth.ts";
import type { Config } from "../_shared/config.ts";
import { jsonError } from "../_shared/http.ts";
import type { Logger } from "../_shared/log.ts";
import { exposition, type MetricFamily, type MetricType, renderExposition } from "../_shared/prometheus.ts";
import type { StatusTracker } from "../_shared/tracker.ts";

/** What the metrics route needs. */
export type MetricsDeps = { config: Config; tracker: StatusTracker; logger: Logger; sql?: Sql };

type SampleRow = {
  family: string;
  type: MetricType;
  help: string;
  sample: string;
  labels: Record<string, string>;
  value: number;
};

const breakerStates = ["closed", "half_open", "open", "disabled", "off"] as const;

/** Creates the metrics route's handler. */
export function createMetricsHandler(deps: MetricsDeps): (request: Request) => Promise<Response> {
  const { config, tracker } = deps;
  const logger = deps.logger.child("metrics");
  return async (request) => {
    const token = config.metrics.token;
    if (!token) return jsonError(403, "metrics_disabled", "METRICS_TOKEN is not set");
    if (!(await secretsEqual(bearerToken(request.headers) ?? "", token))) {
      return jsonError(401, "unauthorized", "a valid metrics token is required");
    }

    const families: MetricFamily[] = [];
    let up = 0;
    if (deps.sql) {
      try {
        families.push(...toFamilies(await readSamples(deps.sql, config.tracking.timeoutMs)));
        up = 1;
      } catch (error) {
        logger.warn("metrics_unavailable", { error: error instanceof Error ? error.message.slice(0, 200) : "unknown" });
      }
    }
    const health = tracker.health();
    families.push(
      {
        name: "email_metrics_database_up",
        type: "gauge",
        help: "Whether the delivery metrics could be read from the tracking database (1) or not (0)",
        samples: [{ value: up }],
      },
      {
        name: "email_tracker_breaker_state",
        type: "gauge",
        help: "The tracker's circuit breaker in the process that answered: 1 for its current state",
        samples: breakerStates.map((state) => ({ labels: { state }, value: health.state === state ? 1 : 0 })),
      },
      {
        name: "email_tracker_consecutive_failures",
        type: "gauge",
        help: "Consecutive failed tracker calls in the process that answered",
        samples: [{ value: health.consecutiveFailures }],
      },
      {
        name: "email_smtp_relay_info",
        type: "gauge",
        help: "The SMTP relay the process that answered sends through (always 1)",
        samples: [{ labels: { host: config.smtp.host, port: String(config.smtp.port) }, value: 1 }],
      },
    );
    return new Response(renderExposition(families), {
      headers: { "content-type": exposition, "cache-control": "no-store" },
    });
  };
}

/** One snapshot of email.metric_samples(), bounded by a statement timeout. */
async function readSamples(sql: Sql, timeoutMs: number): Promise<SampleRow[]> {
  return await sql.begin(async (tx) => {
    await tx`select set_config('statement_timeout', ${String(timeoutMs)}, true)`;
    return await tx<SampleRow[]>`select family, type, help, sample, labels, value from email.metric_samples()`;
  }) as SampleRow[];
}

/** Groups the rows (ordered by family) into families. */
function toFamilies(rows: SampleRow[]): MetricFamily[] {
  const byName = new Map<string, MetricFamily>();
  for (const r of rows) {
    let f = byName.get(r.family);
    if (!f) {
      f = { name: r.family, type: r.type, help: r.help, samples: [] };
      byName.set(r.family, f);
    }
    f.samples.push({ name: r.sample, labels: r.labels, value: Number(r.value) });
  }
  return [...byName.values()];
}
