/** Builds Pub/Sub push requests the way Google sends them: the wrapped envelope and the no-wrapper form. */

/** An event as a publisher would put it in message.data. */
export type TestEvent = {
  deliveryId?: string;
  workflow: string;
  recipient: string;
  userId?: string;
  data?: Record<string, unknown>;
  metadata?: Record<string, unknown>;
};

/** A fresh unique delivery id. */
export function newDeliveryId(prefix = "test"): string {
  return `${prefix}-${crypto.randomUUID()}`;
}

/** A fresh unique recipient at example.com. */
export function newRecipient(): string {
  return `user-${crypto.randomUUID().slice(0, 12)}@example.com`;
}

/** A valid verification-code event with unique id and recipient. */
export function verificationEvent(overrides: Partial<TestEvent> = {}): TestEvent {
  return {
    deliveryId: newDeliveryId(),
    workflow: "verification-code",
    recipient: newRecipient(),
    data: { code: "493817", expiresInMinutes: 10 },
    ...overrides,
  };
}

/** Base64 of UTF-8 text. */
export function base64(text: string): string {
  const bytes = new TextEncoder().encode(text);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

/** The wrapped push body (message.data = base64 JSON of the event, or `rawData` as given). */
export function envelope(
  event: TestEvent | null,
  options: { messageId?: string; rawData?: string; deliveryAttempt?: number; attributes?: Record<string, string> } = {},
): string {
  const messageId = options.messageId ?? String(Math.floor(Math.random() * 1e15));
  return JSON.stringify({
    message: {
      data: options.rawData ?? base64(JSON.stringify(event)),
      attributes: options.attributes ?? { source: "test" },
      messageId,
      message_id: messageId,
      publishTime: new Date().toISOString(),
      publish_time: new Date().toISOString(),
    },
    subscription: "projects/test-project/subscriptions/email-worker-push",
    ...(options.deliveryAttempt ? { deliveryAttempt: options.deliveryAttempt } : {}),
  });
}

/** The no-wrapper form: the event as the body, metadata in x-goog-pubsub-* headers. */
export function unwrapped(event: TestEvent, messageId = String(Math.floor(Math.random() * 1e15))) {
  return {
    body: JSON.stringify(event),
    headers: {
      "x-goog-pubsub-message-id": messageId,
      "x-goog-pubsub-subscription-name": "projects/test-project/subscriptions/email-worker-push",
      "x-goog-pubsub-publish-time": new Date().toISOString(),
    },
  };
}
