/**
 * `POST /v1/events` of a real ingest process, with fetch and curl: 202 once the events are in
 * Kafka; batches are all or nothing (a bad event rejects the batch with 400 naming the event and
 * field, nothing reaches the events topic, the rejection reaches the DLQ); 413 past the body,
 * event or batch bound; 415 for a non-JSON content type; 400 bad_json. Only with a credential:
 * 401 without one (before a body over the bound is read, so never a 413), 403 for a user's JWT posting another user's event, 202 with a service token
 * (either of two while rotating) or the user's own JWT; refusals counted in /metrics, never in
 * the DLQ. Also /healthz and /readyz.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { DlqRecord, UserEvent } from '../../../schemas/types.js';
import { mintToken } from '../../../core/auth.js';
import { config, requireServices, uniq } from '../harness.js';
import {
  AvroReader,
  bridgeSetup,
  Cleanup,
  expectedFields,
  readDecoded,
  validEvent,
  waitForTopic,
  type BridgeProcess,
  type BridgeSetup,
  type EventJson,
  run,
  sentFields,
} from './bridge-process.js';

interface ErrorBody {
  error: {
    code: string;
    message: string;
    reason?: string;
    field?: string | null;
    index?: number;
  };
}

describe('ingest: HTTP POST /v1/events', () => {
  const cleanup = new Cleanup();
  const reader = new AvroReader();
  const user = uniq('uh');
  let setup: BridgeSetup;
  let bridge: BridgeProcess;
  let url: string;
  let startError: Error | null = new Error('not started');
  /** eventIds of every batch that was refused: none may reach the events topic. */
  const refusedIds: string[] = [];
  const rotated = `svc-rotated-${uniq('tok')}`;

  before(async () => {
    try {
      setup = await bridgeSetup({
        RECSYS_HTTP_MAX_BODY_BYTES: '65536',
        RECSYS_INGEST_MAX_BATCH_EVENTS: '10',
        // Its MQTT side subscribes where nobody publishes (users write one level under
        // recsys/events), so other clients' MQTT traffic cannot delay this bridge's Kafka writes.
        RECSYS_MQTT_TOPIC_PREFIX: `recsys/events/${uniq('none')}`,
      });
      url = `${setup.baseUrl}/v1/events`;
      // A second service token, as while rotating: both are accepted.
      setup.env.RECSYS_INGEST_TOKENS = `${setup.ingestToken}, ${rotated}`;
      bridge = cleanup.bridge(setup);
      await bridge.waitReady();
      startError = null;
    } catch (err) {
      startError = err as Error;
    }
  });
  after(() => cleanup.run());

  /** POSTs `body` with the service token, or with `authorization` as given ('' = none). */
  const post = async (
    body: string,
    contentType = 'application/json',
    authorization = `Bearer ${setup.ingestToken}`,
  ): Promise<{ status: number; json: unknown; text: string }> => {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': contentType, ...(authorization ? { authorization } : {}) },
      body,
      signal: AbortSignal.timeout(20_000),
    });
    const text = await res.text();
    let json: unknown = null;
    try {
      json = JSON.parse(text);
    } catch {
      // asserted by the callers
    }
    // On a failure, the message shows what the bridge logged.
    return { status: res.status, json, text: `${text}\nbridge output:\n${bridge.output}` };
  };

  const guard = async (t: Parameters<typeof requireServices>[0]): Promise<boolean> => {
    if (!(await requireServices(t, 'kafka', 'registry', 'mosquitto'))) return false;
    assert.ifError(startError);
    return true;
  };

  const waitForEvents = (ids: string[]): Promise<Array<{ value: UserEvent; key: string | null }>> =>
    waitForTopic<UserEvent>(
      reader,
      setup.topics.events,
      user,
      (rs) => ids.every((id) => rs.some((r) => r.value.eventId === id)),
      30_000,
    );

  test(
    '/healthz is 200 and /readyz is 200 naming kafka, registry and mqtt',
    { timeout: 30_000 },
    async (t) => {
      if (!(await guard(t))) return;
      const health = await fetch(`${setup.baseUrl}/healthz`);
      assert.equal(health.status, 200);
      const ready = await fetch(`${setup.baseUrl}/readyz`);
      assert.equal(ready.status, 200);
      const body = (await ready.json()) as { checks: Record<string, { ok: boolean }> };
      for (const name of ['kafka', 'registry', 'mqtt']) {
        assert.equal(body.checks[name]?.ok, true, `readyz check ${name}: ${JSON.stringify(body)}`);
      }
    },
  );

  test(
    'a valid batch of 3 is 202 {accepted: 3} and all 3 are in Kafka',
    { timeout: 60_000 },
    async (t) => {
      if (!(await guard(t))) return;
      const batch: EventJson[] = [
        validEvent(user, { type: 'view', context: { page: 'home', position: 1, device: 'web' } }),
        validEvent(user, { type: 'purchase', value: 42.5, sessionId: 'http-s1' }),
        validEvent(user, { type: 'like' }),
      ];
      const res = await post(JSON.stringify(batch));
      assert.equal(res.status, 202, res.text);
      assert.deepEqual(res.json, { accepted: 3 });
      const records = await waitForEvents(batch.map((e) => e.eventId));
      for (const e of batch) {
        const r = records.find((x) => x.value.eventId === e.eventId);
        assert.ok(r, `${e.eventId} not in Kafka`);
        assert.equal(r.key, user);
        assert.deepEqual(sentFields(r.value), expectedFields(e));
        assert.equal(r.value.source, 'http');
      }
    },
  );

  test(
    'a single event object (sent with curl) is 202 and in Kafka',
    { timeout: 60_000 },
    async (t) => {
      if (!(await guard(t))) return;
      const e = validEvent(user, { type: 'click', context: { page: 'search' } });
      const res = await run(
        'curl',
        [
          '-s',
          '-o',
          '-',
          '-w',
          '\n%{http_code}',
          '-X',
          'POST',
          '-H',
          'content-type: application/json',
          '-H',
          `authorization: Bearer ${setup.ingestToken}`,
        ].concat(['--data-binary', '@-', url]),
        { input: JSON.stringify(e), timeoutMs: 20_000 },
      );
      assert.equal(res.code, 0, res.stderr);
      const lines = res.stdout.split('\n');
      assert.equal(lines.at(-1), '202', res.stdout);
      assert.deepEqual(JSON.parse(lines.slice(0, -1).join('\n')), { accepted: 1 });
      const records = await waitForEvents([e.eventId]);
      const r = records.find((x) => x.value.eventId === e.eventId);
      assert.ok(r);
      assert.deepEqual(sentFields(r.value), expectedFields(e));
    },
  );

  test(
    'a batch with one bad field is 400, all or nothing, and the rejection is in the DLQ',
    { timeout: 60_000 },
    async (t) => {
      if (!(await guard(t))) return;
      const batch = [validEvent(user), validEvent(user, { type: 'teleport' }), validEvent(user)];
      refusedIds.push(...batch.map((e) => e.eventId));
      const res = await post(JSON.stringify(batch));
      assert.equal(res.status, 400, res.text);
      const { error } = res.json as ErrorBody;
      assert.equal(error.code, 'RECSYS_EVENT_REJECTED');
      assert.equal(error.reason, 'bad_value');
      assert.equal(error.field, 'type');
      assert.equal(error.index, 1);
      assert.match(error.message, /events\[1\]/);
      assert.match(error.message, /"type"/);

      const original = Buffer.from(JSON.stringify(batch[1]));
      const dlq = await waitForTopic<DlqRecord>(
        reader,
        setup.topics.dlq,
        user,
        (rs) => rs.some((r) => r.value.original.equals(original)),
        30_000,
      );
      const r = dlq.find((x) => x.value.original.equals(original));
      assert.ok(r, 'the rejected event is not in the DLQ');
      assert.equal(r.value.reason, 'bad_value');
      assert.equal(r.value.field, 'type');
      assert.equal(r.value.source, 'http');
      assert.equal(r.value.topic, null);
      assert.equal(r.value.userId, user);
      // Only the bad event is a rejection; its valid neighbours are not in the DLQ either.
      for (const good of [batch[0], batch[2]]) {
        const bytes = Buffer.from(JSON.stringify(good));
        assert.ok(
          !dlq.some((x) => x.value.original.equals(bytes)),
          'a valid event went to the DLQ',
        );
      }
    },
  );

  test(
    'bounds: body over the limit, event over 16 KiB, batch over the limit are 413',
    { timeout: 60_000 },
    async (t) => {
      if (!(await guard(t))) return;
      // Body of 100 KiB against RECSYS_HTTP_MAX_BODY_BYTES=65536, with a content-length...
      const huge = JSON.stringify([
        validEvent(user, { context: { page: 'p'.repeat(100 * 1024) } }),
      ]);
      const declared = await post(huge);
      assert.equal(declared.status, 413, declared.text);
      assert.equal((declared.json as ErrorBody).error.code, 'RECSYS_PAYLOAD_TOO_LARGE');
      // ...and streamed without one (chunked), so the server has to count.
      const chunked = await run(
        'curl',
        [
          '-s',
          '-o',
          '/dev/null',
          '-w',
          '%{http_code}',
          '-X',
          'POST',
          '-H',
          'content-type: application/json',
          '-H',
          `authorization: Bearer ${setup.ingestToken}`,
        ].concat(['-H', 'transfer-encoding: chunked', '--data-binary', '@-', url]),
        { input: huge, timeoutMs: 20_000 },
      );
      assert.equal(chunked.stdout, '413', `chunked: ${chunked.stdout} ${chunked.stderr}`);

      // One event over 16 KiB inside a small batch.
      const big = [
        validEvent(user),
        validEvent(user, { context: { page: 'x'.repeat(17 * 1024) } }),
        validEvent(user),
      ];
      refusedIds.push(...big.map((e) => e.eventId));
      const body = JSON.stringify(big);
      assert.ok(body.length < 65536 && body.length > 16 * 1024);
      const tooLarge = await post(body);
      assert.equal(tooLarge.status, 413, tooLarge.text);
      const err = (tooLarge.json as ErrorBody).error;
      assert.equal(err.reason, 'too_large');
      assert.equal(err.index, 1);

      // 11 events against RECSYS_INGEST_MAX_BATCH_EVENTS=10; 10 are fine.
      const eleven = Array.from({ length: 11 }, () => validEvent(user));
      refusedIds.push(...eleven.map((e) => e.eventId));
      const overBatch = await post(JSON.stringify(eleven));
      assert.equal(overBatch.status, 413, overBatch.text);
      assert.equal((overBatch.json as ErrorBody).error.code, 'RECSYS_PAYLOAD_TOO_LARGE');
      const ten = Array.from({ length: 10 }, () => validEvent(user));
      const atLimit = await post(JSON.stringify(ten));
      assert.equal(atLimit.status, 202, atLimit.text);
      assert.deepEqual(atLimit.json, { accepted: 10 });
    },
  );

  test(
    'an unknown sender with a body over the bound gets 401, not 413, before its body is read',
    { timeout: 60_000 },
    async (t) => {
      if (!(await guard(t))) return;
      const refused = async (status: string, code: string): Promise<number> => {
        const text = await (await fetch(`${setup.baseUrl}/metrics`)).text();
        const line = text
          .split('\n')
          .find((l) => l.startsWith('recsys_ingest_http_refused_total{') && l.includes(code));
        return line && line.includes(`status="${status}"`) ? Number(line.split(' ').pop()) : 0;
      };
      const before = { 401: await refused('401', 'RECSYS_UNAUTHENTICATED') };
      const before413 = await refused('413', 'RECSYS_PAYLOAD_TOO_LARGE');
      const forged = `Bearer ${await mintToken(config.serving, user, 600)}x`;
      const huge = JSON.stringify([
        validEvent(user, { context: { page: 'p'.repeat(100 * 1024) } }),
      ]);
      // With a content-length over the bound (fetch), and streamed without one (curl, 4 MiB).
      const declared = await post(huge, 'application/json', forged);
      assert.equal(declared.status, 401, declared.text);
      assert.equal((declared.json as ErrorBody).error.code, 'RECSYS_UNAUTHENTICATED');
      const big = Buffer.alloc(4 << 20, 0x20);
      const chunked = await run(
        'curl',
        ['-s', '-o', '/dev/null', '-w', '%{http_code} %{size_upload}', '-X', 'POST'].concat([
          '-H',
          'content-type: application/json',
          '-H',
          `authorization: ${forged}`,
          '-H',
          'transfer-encoding: chunked',
          '--data-binary',
          '@-',
          url,
        ]),
        { input: big, timeoutMs: 20_000 },
      );
      const [code, uploaded] = chunked.stdout.split(' ').map(Number);
      assert.equal(code, 401, `chunked: ${chunked.stdout} ${chunked.stderr}`);
      assert.ok((uploaded as number) < big.length, `the whole body was sent: ${uploaded} bytes`);
      assert.equal(await refused('401', 'RECSYS_UNAUTHENTICATED'), before[401] + 2);
      assert.equal(
        await refused('413', 'RECSYS_PAYLOAD_TOO_LARGE'),
        before413,
        'a 413 was counted',
      );
      // The same body from a known sender is 413 (the bound still holds).
      const known = await post(huge);
      assert.equal(known.status, 413, known.text);
    },
  );

  test(
    'wrong content type is 415, invalid JSON is 400 bad_json (and in the DLQ)',
    { timeout: 60_000 },
    async (t) => {
      if (!(await guard(t))) return;
      const e = validEvent(user);
      refusedIds.push(e.eventId);
      const wrongType = await post(JSON.stringify(e), 'text/plain');
      assert.equal(wrongType.status, 415, wrongType.text);
      assert.equal((wrongType.json as ErrorBody).error.code, 'RECSYS_UNSUPPORTED_MEDIA_TYPE');

      const notJson = `[{"eventId":"${crypto.randomUUID()}", "userId": "${user}",`;
      const bad = await post(notJson);
      assert.equal(bad.status, 400, bad.text);
      const err = (bad.json as ErrorBody).error;
      assert.equal(err.code, 'RECSYS_EVENT_REJECTED');
      assert.equal(err.reason, 'bad_json');
      const original = Buffer.from(notJson);
      const dlq = await waitForTopic<DlqRecord>(
        reader,
        setup.topics.dlq,
        undefined,
        (rs) => rs.some((r) => r.value.original.equals(original)),
        30_000,
      );
      const r = dlq.find((x) => x.value.original.equals(original));
      assert.ok(r, 'the invalid body is not in the DLQ');
      assert.equal(r.value.reason, 'bad_json');
      assert.equal(r.value.source, 'http');
    },
  );

  test(
    'credentials: 401 without, 403 for another user, 202 for a user or either service token; refusals counted, not dead-lettered',
    { timeout: 60_000 },
    async (t) => {
      if (!(await guard(t))) return;
      const metric = async (status: string, code: string): Promise<number> => {
        const text = await (await fetch(`${setup.baseUrl}/metrics`)).text();
        const line = text
          .split('\n')
          .find(
            (l) =>
              l.startsWith('recsys_ingest_http_refused_total{') &&
              l.includes(`status="${status}"`) &&
              l.includes(`code="${code}"`),
          );
        return line ? Number(line.split(' ').pop()) : 0;
      };
      const before401 = await metric('401', 'RECSYS_UNAUTHENTICATED');
      const before403 = await metric('403', 'RECSYS_FORBIDDEN');
      const other = uniq('other');
      const userToken = await mintToken(config.serving, user, 600);
      /** eventIds of the refused requests: none may reach the DLQ (nor the events topic). */
      const authRefused: string[] = [];
      const refuse = async (status: number, events: EventJson[], auth: string): Promise<void> => {
        authRefused.push(...events.map((e) => e.eventId));
        refusedIds.push(...events.map((e) => e.eventId));
        const res = await post(JSON.stringify(events), 'application/json', auth);
        assert.equal(res.status, status, res.text);
        const code = status === 401 ? 'RECSYS_UNAUTHENTICATED' : 'RECSYS_FORBIDDEN';
        assert.equal((res.json as ErrorBody).error.code, code);
      };
      await refuse(401, [validEvent(user)], '');
      await refuse(401, [validEvent(user)], 'Bearer not-a-token-and-no-service-token');
      await refuse(401, [validEvent(user)], `Basic ${Buffer.from('a:b').toString('base64')}`);
      await refuse(401, [validEvent(user)], `Bearer ${userToken}x`);
      // A bad credential is 401 whatever else is wrong (here the content type).
      const wrongType = await post('x', 'text/plain', 'Bearer not-a-token');
      assert.equal(wrongType.status, 401, wrongType.text);
      // A user's token posts only that user's events: one foreign event refuses the batch.
      await refuse(403, [validEvent(user), validEvent(other)], `Bearer ${userToken}`);
      assert.equal(await metric('401', 'RECSYS_UNAUTHENTICATED'), before401 + 5);
      assert.equal(await metric('403', 'RECSYS_FORBIDDEN'), before403 + 1);

      const own = [validEvent(user), validEvent(user)];
      const asUser = await post(JSON.stringify(own), 'application/json', `Bearer ${userToken}`);
      assert.equal(asUser.status, 202, asUser.text);
      const anyUser = [validEvent(other), validEvent(user)];
      const asRotated = await post(
        JSON.stringify(anyUser),
        'application/json',
        `Bearer ${rotated}`,
      );
      assert.equal(asRotated.status, 202, asRotated.text);
      await waitForEvents([...own, anyUser[1] as EventJson].map((e) => e.eventId));

      // A 4xx that writes the DLQ does so before it answers: by now it would be there.
      const dlq = await readDecoded<DlqRecord>(reader, setup.topics.dlq);
      const leaked = dlq.filter((r) => authRefused.some((id) => r.value.original.includes(id)));
      assert.deepEqual(leaked, [], 'a refused request reached the DLQ');
    },
  );

  test('no event of a refused request reached the events topic', { timeout: 60_000 }, async (t) => {
    if (!(await guard(t))) return;
    assert.ok(refusedIds.length >= 15, 'the refusing tests did not run');
    // A valid event sent last: once it is in Kafka, anything sent before it would be too.
    const sentinel = validEvent(user);
    const res = await post(JSON.stringify(sentinel));
    assert.equal(res.status, 202, res.text);
    await waitForEvents([sentinel.eventId]);
    const all = await readDecoded<UserEvent>(reader, setup.topics.events);
    assert.ok(all.some((r) => r.value.eventId === sentinel.eventId));
    const refused = new Set(refusedIds);
    const leaked = all.filter((r) => refused.has(r.value.eventId)).map((r) => r.value.eventId);
    assert.deepEqual(leaked, [], 'events of refused requests are in the events topic');
  });
});
