/**
 * The end-to-end bench's HTTP client, run as a Web Worker (its own thread and isolate) so that
 * making the requests takes no time from the worker's handler, as a publisher's pushes would not.
 * Asked `{url, token, bodies, concurrency}`, it pushes every body with `concurrency` requests in
 * flight and answers `{seconds, latencies, failures}` (a failure: not 200, or not sent).
 */
type Job = { url: string; token: string; bodies: string[]; concurrency: number };

// deno-lint-ignore no-explicit-any
const scope = self as any;
scope.onmessage = async (event: MessageEvent<Job>) => {
  const { url, token, bodies, concurrency } = event.data;
  const latencies: number[] = [];
  let next = 0;
  let failures = 0;
  const start = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < bodies.length) {
      const body = bodies[next++];
      const t = performance.now();
      try {
        const res = await fetch(url, {
          method: "POST",
          body,
          headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        });
        const reply = await res.json();
        if (res.status !== 200 || reply.outcome !== "sent") failures++;
      } catch {
        failures++;
      }
      latencies.push(performance.now() - t);
    }
  }));
  scope.postMessage({ seconds: (performance.now() - start) / 1000, latencies, failures });
};
