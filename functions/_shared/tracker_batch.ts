/**
 * Group commit for the tracker: calls of one kind made while the pool's connections are busy are
 * gathered into one batch, made in one statement (email.queue_and_claim_many, email.mark_sent_many:
 * one transaction, one commit), and each caller gets its own call's answer.
 * - A call made while fewer than `maxInFlight` batches of its kind are out goes at once (with the
 *   calls of the same tick, if any): batching never delays a call that could have gone anyway.
 * - Otherwise it waits for the next batch, which leaves as soon as a batch of its kind comes back,
 *   with at most `maxBatch` calls (the rest wait for the one after).
 * - Every caller of a batch awaits that batch's commit: nothing is answered before it is durable.
 * `send` answers every call of a batch (one answer per call, in order) or throws, and then every call
 * of the batch is rejected with that error (a bug: the tracker maps the database's own answers).
 */
export type Batcher<I, R> = (item: I) => Promise<R>;

export function createBatcher<I, R>(options: {
  maxInFlight: number;
  maxBatch: number;
  send: (items: I[]) => Promise<R[]>;
}): Batcher<I, R> {
  const maxInFlight = Math.max(1, options.maxInFlight);
  const maxBatch = Math.max(1, options.maxBatch);
  const waiting: { item: I; resolve: (r: R) => void; reject: (e: unknown) => void }[] = [];
  let inFlight = 0;
  let scheduled = false;

  function pump() {
    scheduled = false;
    while (inFlight < maxInFlight && waiting.length > 0) {
      const batch = waiting.splice(0, maxBatch);
      inFlight++;
      let answers: Promise<R[]>;
      try {
        answers = options.send(batch.map((b) => b.item));
      } catch (error) {
        answers = Promise.reject(error);
      }
      answers.then(
        (rs) => {
          if (rs.length !== batch.length) {
            throw new Error(`a batch of ${batch.length} calls was answered ${rs.length} times`);
          }
          batch.forEach((b, i) => b.resolve(rs[i]));
        },
      ).catch((error) => batch.forEach((b) => b.reject(error))).finally(() => {
        inFlight--;
        pump();
      });
    }
  }

  return (item) =>
    new Promise<R>((resolve, reject) => {
      waiting.push({ item, resolve, reject });
      if (!scheduled) {
        scheduled = true;
        queueMicrotask(pump);
      }
    });
}
