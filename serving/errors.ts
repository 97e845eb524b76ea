/**
 * Every error an HTTP endpoint answers with, declared once: a stable code clients can switch
 * on and its status. Bodies are `{ error: { code, message, ...details } }`.
 */
export interface HttpErrorKind {
  readonly code: string;
  readonly status: number;
}

export const HTTP_ERRORS = {
  /** A field of an event is missing, of the wrong type or out of range; names the field. */
  eventRejected: { code: 'RECSYS_EVENT_REJECTED', status: 400 },
  notFound: { code: 'RECSYS_NOT_FOUND', status: 404 },
  payloadTooLarge: { code: 'RECSYS_PAYLOAD_TOO_LARGE', status: 413 },
  unsupportedMediaType: { code: 'RECSYS_UNSUPPORTED_MEDIA_TYPE', status: 415 },
  internal: { code: 'RECSYS_INTERNAL', status: 500 },
  /** A dependency is not reachable (yet); retry later. */
  notReady: { code: 'RECSYS_NOT_READY', status: 503 },
  /** Kafka did not acknowledge in time; the write may still land, retry with the same eventId. */
  kafkaUnavailable: { code: 'RECSYS_KAFKA_UNAVAILABLE', status: 503 },
} as const satisfies Record<string, HttpErrorKind>;
