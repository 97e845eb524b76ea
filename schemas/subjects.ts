/**
 * Loads the Avro contracts (`schemas/*.avsc`) and names their schema-registry subjects with the
 * TopicNameStrategy (`<topic>-value`), which is what Confluent-compatible serializers look up.
 *
 * The `.avsc` files are not copied by `tsc`: they stay in `<root>/schemas/` while this module runs
 * from `<root>/schemas/` (ts tooling) or `<root>/dist/schemas/` (compiled). Both resolve by
 * walking up from this module to the directory holding `package.json`.
 *
 * @example
 *   for (const { subject, schema } of subjectsFor(config.kafka.topics)) {
 *     await registry.register({ type: SchemaType.AVRO, schema: JSON.stringify(schema) }, { subject });
 *   }
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Schema } from 'avsc';

/** Name of each top-level record, which is also the key of its file below. */
export type SchemaName = 'UserEvent' | 'ServedFeed' | 'DlqRecord';

const FILES: Readonly<Record<SchemaName, string>> = {
  UserEvent: 'user-event.avsc',
  ServedFeed: 'served-feed.avsc',
  DlqRecord: 'dlq-record.avsc',
};

/** A parsed `.avsc` file: always a named record, so usable wherever avsc wants a `Schema`. */
export interface AvroRecordSchema {
  type: 'record';
  name: string;
  namespace: string;
  doc?: string;
  fields: Array<{ name: string; type: Schema; doc?: string; default?: unknown }>;
}

/** One subject to register: the topic's value subject and the parsed `.avsc` JSON. */
export interface SubjectSchema {
  subject: string;
  schema: AvroRecordSchema;
  name: SchemaName;
}

let schemasDir: string | undefined;
const cache = new Map<SchemaName, AvroRecordSchema>();

function findSchemasDir(): string {
  if (schemasDir !== undefined) return schemasDir;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) {
      schemasDir = join(dir, 'schemas');
      return schemasDir;
    }
    const parent = dirname(dir);
    if (parent === dir) {
      throw new Error(`no package.json above ${fileURLToPath(import.meta.url)}`);
    }
    dir = parent;
  }
}

/** The parsed `.avsc` of one record, read from disk once and cached. Frozen: do not mutate. */
export function readSchema(name: SchemaName): AvroRecordSchema {
  let schema = cache.get(name);
  if (schema === undefined) {
    const file = join(findSchemasDir(), FILES[name]);
    schema = deepFreeze(JSON.parse(readFileSync(file, 'utf8')) as AvroRecordSchema);
    cache.set(name, schema);
  }
  return schema;
}

/** The value subject of every topic the stack writes, with its schema (TopicNameStrategy). */
export function subjectsFor(topics: {
  events: string;
  dlq: string;
  served: string;
}): SubjectSchema[] {
  return [
    { subject: `${topics.events}-value`, schema: readSchema('UserEvent'), name: 'UserEvent' },
    { subject: `${topics.dlq}-value`, schema: readSchema('DlqRecord'), name: 'DlqRecord' },
    { subject: `${topics.served}-value`, schema: readSchema('ServedFeed'), name: 'ServedFeed' },
  ];
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
