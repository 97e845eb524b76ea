/**
 * Load for the bound and shutdown tests, from real clients: QoS 0 through `mosquitto_pub -l`
 * (one message per stdin line), QoS 1 through mqtt.js (the broker's PUBACK is its callback),
 * HTTP batches that honour `Retry-After`; each records what was acknowledged (PUBACK, 202), so a
 * test can check that exactly those events reached Kafka. Also the resident memory of a process,
 * read from /proc/<pid>/status.
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { sleep } from '../../../core/retry.js';
import { connectMqtt } from '../../../stream/mqtt.js';
import { config } from '../harness.js';
import { type EventJson, MQTT_HOST, MQTT_PORT, validEvent } from './bridge-process.js';

/** A 200-character page: events of about 400 bytes, so volume adds up quickly. */
const PAGE = 'p'.repeat(200);

export function bulkyEvent(userId: string): EventJson {
  return validEvent(userId, { context: { page: PAGE, position: 1, device: 'test' } });
}

export interface Publisher {
  /** eventIds sent (QoS 0) or acknowledged by the broker (QoS 1). */
  readonly acked: string[];
  /** eventIds sent, acknowledged or not. */
  readonly sent: string[];
  readonly errors: string[];
  stop(): Promise<void>;
}

/** `mosquitto_pub -q 0 -l` fed `perSecond` events a second until stopped. */
export function qos0Publisher(user: string, password: string, perSecond: number): Publisher {
  const child = spawn(
    'mosquitto_pub',
    [
      '-h',
      MQTT_HOST,
      '-p',
      MQTT_PORT,
      '-V',
      'mqttv5',
      '-q',
      '0',
      '-u',
      user,
      '-P',
      password,
    ].concat(['-t', `${config.mqtt.topicPrefix}/${user}`, '-l']),
    { stdio: ['pipe', 'ignore', 'pipe'] },
  );
  const sent: string[] = [];
  const errors: string[] = [];
  child.stderr.on('data', (d: Buffer) => errors.push(d.toString()));
  child.stdin.on('error', (e) => errors.push(e.message));
  let running = true;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const loop = (async () => {
    const tickMs = 20;
    const perTick = Math.max(1, Math.round((perSecond * tickMs) / 1000));
    while (running) {
      const lines: string[] = [];
      for (let i = 0; i < perTick; i++) {
        const e = bulkyEvent(user);
        sent.push(e.eventId);
        lines.push(JSON.stringify(e));
      }
      if (!child.stdin.write(lines.join('\n') + '\n')) {
        await new Promise((r) => child.stdin.once('drain', r));
      }
      await sleep(tickMs);
    }
  })();
  return {
    acked: sent,
    sent,
    errors,
    async stop() {
      if (!running) return;
      running = false;
      await loop;
      child.stdin.end();
      await Promise.race([exited, sleep(10_000)]);
    },
  };
}

/** An mqtt.js client publishing QoS 1 at `perSecond`; `acked` fills as the broker PUBACKs. */
export async function qos1Publisher(
  user: string,
  password: string,
  perSecond: number,
): Promise<Publisher> {
  const client = await connectMqtt({ url: config.mqtt.url, username: user, password });
  const topic = `${config.mqtt.topicPrefix}/${user}`;
  const sent: string[] = [];
  const acked: string[] = [];
  const errors: string[] = [];
  const pending = new Set<Promise<void>>();
  let running = true;
  const loop = (async () => {
    while (running) {
      const e = bulkyEvent(user);
      sent.push(e.eventId);
      const p = new Promise<void>((resolve) => {
        client.publish(topic, JSON.stringify(e), { qos: 1 }, (err) => {
          if (err) errors.push(err.message);
          else acked.push(e.eventId);
          resolve();
        });
      });
      pending.add(p);
      void p.then(() => pending.delete(p));
      await sleep(1000 / perSecond);
    }
  })();
  return {
    acked,
    sent,
    errors,
    async stop() {
      if (!running) return;
      running = false;
      await loop;
      await Promise.race([Promise.all(pending), sleep(10_000)]);
      await client.endAsync();
    },
  };
}

export interface HttpFlood {
  /** eventIds answered 202. */
  readonly accepted: string[];
  /** Answers by status and error code, e.g. `503 RECSYS_INGEST_QUEUE_FULL`. */
  readonly answers: Map<string, number>;
  /** Retry-After values seen on 503 answers. */
  readonly retryAfter: Set<string>;
  /** Each client stops after its next 202 (and the flood ends when all have). */
  finish(): Promise<void>;
  /** Stops at once. */
  stop(): Promise<void>;
}

/**
 * `clients` loops posting `batch`-event arrays: a batch is re-posted until answered 202 (after
 * the Retry-After of a 503), then a new one is made.
 */
export function httpFlood(opts: {
  baseUrl: string;
  headers: Record<string, string>;
  /** Each event's user, picked at random. */
  users: string[];
  clients: number;
  batch: number;
}): HttpFlood {
  const accepted: string[] = [];
  const answers = new Map<string, number>();
  const retryAfter = new Set<string>();
  let mode: 'run' | 'finish' | 'stop' = 'run';
  const count = (key: string): void => void answers.set(key, (answers.get(key) ?? 0) + 1);
  const pick = (): string => opts.users[Math.floor(Math.random() * opts.users.length)] as string;
  const batch = (): EventJson[] => Array.from({ length: opts.batch }, () => bulkyEvent(pick()));
  const client = async (): Promise<void> => {
    let events = batch();
    while (mode !== 'stop') {
      let status = 0;
      try {
        const res = await fetch(`${opts.baseUrl}/v1/events`, {
          method: 'POST',
          headers: opts.headers,
          body: JSON.stringify(events),
          signal: AbortSignal.timeout(30_000),
        });
        status = res.status;
        const body = (await res.json().catch(() => ({}))) as { error?: { code?: string } };
        count(`${status}${body.error?.code ? ' ' + body.error.code : ''}`);
        if (status === 503) retryAfter.add(res.headers.get('retry-after') ?? '(none)');
        if (status === 202) {
          for (const e of events) accepted.push(e.eventId);
          if (mode === 'finish') return;
          events = batch();
          continue;
        }
        const wait = Number(res.headers.get('retry-after') ?? '1');
        await sleep(1000 * (Number.isFinite(wait) ? wait : 1));
      } catch (err) {
        count(`error ${(err as Error).name}`);
        await sleep(500);
      }
    }
  };
  const all = Promise.all(Array.from({ length: opts.clients }, () => client()));
  return {
    accepted,
    answers,
    retryAfter,
    async finish() {
      mode = 'finish';
      await all;
    },
    async stop() {
      mode = 'stop';
      await all;
    },
  };
}

/** VmRSS and VmHWM (the peak) of `pid`, bytes. */
export async function residentBytes(pid: number): Promise<{ rss: number; hwm: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string): number =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

/** Samples `pid`'s RSS every `everyMs` until stopped; the samples, bytes. */
export function rssSampler(pid: number, everyMs = 250): { samples: number[]; stop(): void } {
  const samples: number[] = [];
  const timer = setInterval(() => {
    residentBytes(pid).then(
      (r) => samples.push(r.rss),
      () => undefined,
    );
  }, everyMs);
  return { samples, stop: () => clearInterval(timer) };
}
