/**
 * The durability proof: one real client (mosquitto_pub -l, QoS 1) streams 10,000 events while
 * the bridge is SIGKILLed mid-stream and a new bridge starts with the same environment (same
 * MQTT client id and share group, so the broker hands it the persistent session: messages the
 * dead bridge had not acknowledged and those queued while no bridge ran). Every eventId must be
 * in Kafka afterwards; duplicates are allowed (at-least-once), loss is not.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import kafkajs from 'kafkajs';
import { sleep, withTimeout } from '../../../core/retry.js';
import { EVENT_TYPES, type UserEvent } from '../../../schemas/types.js';
import { requireServices, testKafka, uniq } from '../harness.js';
import {
  addMqttUser,
  AvroReader,
  bridgeSetup,
  Cleanup,
  MQTT_HOST,
  MQTT_PORT,
  readDecoded,
  validEvent,
} from './bridge-process.js';

const N = 10_000;
const KILL_AT = 2_000;
/** stdin is fed at about this rate, so the stream outlasts the kill and the restart. */
const LINES_PER_TICK = 100;
const TICK_MS = 50;

const cleanup = new Cleanup();
after(() => cleanup.run());

test('SIGKILL of the bridge mid-stream loses no event', { timeout: 180_000 }, async (t) => {
  const testStart = Date.now();
  if (!(await requireServices(t, 'kafka', 'registry', 'mosquitto'))) return;
  const setup = await bridgeSetup();
  const user = uniq('u');
  const password = uniq('pw');
  const first = cleanup.bridge(setup);
  await Promise.all([first.waitReady(), addMqttUser(user, password)]);

  const dir = await mkdtemp(join(tmpdir(), 'recsys-kill-'));
  const admin = testKafka('kill').admin();
  await admin.connect();
  const pub = spawn(
    'mosquitto_pub',
    ['-h', MQTT_HOST, '-p', MQTT_PORT, '-V', 'mqttv5', '-q', '1'].concat([
      '-u',
      user,
      '-P',
      password,
      '-t',
      `recsys/events/${user}`,
      '-l',
    ]),
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  let pubErr = '';
  pub.stderr.on('data', (d: Buffer) => (pubErr += d.toString()));
  pub.stdout.resume();
  const pubExit = new Promise<number | null>((resolve, reject) => {
    pub.once('error', reject);
    pub.once('exit', (code) => resolve(code));
  });
  pub.stdin.on('error', () => undefined);
  let stopFeeding = false;

  try {
    const ids: string[] = [];
    const lines: string[] = [];
    for (let i = 0; i < N; i++) {
      const e = validEvent(user, {
        type: EVENT_TYPES[i % EVENT_TYPES.length] as string,
        sessionId: `s-${Math.floor(i / 100)}`,
        context: { page: 'home', position: i % 50, device: 'web' },
      });
      ids.push(e.eventId);
      lines.push(JSON.stringify(e));
    }
    assert.equal(new Set(ids).size, N, 'eventIds are not unique');
    const file = join(dir, 'events.jsonl');
    await writeFile(file, lines.join('\n') + '\n');

    // Every event of one user lands on one partition (key = userId, murmur2 like the bridge's
    // producer). Its offsets are what the kill waits for: other clients' MQTT traffic, which this
    // bridge receives too, is spread over all partitions and mostly lands elsewhere.
    const meta = await admin.fetchTopicMetadata({ topics: [setup.topics.events] });
    const ourPartition = kafkajs.Partitioners.DefaultPartitioner()({
      topic: setup.topics.events,
      partitionMetadata: meta.topics[0]?.partitions ?? [],
      message: { key: user, value: null },
    });
    const partitionSize = async (): Promise<number> => {
      const offsets = await admin.fetchTopicOffsets(setup.topics.events);
      return Number(offsets.find((o) => o.partition === ourPartition)?.high ?? 0);
    };

    // Feed the file to the one client's stdin in paced chunks.
    const fileLines = (await readFile(file, 'utf8')).split('\n').filter(Boolean);
    assert.equal(fileLines.length, N);
    const baseline = await partitionSize();
    const t0 = Date.now();
    let linesFed = 0;
    const feeding = (async () => {
      for (let i = 0; i < fileLines.length && !stopFeeding; i += LINES_PER_TICK) {
        const chunk = fileLines.slice(i, i + LINES_PER_TICK);
        if (!pub.stdin.write(chunk.join('\n') + '\n')) {
          await new Promise((r) => pub.stdin.once('drain', r));
        }
        linesFed += chunk.length;
        await sleep(TICK_MS);
      }
      pub.stdin.end();
    })();

    // Kill once the stream put KILL_AT records into the events topic.
    let atKill = 0;
    for (;;) {
      atKill = (await partitionSize()) - baseline;
      if (atKill >= KILL_AT && linesFed >= KILL_AT) break;
      assert.ok(first.alive, `first bridge died on its own:\n${first.output}`);
      assert.ok(Date.now() - t0 < 60_000, `only ${atKill} records after 60 s:\n${first.output}`);
      await sleep(20);
    }
    const pubRunningAtKill = pub.exitCode === null;
    const killMs = Date.now() - t0;
    await first.kill('SIGKILL');
    const afterKill = (await partitionSize()) - baseline;
    const readAt = Date.now();
    const sent = new Set(ids);
    const oursAtKill = new Set(
      (await readDecoded<UserEvent>(new AvroReader(), setup.topics.events, user))
        .map((r) => r.value.eventId)
        .filter((id) => sent.has(id)),
    ).size;
    await sleep(Math.max(0, 1000 - (Date.now() - readAt)));

    // The kill happened mid-stream: the client was still publishing, and Kafka held some of
    // the events but not all of them.
    assert.ok(pubRunningAtKill, 'mosquitto_pub had already finished when the bridge was killed');
    assert.ok(atKill < N, `the user's partition already held ${atKill} records at kill time`);
    assert.ok(afterKill < N, `the user's partition held ${afterKill} records after the kill`);
    assert.ok(
      oursAtKill > 0 && oursAtKill < N,
      `${oursAtKill} of our events were in Kafka at kill time`,
    );

    const restartAt = Date.now();
    const second = cleanup.bridge(setup);
    await second.waitReady();
    const restartMs = Date.now() - restartAt;

    const code = await withTimeout(
      pubExit,
      120_000,
      () => new Error('mosquitto_pub did not finish within 120 s'),
    );
    assert.equal(code, 0, `mosquitto_pub exit ${code}: ${pubErr}`);
    await feeding;
    const pubMs = Date.now() - t0;

    // Consume the whole events topic until every eventId is there (or the time is up).
    const reader = new AvroReader();
    // Leave time in the test's bound to report what is missing.
    const deadline = Math.min(Date.now() + 90_000, testStart + 170_000);
    let counts = new Map<string, number>();
    let missing = N;
    let partitionsUsed = new Set<number>();
    for (;;) {
      counts = new Map();
      partitionsUsed = new Set();
      for (const r of await readDecoded<UserEvent>(reader, setup.topics.events, user)) {
        counts.set(r.value.eventId, (counts.get(r.value.eventId) ?? 0) + 1);
        partitionsUsed.add(r.partition);
      }
      missing = ids.filter((id) => !counts.has(id)).length;
      if (missing === 0 || Date.now() > deadline) break;
      await sleep(1000);
    }
    const total = [...counts.values()].reduce((a, b) => a + b, 0);
    const duplicates = total - counts.size;
    t.diagnostic(
      `kill after ${killMs} ms with ${atKill} records in the user's partition (${oursAtKill} of ours; ` +
        `mosquitto_pub still running: ${pubRunningAtKill}); new bridge ready ${restartMs} ms after ` +
        `its start; mosquitto_pub done after ${pubMs} ms; all present after ${Date.now() - t0} ms; ` +
        `${total} records for ${counts.size} eventIds: ${duplicates} duplicates`,
    );
    assert.equal(missing, 0, `${missing} of ${N} events lost; bridge output:\n${second.output}`);
    assert.ok(
      [...counts.keys()].every((id) => sent.has(id)),
      'records of our user that we never sent',
    );
    assert.deepEqual([...partitionsUsed], [ourPartition], 'one user, one partition');
    assert.ok(second.alive, `second bridge exited:\n${second.output}`);
  } finally {
    stopFeeding = true;
    if (pub.exitCode === null && pub.signalCode === null) pub.kill('SIGKILL');
    await pubExit.catch(() => undefined);
    await admin.disconnect().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
});
