/**
 * The event contract evolves under BACKWARD compatibility, enforced by the registry: with the
 * project's `registerSchema` on a unique subject holding the real UserEvent schema, breaking
 * changes are refused with SchemaIncompatibleError and leave the subject as it was, an added
 * optional field is accepted as a new version, and registering a known schema is idempotent.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  compatibilityOf,
  registerSchema,
  SchemaIncompatibleError,
} from '../../../schemas/registry.js';
import { readSchema, type AvroRecordSchema } from '../../../schemas/subjects.js';
import { config, requireServices, uniq } from '../harness.js';

/** A mutable deep copy (readSchema returns a frozen object). */
const copy = (s: AvroRecordSchema): AvroRecordSchema =>
  JSON.parse(JSON.stringify(s)) as AvroRecordSchema;

async function versions(subject: string): Promise<number[]> {
  const res = await fetch(
    `${config.registry.url}/subjects/${encodeURIComponent(subject)}/versions`,
  );
  assert.equal(res.status, 200, `GET versions of ${subject}: ${res.status}`);
  return (await res.json()) as number[];
}

test('UserEvent evolves only BACKWARD-compatibly', { timeout: 60_000 }, async (t) => {
  if (!(await requireServices(t, 'registry'))) return;
  const url = config.registry.url;
  const subject = `${uniq('test.compat')}-value`;
  const original = readSchema('UserEvent');
  try {
    const id = await registerSchema(url, { subject, schema: original });
    assert.ok(Number.isInteger(id) && id > 0, `id ${id}`);
    assert.equal(await compatibilityOf(url, subject), 'BACKWARD');
    assert.deepEqual(await versions(subject), [1]);

    // A new required field without a default: new readers cannot read old records.
    const required = copy(original);
    required.fields.push({ name: 'tenant', type: 'string' });
    // `ts` from long to string: a long cannot be read as a string.
    const retyped = copy(original);
    const ts = retyped.fields.find((f) => f.name === 'ts');
    assert.ok(ts);
    ts.type = 'string';
    for (const [name, schema] of [
      ['required field without default', required],
      ['ts as string', retyped],
    ] as const) {
      await assert.rejects(
        registerSchema(url, { subject, schema }),
        (err: unknown) => {
          assert.ok(err instanceof SchemaIncompatibleError, `${name}: ${String(err)}`);
          assert.equal(err.code, 'RECSYS_SCHEMA_INCOMPATIBLE');
          assert.equal(err.subject, subject);
          return true;
        },
        `${name} was accepted`,
      );
    }
    assert.deepEqual(await versions(subject), [1], 'a refused schema created a version');

    // An optional field with a default null is compatible: a new version with a new id.
    const optional = copy(original);
    optional.fields.push({ name: 'referrer', type: ['null', 'string'], default: null });
    const optionalId = await registerSchema(url, { subject, schema: optional });
    assert.notEqual(optionalId, id);
    assert.deepEqual(await versions(subject), [1, 2]);

    // Registering what is already there returns its id and adds nothing.
    assert.equal(await registerSchema(url, { subject, schema: original }), id);
    assert.equal(await registerSchema(url, { subject, schema: optional }), optionalId);
    assert.deepEqual(await versions(subject), [1, 2]);
    assert.equal(await compatibilityOf(url, subject), 'BACKWARD');
  } finally {
    const path = `${url}/subjects/${encodeURIComponent(subject)}`;
    for (const u of [path, `${path}?permanent=true`]) {
      await fetch(u, { method: 'DELETE' }).catch(() => undefined);
    }
  }
});
