/**
 * The consumer loop's first step for a chunk (`consumer.ts`): decode each value with its writer
 * schema and check it against its topic's rule (the schema's record name, the contract), so
 * the role only sees records it can use; the others come back as rejected, for the DLQ.
 */
import type { KafkaMessage } from 'kafkajs';
import { UndecodableError, type Decoder } from '../schemas/index.js';
import type { ConsumedRecord, RecordRule, RejectedRecord } from './records.js';

/**
 * Decodes a chunk's messages and checks them against `rules`; values that are not of a known
 * schema, of another schema than their topic's, or break its contract come back as `bad`.
 */
export function decodeSlice<T>(
  slice: KafkaMessage[],
  decoder: Decoder<T> | null,
  topic: string,
  partition: number,
  rules: ReadonlyMap<string, RecordRule<T>> | undefined,
): { good: ConsumedRecord<T>[]; bad: RejectedRecord[] } {
  const good: ConsumedRecord<T>[] = [];
  const bad: RejectedRecord[] = [];
  const rule = rules?.get(topic);
  for (const m of slice) {
    const reject = (reason: string, detail: string, field: string | null, decoded?: T): void => {
      bad.push({
        topic,
        partition,
        offset: m.offset,
        key: m.key ? m.key.toString() : null,
        value: m.value,
        timestamp: Number(m.timestamp),
        reason,
        detail,
        field,
        ...(decoded === undefined ? {} : { decoded }),
      });
    };
    let value: T;
    try {
      value = decoder ? decoder.decode(m.value) : (m.value as T);
    } catch (err) {
      if (!(err instanceof UndecodableError)) throw err;
      reject('undecodable', err.message, null);
      continue;
    }
    if (rule && decoder) {
      const name = decoder.nameOf?.(m.value);
      if (name !== rule.schema) {
        const id = m.value && m.value.length >= 5 ? m.value.readUInt32BE(1) : -1;
        reject(
          'foreign_schema',
          `schema id ${id} is ${name ?? 'no record'}, not ${rule.schema} (the values of ${topic})`,
          null,
        );
        continue;
      }
      const problem = rule.check?.(value);
      if (problem) {
        reject('invalid_record', problem.message, problem.field, value);
        continue;
      }
    }
    good.push({
      topic,
      partition,
      offset: m.offset,
      key: m.key ? m.key.toString() : null,
      value,
      timestamp: Number(m.timestamp),
      raw: m.value,
    });
  }
  return { good, bad };
}
