// The end-to-end section of `npm run bench`'s report: what bench/e2e.ts measured (the sink's own
// capacity, the SMTP leg alone, the full path untracked and tracked, pooled and with a connection
// per message, at each concurrency) and the issue 12 targets, MET or SHORT.
import { round, table } from "./stats.mjs";

/** The e2e targets: end to end (tracked) over the SMTP leg alone, and tracked over untracked. */
export const e2eTargets = { endToEndOverSmtpAlone: 0.8, trackedOverUntracked: 0.9 };

/** The columns naming a cell, and their values for cell `x`. */
const cellColumns = ["in flight", "SMTP", "path"];
const cellLabel = (x) => [
  x.concurrency,
  x.pooling === "pooled" ? "pooled" : "per message",
  x.variant === "smtp_alone" ? "SMTP leg alone" : x.variant,
];

const verdict = (x, target) => `${x} (target >= ${target}: ${x >= target ? "MET" : "SHORT"})`;

/** Prints the end-to-end section for `e2e` (bench/e2e.ts's output). */
export function reportEndToEnd(e2e, log) {
  if (!e2e) return;
  if (e2e.error) {
    log(`\nend to end: ${e2e.error}`);
    return;
  }
  if (!e2e.cells) {
    // a results file from before the SMTP pool's bench: only the tracked/untracked pair
    log(`\nend to end: tracked/untracked ${e2e.ratio} at ${e2e.concurrency} in flight`);
    return;
  }
  log("\nend to end (HTTP push -> handler -> tracker -> SMTP sink)");
  const capacity = e2e.sink.capacity.map((c) => `${c.per_second}/s at ${c.concurrency} in flight`).join(", ");
  log(`sink: ${e2e.sink.what}; ${e2e.sink.message_bytes}-byte messages; its capacity (raw client): ${capacity}`);
  log(table(
    [...cellColumns, "deliveries", "per second", "p50 ms", "p99 ms", "SMTP connections opened"],
    e2e.cells.map((x) => [
      ...cellLabel(x),
      x.deliveries,
      x.per_second,
      x.p50_ms,
      x.p99_ms,
      x.smtp_connections,
    ]),
  ));
  if (e2e.cells.some((x) => x.cpu_ms_per_delivery)) {
    log(
      "CPU per delivery (ms, from /proc): the worker's thread (handler, tracker, mailer), the bench's other threads (the push client), Postgres, the sink; 2 cores = 2,000 ms a second",
    );
    log(table(
      [...cellColumns, "worker thread", "busy", "other threads", "Postgres", "sink", "all"],
      e2e.cells.filter((x) => x.cpu_ms_per_delivery).map((x) => {
        const c = x.cpu_ms_per_delivery;
        return [
          ...cellLabel(x),
          c.worker_thread,
          x.worker_thread_busy,
          c.bench_other_threads,
          c.postgres,
          c.sink,
          round(c.worker_thread + c.bench_other_threads + c.postgres + c.sink, 2),
        ];
      }),
    ));
  }
  const leg = (c, p) => e2e.cells.find((x) => x.concurrency === c && x.pooling === p && x.variant === "smtp_alone");
  for (const r of e2e.ratios.filter((x) => x.pooling === "pooled")) {
    const sinkCapacity = e2e.sink.capacity.find((c) => c.concurrency === r.concurrency)?.per_second;
    const before = e2e.ratios.find((x) => x.pooling === "per_message" && x.concurrency === r.concurrency);
    const speedup = (v) => {
      const cell = (p) => e2e.cells.find((x) => x.concurrency === r.concurrency && x.pooling === p && x.variant === v);
      return round(cell("pooled").per_second / cell("per_message").per_second, 2);
    };
    log(
      `${r.concurrency} in flight: end to end / SMTP leg alone ${
        verdict(r.end_to_end_over_smtp_alone, e2eTargets.endToEndOverSmtpAlone)
      }; tracked / untracked ${verdict(r.tracked_over_untracked, e2eTargets.trackedOverUntracked)}`,
    );
    log(
      `  SMTP leg alone ${leg(r.concurrency, "pooled").per_second}/s = ${
        round(leg(r.concurrency, "pooled").per_second / sinkCapacity, 2)
      } of the sink's capacity; pooled / per message: SMTP leg ${speedup("smtp_alone")}x, untracked ${
        speedup("untracked")
      }x, tracked ${speedup("tracked")}x (per message: end to end / leg ${before?.end_to_end_over_smtp_alone}, ` +
        `tracked / untracked ${before?.tracked_over_untracked})`,
    );
  }
  log(
    `at ${e2e.concurrency} in flight, pooled: ${e2e.on.round_trips_per_delivery} database round trips per delivery, ` +
      `added latency p50 ${e2e.added_p50_ms} ms, p99 ${e2e.added_p99_ms} ms`,
  );
}
