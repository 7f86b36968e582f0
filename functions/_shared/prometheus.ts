/**
 * The Prometheus text exposition format, version 0.0.4
 * (https://prometheus.io/docs/instrumenting/exposition_formats/): one `# HELP` and one `# TYPE` line
 * per family, then its samples, `name{label="value",...} value`. Label values escape backslash,
 * double quote and line feed; help text escapes backslash and line feed.
 */

/** The Content-Type of the text format. */
export const exposition = "text/plain; version=0.0.4; charset=utf-8";

/** A metric type of the text format. */
export type MetricType = "counter" | "gauge" | "histogram" | "summary" | "untyped";

/** One sample: its name (the family's, or a histogram's `_bucket`/`_sum`/`_count`), labels and value. */
export type Sample = { name?: string; labels?: Record<string, string>; value: number };

/** A metric family: name, type, help and its samples. */
export type MetricFamily = { name: string; type: MetricType; help: string; samples: Sample[] };

const metricName = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const labelName = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** A label value as the format writes it between double quotes. */
export function escapeLabelValue(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

/** Help text as the format writes it after `# HELP name `. */
export function escapeHelp(help: string): string {
  return help.replaceAll("\\", "\\\\").replaceAll("\n", "\\n");
}

/** A sample value: integers without exponent where exact, `+Inf`, `-Inf` and `NaN` spelled as the format wants. */
export function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  if (Number.isInteger(value) && Math.abs(value) < 2 ** 53) return value.toFixed(0);
  return String(value);
}

/** Renders families in the text format; throws on a name the format cannot carry (a programming error). */
export function renderExposition(families: MetricFamily[]): string {
  const lines: string[] = [];
  const seen = new Set<string>();
  for (const f of families) {
    if (!metricName.test(f.name)) throw new Error(`invalid metric name ${JSON.stringify(f.name)}`);
    if (seen.has(f.name)) throw new Error(`metric family ${f.name} given twice`);
    seen.add(f.name);
    lines.push(`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) {
      const name = s.name ?? f.name;
      if (!metricName.test(name) || !name.startsWith(f.name)) {
        throw new Error(`invalid sample name ${JSON.stringify(name)} in family ${f.name}`);
      }
      const labels = Object.entries(s.labels ?? {}).map(([k, v]) => {
        if (!labelName.test(k) || k.startsWith("__")) throw new Error(`invalid label name ${JSON.stringify(k)}`);
        return `${k}="${escapeLabelValue(String(v))}"`;
      });
      lines.push(`${name}${labels.length > 0 ? `{${labels.join(",")}}` : ""} ${formatValue(s.value)}`);
    }
  }
  return lines.join("\n") + "\n";
}
