/**
 * The delivery id: the idempotency key a publisher sends as `deliveryId`, and what every route and
 * the CLI accept as one. The database checks the same shape (constraint deliveries_delivery_id_format).
 */

/** A delivery id: 1 to 200 characters of `A-Z a-z 0-9 . _ : -`. */
export const deliveryIdPattern = /^[A-Za-z0-9._:-]{1,200}$/;

/** The shape of a delivery id in words, for error messages. */
export const deliveryIdRule = "1 to 200 characters of A-Z a-z 0-9 . _ : -";

/** Whether `id` is a delivery id. */
export function isDeliveryId(id: string): boolean {
  return deliveryIdPattern.test(id);
}
