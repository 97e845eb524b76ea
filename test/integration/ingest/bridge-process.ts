/**
 * What the ingest tests share: an ingest process (`node dist/stream/main.js`) started as a child
 * with an environment of its own (unique topics, share group, MQTT client id, HTTP port), so
 * tests never read each other's topics. Every share group gets a copy of every user's MQTT
 * events, so a bridge also writes other clients' traffic: tests use unique users and look only
 * at their own records (Kafka key = userId). Also: MQTT accounts made with the stack's
 * own tool; `mosquitto_pub`; and a reader for whole Kafka topics through kcat (raw bytes) with
 * Avro decoding by the writer schema the registry serves for the id in the Confluent frame.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import avro from 'avsc';
import kafkajs from 'kafkajs';
import { sleep } from '../../../core/retry.js';
import { connectMqtt } from '../../../stream/mqtt.js';
import type { UserEvent } from '../../../schemas/types.js';
import { addMqttUser, CLI, config, kcatKafka, run, runBytes, testKafka, uniq } from '../harness.js';

export { addMqttUser, CLI, run };

/** The tests run from the checkout root. */
export const ROOT = process.cwd();
export const MAIN = join(ROOT, 'dist', 'stream', 'main.js');
export const MQTT_HOST = new URL(config.mqtt.url).hostname;
export const MQTT_PORT = new URL(config.mqtt.url).port || '1883';
/** The bridge listener (only the bridge account may connect there). */
export const BRIDGE_PORT = new URL(config.mqtt.bridgeUrl).port || '1884';

/** A port nobody listens on right now (bound to 0, then released). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error('no port'))));
    });
  });
}

export interface BridgeSetup {
  /** The full environment of the child (the test runner's, plus the isolating variables). */
  env: NodeJS.ProcessEnv;
  /** The bridge's service token (RECSYS_INGEST_TOKENS) for `POST /v1/events`. */
  ingestToken: string;
  /** Headers of a `POST /v1/events` with that token. */
  postHeaders: Record<string, string>;
  topics: { events: string; dlq: string; served: string };
  port: number;
  clientId: string;
  baseUrl: string;
}

/**
 * An isolated environment for one bridge: unique topics, share group and MQTT client id, a free
 * HTTP port, a fresh service token for HTTP ingest, warn-level logs. `overrides` win (e.g. a closed Kafka port).
 */
export async function bridgeSetup(overrides: Record<string, string> = {}): Promise<BridgeSetup> {
  const id = uniq('test');
  const port = await freePort();
  const topics = { events: `${id}.events`, dlq: `${id}.dlq`, served: `${id}.served` };
  const clientId = `${id}/bridge`;
  const ingestToken = `svc-${randomBytes(24).toString('base64url')}`;
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    RECSYS_TOPIC_EVENTS: topics.events,
    RECSYS_TOPIC_DLQ: topics.dlq,
    RECSYS_TOPIC_SERVED: topics.served,
    RECSYS_MQTT_SHARE_GROUP: `${id}-group`,
    RECSYS_MQTT_CLIENT_ID: clientId,
    RECSYS_HTTP_HOST: '127.0.0.1',
    RECSYS_HTTP_PORT: String(port),
    RECSYS_LOG_LEVEL: 'warn',
    RECSYS_INGEST_TOKENS: ingestToken,
    ...overrides,
  };
  return {
    env,
    ingestToken,
    postHeaders: { 'content-type': 'application/json', authorization: `Bearer ${ingestToken}` },
    topics,
    port,
    clientId,
    baseUrl: `http://127.0.0.1:${port}`,
  };
}

const OUTPUT_KEEP = 64 * 1024;

/** One ingest child process. Its output is kept (the tail) for failure messages. */
export class BridgeProcess {
  readonly child: ChildProcess;
  readonly baseUrl: string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  #output = '';

