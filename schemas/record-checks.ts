/**
 * What a consumer checks of a record that decoded before it uses it: the writer schema must be
 * the topic's record (a value of another schema decodes but is not the record the role reads),
 * and the value must keep the contract the bridge enforces (ids from the id charset, a UUID
 * eventId, bounded context), since a producer other than the bridge may have written it and the
 * ids end up in Redis keys and MQTT topics. Problems go to the DLQ as `foreign_schema` or
 * `invalid_record`.
 *
 * @example
 *   const problem = checkRecord('UserEvent', event); // null, or { field: 'userId', message }
 */
import { readSchema, type SchemaName } from './subjects.js';
import type { ServedFeed, UserEvent } from './types.js';
import { EventRejectedError, isId, validateEvent, type ValidationLimits } from './validate.js';

/** Why a decoded record is not used; `field` is its path, null for the record as a whole. */
export interface RecordProblem {
  field: string | null;
  message: string;
}

/** The full name (`namespace.name`) of a schema's record, what a writer schema must carry. */
export function recordName(name: SchemaName): string {
  const schema = readSchema(name);
  return `${schema.namespace}.${schema.name}`;
}

// The time window is the bridge's business at ingest; a consumer reads old records too.
const NO_TIME_BOUNDS: ValidationLimits = {
  maxEventBytes: Number.POSITIVE_INFINITY,
  maxPastMs: Number.POSITIVE_INFINITY,
  maxFutureMs: Number.POSITIVE_INFINITY,
};

/** The bridge's own validation, run on the decoded event's fields. */
function checkUserEvent(e: UserEvent): RecordProblem | null {
  // A plain object: the decoder's records are class instances, which the validator refuses.
  const plain = {
    eventId: e.eventId,
    userId: e.userId,
    sessionId: e.sessionId,
    itemId: e.itemId,
    type: e.type,
    ts: e.ts,
    context: e.context
      ? { page: e.context.page, position: e.context.position, device: e.context.device }
      : null,
    value: e.value,
  };
  try {
    validateEvent(plain, NO_TIME_BOUNDS, { now: e.receivedAt, source: e.source });
    return null;
  } catch (err) {
    if (!(err instanceof EventRejectedError)) throw err;
    return { field: err.field, message: `${err.reason}: ${err.message}` };
  }
}

/** The ids of a served feed: its user and items become Redis keys and members. */
function checkServedFeed(f: ServedFeed): RecordProblem | null {
  if (!isId(f.userId)) return { field: 'userId', message: 'not an id' };
  for (let i = 0; i < f.items.length; i++) {
    if (!isId(f.items[i]?.itemId ?? '')) {
      return { field: `items[${i}].itemId`, message: 'not an id' };
    }
  }
  return null;
}

/** Checks a decoded value of schema `name`; null when it can be used. */
export function checkRecord(name: SchemaName, value: unknown): RecordProblem | null {
  switch (name) {
    case 'UserEvent':
      return checkUserEvent(value as UserEvent);
    case 'ServedFeed':
      return checkServedFeed(value as ServedFeed);
    case 'DlqRecord':
      return null;
  }
}
