/**
 * The event contracts: Avro schemas and their TypeScript types, strict validation of incoming
 * events, and the registry client (register with BACKWARD compatibility, encode, decode).
 *
 * @example
 *   const id = await registerSchema(config.registry.url, subjectsFor(config.kafka.topics)[0]);
 *   const event = parseEventBytes(payload, config.ingest, { now: Date.now(), source: 'mqtt' });
 */
export {
  compatibilityOf,
  createDecoder,
  createEncoder,
  createRegistry,
  decode,
  registerSchema,
  registryHealth,
  SchemaIncompatibleError,
  UndecodableError,
  type Decoder,
  type Encoder,
} from './registry.js';
export { readSchema, subjectsFor, type SchemaName } from './subjects.js';
export { checkRecord, recordName, type RecordProblem } from './record-checks.js';
export * from './types.js';
export {
  EventRejectedError,
  parseEventBytes,
  requireUserIdFromTopic,
  userIdFromTopic,
  validateEvent,
  type RejectReason,
  type ValidationLimits,
} from './validate.js';