  private constructor(setup: BridgeSetup, roles: string[]) {
    this.baseUrl = setup.baseUrl;
    this.child = spawn(process.execPath, [MAIN, ...roles], {
      cwd: ROOT,
      env: setup.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const keep = (d: Buffer): void => {
      this.#output = (this.#output + d.toString()).slice(-OUTPUT_KEEP);
    };
    this.child.stdout?.on('data', keep);
    this.child.stderr?.on('data', keep);
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => resolve({ code, signal }));
    });
  }

  /** Starts `dist/stream/main.js` with `roles` (none: the ingest role). */
  static start(setup: BridgeSetup, roles: string[] = []): BridgeProcess {
    return new BridgeProcess(setup, roles);
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The tail of the child's stdout and stderr. */
  get output(): string {
    return this.#output;
  }

  /** Polls `GET /readyz` until 200; fails early if the child exits. */
  async waitReady(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = 'no answer';
    while (Date.now() < deadline) {
      if (!this.alive) {
        assert.fail(`bridge exited before it was ready (${last}); output:\n${this.output}`);
      }
      try {
        const res = await fetch(`${this.baseUrl}/readyz`, { signal: AbortSignal.timeout(5000) });
        last = `${res.status} ${await res.text()}`;
        if (res.status === 200) return;
      } catch (err) {
        last = (err as Error).message;
      }
      await sleep(250);
    }
    assert.fail(`bridge not ready within ${timeoutMs} ms (last: ${last}); output:\n${this.output}`);
  }

  /** Sends `signal` (SIGKILL by default) and waits for the exit. Idempotent. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (this.alive) this.child.kill(signal);
    await this.exited;
  }
}

/**
 * Tracks what a test started so `after` can undo it: child processes are killed, the bridges'
 * persistent MQTT sessions are removed (otherwise the broker would keep queueing every event for
 * them), and the unique topics and their registry subjects are deleted.
 */
export class Cleanup {
  readonly #bridges: BridgeProcess[] = [];
  readonly #clientIds = new Set<string>();
  readonly #topics = new Set<string>();

  /** Starts `dist/stream/main.js` with `roles` (none: the ingest role) and tracks it. */
  bridge(setup: BridgeSetup, roles: string[] = []): BridgeProcess {
    const bridge = BridgeProcess.start(setup, roles);
    this.#bridges.push(bridge);
    this.#clientIds.add(setup.clientId);
    for (const t of Object.values(setup.topics)) this.#topics.add(t);
    return bridge;
  }

  async run(): Promise<void> {
    await Promise.all(this.#bridges.map((b) => b.kill()));
    for (const clientId of this.#clientIds) await purgeMqttSession(clientId).catch(() => undefined);
    if (this.#topics.size > 0) await deleteTopics([...this.#topics]).catch(() => undefined);
    for (const topic of this.#topics) {
      // Soft delete, then permanent (the Confluent API needs both steps).
      const subject = `${config.registry.url}/subjects/${encodeURIComponent(`${topic}-value`)}`;
      for (const url of [subject, `${subject}?permanent=true`]) {
        await fetch(url, { method: 'DELETE' }).catch(() => undefined);
      }
    }
  }
}

/** Connects with the bridge's client id and a clean start, which discards its stored session. */
export async function purgeMqttSession(clientId: string): Promise<void> {
  const client = await connectMqtt({
    url: config.mqtt.bridgeUrl,
    username: config.mqtt.username,
    password: config.mqtt.password,
    clientId,
    persistent: false,
    connectTimeoutMs: 3000,
  });
  await client.endAsync();
}

export async function deleteTopics(topics: string[]): Promise<void> {
  const admin = testKafka('cleanup').admin();
  await admin.connect();
  try {
    const existing = new Set(await admin.listTopics());
    const mine = topics.filter((t) => existing.has(t));
    if (mine.length > 0) await admin.deleteTopics({ topics: mine, timeout: 10_000 });
  } finally {
    await admin.disconnect();
  }
}

/** Sum of the high watermarks of a topic: how many records it holds (nothing is compacted). */
export async function topicSize(admin: kafkajs.Admin, topic: string): Promise<number> {
  const offsets = await admin.fetchTopicOffsets(topic);
  return offsets.reduce((sum, p) => sum + Number(p.high), 0);
}

// ---------------------------------------------------------------- MQTT accounts and publishing

export interface PublishOptions {
  username?: string;
  password?: string;
  /** Default: `<prefix>/<username>`. */
  topic?: string;
  debug?: boolean;
  /**
   * `m` (default): the payload is the `-m` argument; `s`: stdin is the payload (`-s`); `l`: each
   * line of stdin is one message, all over one connection (`-l`).
   */
  via?: 'm' | 's' | 'l';
}

/** One `mosquitto_pub -V mqttv5 -q 1` of `payload`, byte for byte (no shell in between). */
export function mosquittoPub(
  payload: string | Buffer,
  opts: PublishOptions,
): ReturnType<typeof run> {
  const args = ['-h', MQTT_HOST, '-p', MQTT_PORT, '-V', 'mqttv5', '-q', '1'];
  if (opts.username !== undefined) args.push('-u', opts.username);
  if (opts.password !== undefined) args.push('-P', opts.password);
  args.push('-t', opts.topic ?? `${config.mqtt.topicPrefix}/${opts.username ?? ''}`);
  if (opts.debug) args.push('-d');
  if (opts.via === 's' || opts.via === 'l') {
    // -s: the whole of stdin is the message (no argv limits, any bytes); -l: one per line.
    args.push(`-${opts.via}`);
    return run('mosquitto_pub', args, { input: payload, timeoutMs: 20_000 });
  }
  return run('mosquitto_pub', args.concat(['-m', payload.toString()]), { timeoutMs: 20_000 });
}

// ---------------------------------------------------------------- events

export interface EventJson {
  eventId: string;
  userId: string;
  itemId: string;
  type: string;
  ts: number;
  sessionId?: string | null;
  context?: { page?: string | null; position?: number | null; device?: string | null } | null;
  value?: number | null;
  [extra: string]: unknown;
}

export function validEvent(userId: string, extra: Partial<EventJson> = {}): EventJson {
  return {
    eventId: crypto.randomUUID(),
    userId,
    itemId: `item-${Math.floor(Math.random() * 1e6)}`,
    type: 'view',
    ts: Date.now(),
    ...extra,
  };
}

/** The fields of a decoded event that the client sent (without receivedAt and source). */
export function sentFields(value: UserEvent): Record<string, unknown> {
  const { eventId, userId, sessionId, itemId, type, ts, context, value: amount } = value;
  return { eventId, userId, sessionId, itemId, type, ts, context, value: amount };
}

/** What the events topic must hold for a sent event (optional fields normalised to null). */
export function expectedFields(e: EventJson): Record<string, unknown> {
  const ctx = e.context;
  return {
    eventId: e.eventId,
    userId: e.userId,
    sessionId: e.sessionId ?? null,
    itemId: e.itemId,
    type: e.type,
    ts: e.ts,
    context:
      ctx === undefined || ctx === null
        ? null
        : { page: ctx.page ?? null, position: ctx.position ?? null, device: ctx.device ?? null },
    value: e.value ?? null,
  };
}

// ---------------------------------------------------------------- Kafka through kcat

export interface KafkaRecord {
  partition: number;
  offset: number;
  key: Buffer | null;
  value: Buffer | null;
}

/**
 * Every record of `topic`, from the beginning to the current end, read by kcat. Each record is
 * printed as a header line `partition offset keyLength valueLength` followed by exactly that many
 * key and value bytes and a newline, so binary Avro bodies split exactly. A length of -1 is null.
 */
export async function readTopic(topic: string, timeoutMs = 60_000): Promise<KafkaRecord[]> {
  const res = await runBytes(
    'kcat',
    ['-C', ...kcatKafka, '-t', topic, '-o', 'beginning', '-e', '-q'].concat([
      '-f',
      '%p %o %K %S\\n%k%s\\n',
    ]),
    { timeoutMs },
  );
  assert.equal(res.code, 0, `kcat -C ${topic}: exit ${res.code}: ${res.stderr}`);
  return parseKcat(res.stdout);
}

export function parseKcat(buf: Buffer): KafkaRecord[] {
  const records: KafkaRecord[] = [];
  let pos = 0;
  while (pos < buf.length) {
    const eol = buf.indexOf(0x0a, pos);
    assert.ok(eol > pos, `malformed kcat output at byte ${pos}`);
    const header = buf.subarray(pos, eol).toString().split(' ').map(Number);
    const [partition, offset, keyLen, valueLen] = header;
    assert.ok(
      header.length === 4 && header.every(Number.isInteger),
      `bad kcat header at byte ${pos}: ${buf.subarray(pos, eol).toString()}`,
    );
    let at = eol + 1;
    const take = (len: number): Buffer | null => {
      if (len < 0) return null;
      const part = buf.subarray(at, at + len);
      at += len;
      return part;
    };
    const key = take(keyLen as number);
    const value = take(valueLen as number);
    assert.equal(buf[at], 0x0a, `record at byte ${pos} is not newline-terminated`);
    records.push({ partition: partition as number, offset: offset as number, key, value });
    pos = at + 1;
  }
  return records;
}

/** Decodes Confluent-framed Avro with the writer schema fetched (once per id) with curl. */
export class AvroReader {
  readonly #types = new Map<number, avro.Type>();

  async decode<T = Record<string, unknown>>(framed: Buffer): Promise<T> {
    assert.ok(framed.length >= 5, `value of ${framed.length} bytes is not Confluent-framed`);
    assert.equal(framed[0], 0, 'magic byte is not 0');
    const id = framed.readUInt32BE(1);
    let type = this.#types.get(id);
    if (!type) {
      const res = await run('curl', ['-sf', `${config.registry.url}/schemas/ids/${id}`], {
        timeoutMs: 15_000,
      });
      assert.equal(res.code, 0, `curl schema ${id}: exit ${res.code}: ${res.stderr}`);
      const { schema } = JSON.parse(res.stdout) as { schema: string };
      type = avro.Type.forSchema(JSON.parse(schema) as avro.Schema);
      this.#types.set(id, type);
    }
    return plain(type.fromBuffer(framed.subarray(5))) as T;
  }
}

/** avsc decodes records into generated classes; deep equality wants plain objects. */
function plain(value: unknown): unknown {
  if (value === null || typeof value !== 'object' || Buffer.isBuffer(value)) return value;
  if (Array.isArray(value)) return value.map(plain);
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
}

export interface Decoded<T> {
  key: string | null;
  value: T;
  partition: number;
  offset: number;
}

/**
 * Reads and decodes a whole topic; with `key`, only the records with that key (the bridge is
 * subscribed to every user's topic, so other clients' traffic lands here too).
 */
export async function readDecoded<T = Record<string, unknown>>(
  reader: AvroReader,
  topic: string,
  key?: string,
): Promise<Array<Decoded<T>>> {
  const records = await readTopic(topic);
  const out: Array<Decoded<T>> = [];
  const wanted = key === undefined ? null : Buffer.from(key);
  for (const r of records) {
    if (wanted && !(r.key && r.key.equals(wanted))) continue;
    assert.ok(r.value, `null value at ${topic}/${r.partition}@${r.offset}`);
    out.push({
      key: r.key === null ? null : r.key.toString(),
      value: await reader.decode<T>(r.value),
      partition: r.partition,
      offset: r.offset,
    });
  }
  return out;
}

/**
 * Re-reads `topic` until `done(records)` holds or `timeoutMs` passes; returns the last read
 * either way (the caller asserts on it, so a timeout fails with the evidence).
 */
export async function waitForTopic<T = Record<string, unknown>>(
  reader: AvroReader,
  topic: string,
  key: string | undefined,
  done: (records: Array<Decoded<T>>) => boolean,
  timeoutMs: number,
): Promise<Array<Decoded<T>>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const records = await readDecoded<T>(reader, topic, key);
    if (done(records) || Date.now() > deadline) return records;
    await sleep(500);
  }
}

/** The value of one Prometheus sample whose labels include all of `labels`, summed. */
export function metricValue(text: string, name: string, labels: Record<string, string>): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const close = line.lastIndexOf('}');
    const labelText = line.slice(name.length + 1, close);
    if (Object.entries(labels).every(([k, v]) => labelText.includes(`${k}="${v}"`))) {
      sum += Number(line.slice(close + 1).trim());
    }
  }
  return sum;
}
