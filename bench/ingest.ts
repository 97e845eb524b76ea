/**
 * `npm run bench:ingest`: MQTT publishers on loopback → Mosquitto → ingest bridge → Kafka.
 *
 * Phases, all in one run so the numbers share the machine's state:
 * 1. baseline: the same publishers into Mosquitto with a plain QoS 1 subscriber (mqtt.js, acks
 *    at once, no Kafka): what the broker path alone sustains on this machine.
 * 2. sustained: publishers at fixed rates, rising (BENCH_RATES, default 10k to 60k
 *    events/s), BENCH_DURATION_MS each. A rate is sustained when Kafka received at least 97% of
 *    it over the window after the warm-up and the backlog drained within 2 s of the publishers
 *    stopping. The ramp stops at the first rate that is not. An unthrottled publisher would
 *    measure the publisher's and Mosquitto's fight with Kafka for the 2 cores, not a rate the
 *    bridge can hold.
 * 3. steady: BENCH_STEADY_RATE events/s (default 5,000); latency from publish (`ts`, set by the
 *    publisher when it sends) to the Kafka append time (the bench topic uses LogAppendTime, so
 *    the broker stamps each record as it writes it; the bridge's PUBACK follows the ack of that
 *    write).
 *
 * Writes bench/results/ingest-<time>.json and prints a readable summary.
 */
import { spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import avro from 'avsc';
import mqtt from 'mqtt';
import { createLogger, loadConfig, retry, startupRetry } from '../core/index.js';
import { readSchema } from '../schemas/index.js';
import { createKafka, discardMqttSession } from '../stream/index.js';
import { waitForTopicLeaders } from '../stream/kafka.js';
import { freePort } from './processes.js';
import { treeCpu } from './vegeta.js';
import type { PublisherSpec } from './publisher.js';
import { applyLocalSecrets } from '../deploy/local/secrets.js';

// The local stack's secrets (the bridge's MQTT password, the JWT secret) unless set.
await applyLocalSecrets(process.cwd());

const config = loadConfig(process.env);
const log = createLogger(process.env.RECSYS_LOG_LEVEL ?? 'warn', 'bench');
const num = (name: string, fallback: number): number => Number(process.env[name] ?? fallback);
const DURATION_MS = num('BENCH_DURATION_MS', 20_000);
const WARMUP_MS = num('BENCH_WARMUP_MS', 3_000);
const STEADY_RATE = num('BENCH_STEADY_RATE', 5_000);
const RATES = (process.env.BENCH_RATES ?? '10000,15000,20000,25000,30000,40000,50000,60000')
  .split(',')
  .map(Number);
const PUBLISHERS = num('BENCH_PUBLISHERS', 4);
const WINDOW = num('BENCH_WINDOW', 500);
const id = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
const root = process.cwd();

interface PhaseResult {
  name: string;
  targetRate: number | null;
  published: number;
  publisherErrors: number;
  /** Events that reached the sink (Kafka or the baseline subscriber) within the window, per second. */
  eventsPerSec: number;
  latencyMs: { p50: number; p90: number; p99: number; p999: number; max: number; samples: number };
  /** After publishers stopped: how long until every published event had arrived. */
  drainMs: number;
  /** Phases through the bridge: its CPU (process and children) per event that arrived, µs. */
  bridgeCpuUsPerEvent?: number;
  arrived: number;
  /** Per second of sending: events sent in that second that arrived, and their worst latency. */
  timeline: { second: number; events: number; maxLatencyMs: number }[];
}

function summarize(latencies: number[]): PhaseResult['latencyMs'] {
  const arr = Array.from(Float64Array.from(latencies).sort());
  const at = (p: number): number =>
    arr[Math.min(arr.length - 1, Math.floor(p * arr.length))] ?? Number.NaN;
  return {
    p50: at(0.5),
    p90: at(0.9),
    p99: at(0.99),
    p999: at(0.999),
    max: arr[arr.length - 1] ?? Number.NaN,
    samples: arr.length,
  };
}

function runNode(script: string, env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script], {
      cwd: root,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve(out) : reject(new Error(`${script} exited ${code}`)),
    );
  });
}

async function publish(
  users: PublisherSpec['users'],
  rate: number,
): Promise<{ sent: number; acked: number; errors: number; sendMs: number }> {
  const spec: PublisherSpec = {
    url: config.mqtt.url,
    users,
    topicPrefix: config.mqtt.topicPrefix,
    rate,
    durationMs: DURATION_MS,
    window: WINDOW,
  };
  const out = await runNode('dist/bench/publisher.js', { BENCH_PUBLISHER: JSON.stringify(spec) });
  return JSON.parse(out.trim().split('\n').pop() as string);
}

/** Collects arrival times and latencies; rates are computed over [start + warm-up, end]. */
class Arrivals {
  times: number[] = [];
  latencies: number[] = [];
  add(arrivedAt: number, sentAt: number): void {
    this.times.push(arrivedAt);
    this.latencies.push(arrivedAt - sentAt);
  }
  rate(start: number, end: number): number {
    const from = start + WARMUP_MS;
    const n = this.times.filter((t) => t >= from && t < end).length;
    return Math.round((n * 1000) / Math.max(1, end - from));
  }
  /** Latencies of events sent after the warm-up. */
  steadyLatencies(start: number): number[] {
    const from = start + WARMUP_MS;
    return this.latencies.filter(
      (_, i) => (this.times[i] as number) - (this.latencies[i] as number) >= from,
    );
  }
}

function timeline(a: Arrivals, start: number): PhaseResult['timeline'] {
  const buckets = new Map<number, { events: number; maxLatencyMs: number }>();
  for (let i = 0; i < a.times.length; i++) {
    const lat = a.latencies[i] as number;
    const second = Math.floor(((a.times[i] as number) - lat - start) / 1000);
    const b = buckets.get(second) ?? { events: 0, maxLatencyMs: 0 };
    b.events++;
    b.maxLatencyMs = Math.max(b.maxLatencyMs, lat);
    buckets.set(second, b);
  }
  return [...buckets].sort((x, y) => x[0] - y[0]).map(([second, b]) => ({ second, ...b }));
}

async function waitFor(cond: () => boolean, timeoutMs: number): Promise<number> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return Date.now() - t0;
}

async function phase(
  name: string,
  users: PublisherSpec['users'],
  rate: number,
  arrivals: Arrivals,
  before: number,
): Promise<PhaseResult> {
  const start = Date.now();
  const pub = await publish(users, rate);
  const end = start + pub.sendMs;
  const drainMs = await waitFor(() => arrivals.times.length - before >= pub.acked, 120_000);
  log.warn({ name, ...pub }, 'phase done');
  const mine = new Arrivals();
  mine.times = arrivals.times.slice(before);
  mine.latencies = arrivals.latencies.slice(before);
  return {
    name,
    targetRate: rate || null,
    published: pub.sent,
    publisherErrors: pub.errors,
    eventsPerSec: mine.rate(start, end),
    latencyMs: summarize(mine.steadyLatencies(start)),
    drainMs,
    arrived: mine.times.length,
    timeline: timeline(mine, start),
  };
}

/** MQTT accounts for the publishers, then phase 1: Mosquitto alone, to a plain subscriber. */
async function brokerBaseline() {
  const users = Array.from({ length: PUBLISHERS }, (_, i) => ({
    username: `bench-${id}-${i}`,
    password: `pw-${id}-${i}`,
  }));
  for (const u of users) {
    await new Promise<void>((resolve, reject) => {
      const c = spawn(
        process.execPath,
        ['dist/deploy/local/cli.js', 'mqtt-user', u.username, u.password],
        { cwd: root, stdio: 'ignore' },
      );
      c.on('close', (code) => (code === 0 ? resolve() : reject(new Error('mqtt-user failed'))));
    });
  }
  await new Promise((r) => setTimeout(r, 300));

  // --- phase 1: broker-only baseline
  const baseline = new Arrivals();
  const sink = mqtt.connect(config.mqtt.bridgeUrl, {
    username: config.mqtt.username,
    password: config.mqtt.password,
    protocolVersion: 5,
    clean: true,
    properties: { receiveMaximum: config.mqtt.receiveMaximum },
  });
  await new Promise<void>((resolve, reject) => {
    sink.once('connect', () => resolve());
    sink.once('error', reject);
  });
  await sink.subscribeAsync(`$share/bench-${id}/${config.mqtt.topicPrefix}/+`, { qos: 1 });
  sink.on('message', (topic, payload) => {
    if (!topic.includes(`bench-${id}-`)) return;
    const now = Date.now();
    const ts = (JSON.parse(payload.toString()) as { ts: number }).ts;
    baseline.add(now, ts);
  });
  const baseMax = await phase('baseline-max', users, 0, baseline, 0);
  const baseSteady = await phase(
    'baseline-steady',
    users,
    STEADY_RATE,
    baseline,
    baseline.times.length,
  );
  await sink.endAsync();
  return { baseMax, baseSteady, baseline, sink, users };
}

/** Phases 2 and 3: the bridge as a process, steady then ramped rates into Kafka. */
async function throughBridge(b: Awaited<ReturnType<typeof brokerBaseline>>) {
  const { users } = b;
  const topics = {
    events: `bench-${id}.events`,
    dlq: `bench-${id}.dlq`,
    served: `bench-${id}.served`,
  };
  const kafka = createKafka(config.kafka, log, 'bench');
  const admin = kafka.admin();
  await retry(() => admin.connect(), startupRetry('kafka admin connect', log));
  // At the configured replication factor and min.insync.replicas (acks=all waits for them);
  // kafkajs' own wait for leaders fails on several brokers (tulios/kafkajs#1222): ours below.
  const minIsr = config.kafka.minInsyncReplicas;
  await admin.createTopics({
    waitForLeaders: false,
    topics: [
      {
        topic: topics.events,
        numPartitions: config.kafka.partitions,
        replicationFactor: config.kafka.replicationFactor,
        configEntries: [
          { name: 'message.timestamp.type', value: 'LogAppendTime' },
          ...(minIsr > 0 ? [{ name: 'min.insync.replicas', value: String(minIsr) }] : []),
        ],
      },
    ],
  });
  await waitForTopicLeaders(admin, [topics.events]);
  const port = await freePort();
  const bridgeEnv = {
    RECSYS_TOPIC_EVENTS: topics.events,
    RECSYS_TOPIC_DLQ: topics.dlq,
    RECSYS_TOPIC_SERVED: topics.served,
    RECSYS_MQTT_SHARE_GROUP: `bench-${id}`,
    RECSYS_MQTT_CLIENT_ID: `bench/bridge-${id}`,
    RECSYS_HTTP_PORT: String(port),
    RECSYS_LOG_LEVEL: 'warn',
  };
  const bridge = spawn(process.execPath, ['dist/stream/main.js'], {
    cwd: root,
    env: { ...process.env, ...bridgeEnv },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const readyDeadline = Date.now() + 60_000;
  for (;;) {
    const ok = await fetch(`http://127.0.0.1:${port}/readyz`)
      .then((r) => r.ok)
      .catch(() => false);
    if (ok) break;
    if (Date.now() > readyDeadline) throw new Error('bridge not ready within 60 s');
    await new Promise((r) => setTimeout(r, 200));
  }

  const eventType = avro.Type.forSchema(readSchema('UserEvent') as unknown as avro.Schema);
  const arrivals = new Arrivals();
  const consumer = kafka.consumer({
    groupId: `bench-${id}`,
    allowAutoTopicCreation: false,
    maxBytes: 32 << 20,
  });
  await retry(() => consumer.connect(), startupRetry('kafka consumer connect', log));
  await consumer.subscribe({ topic: topics.events, fromBeginning: true });
  await consumer.run({
    autoCommit: false,
    eachBatch: async ({ batch }) => {
      for (const m of batch.messages) {
        if (!m.value) continue;
        const event = eventType.fromBuffer(m.value.subarray(5)) as { ts: number };
        arrivals.add(Number(m.timestamp), event.ts);
      }
    },
  });
  await new Promise((r) => setTimeout(r, 2000));

  // The bridge's CPU per event of each phase: what a core carries on a machine others share.
  const withCpu = async (run: () => Promise<PhaseResult>): Promise<PhaseResult> => {
    const cpu0 = await treeCpu(bridge.pid as number);
    const r = await run();
    const us = ((await treeCpu(bridge.pid as number)) - cpu0) * 1e6;
    return { ...r, bridgeCpuUsPerEvent: Math.round(us / Math.max(1, r.arrived)) };
  };
  const holds = (r: PhaseResult): boolean =>
    r.eventsPerSec >= 0.97 * (r.targetRate ?? 0) && r.drainMs <= 2000;
  const steady = await withCpu(() => phase('bridge-steady', users, STEADY_RATE, arrivals, 0));
  const ramp: PhaseResult[] = [];
  for (const rate of RATES) {
    const r = await withCpu(() =>
      phase(`bridge-${rate}`, users, rate, arrivals, arrivals.times.length),
    );
    ramp.push(r);
    if (!holds(r)) break;
  }
  const held = ramp.filter(holds);
  const max = held[held.length - 1] ?? ramp[0];
  if (!max) throw new Error('no ramp phase ran');

  const metricsText = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text());
  const batchSum = Number(/recsys_ingest_batch_messages_sum\{[^}]*\} (\S+)/.exec(metricsText)?.[1]);
  const batchCount = Number(
    /recsys_ingest_batch_messages_count\{[^}]*\} (\S+)/.exec(metricsText)?.[1],
  );

  await consumer.disconnect();
  bridge.kill('SIGTERM');
  await new Promise((r) => bridge.once('close', r));
  // The bench bridge's persistent session would otherwise queue every later event for good.
  await discardMqttSession({
    url: config.mqtt.bridgeUrl,
    username: config.mqtt.username,
    password: config.mqtt.password,
    clientId: bridgeEnv.RECSYS_MQTT_CLIENT_ID,
  });
  await admin
    .deleteTopics({ topics: [topics.events, topics.dlq, topics.served] })
    .catch(() => undefined);
  await admin.disconnect();
  return {
    admin,
    arrivals,
    batchCount,
    batchSum,
    bridge,
    bridgeEnv,
    consumer,
    eventType,
    held,
    kafka,
    max,
    metricsText,
    port,
    ramp,
    readyDeadline,
    steady,
    topics,
  };
}

/** The result file and the summary. */
async function report(
  b: Awaited<ReturnType<typeof brokerBaseline>>,
  k: Awaited<ReturnType<typeof throughBridge>>,
): Promise<void> {
  const { baseMax, baseSteady } = b;
  const { batchCount, batchSum, max, ramp, steady } = k;
  const result = {
    bench: 'ingest',
    at: new Date().toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model, loadavg: loadavg() },
    settings: {
      durationMs: DURATION_MS,
      warmupMs: WARMUP_MS,
      steadyRate: STEADY_RATE,
      rates: RATES,
      publishers: PUBLISHERS,
      window: WINDOW,
      lingerMs: config.ingest.lingerMs,
      maxKafkaBatch: config.ingest.maxKafkaBatch,
      receiveMaximum: config.mqtt.receiveMaximum,
    },
    phases: [baseMax, baseSteady, steady, ...ramp],
    sustainedPhase: max.name,
    bridgeVsBaseline: {
      maxThroughputRatio: Number((max.eventsPerSec / baseMax.eventsPerSec).toFixed(3)),
      steadyP99Ratio: Number((steady.latencyMs.p99 / baseSteady.latencyMs.p99).toFixed(3)),
    },
    meanKafkaBatch: Number((batchSum / batchCount).toFixed(1)),
    targets: {
      sustainedEventsPerSec: {
        target: 20_000,
        measured: max.eventsPerSec,
        met: max.eventsPerSec >= 20_000,
      },
      steadyP99Ms: {
        target: 50,
        atRate: STEADY_RATE,
        measured: steady.latencyMs.p99,
        met: steady.latencyMs.p99 < 50,
      },
    },
  };
  const dir = join(root, 'bench', 'results');
  await mkdir(dir, { recursive: true });
  const file = join(dir, `ingest-${result.at.replace(/[:.]/g, '-')}.json`);
  await writeFile(file, JSON.stringify(result, null, 2) + '\n');

  const line = (p: PhaseResult): string =>
    `${p.name.padEnd(16)} ${String(p.eventsPerSec).padStart(7)} ev/s   p50 ${p.latencyMs.p50} ms  p99 ${p.latencyMs.p99} ms  p99.9 ${p.latencyMs.p999} ms  (${p.arrived}/${p.published} arrived, drained in ${p.drainMs} ms)${p.bridgeCpuUsPerEvent === undefined ? '' : `, bridge ${p.bridgeCpuUsPerEvent} µs CPU/event`}`;
  console.log(
    `ingest bench, ${result.machine.cpus} cores, load ${result.machine.loadavg.map((l) => l.toFixed(2)).join(' ')}`,
  );
  for (const p of result.phases) console.log(line(p));
  console.log(
    `bridge/baseline: throughput x${result.bridgeVsBaseline.maxThroughputRatio}, steady p99 x${result.bridgeVsBaseline.steadyP99Ratio}; mean Kafka batch ${result.meanKafkaBatch} events`,
  );
  console.log(`highest sustained rate: ${max.name} (${max.eventsPerSec} ev/s into Kafka)`);
  console.log(
    `targets: >= 20000 ev/s sustained: ${max.eventsPerSec} (${result.targets.sustainedEventsPerSec.met ? 'met' : 'NOT met'}); p99 < 50 ms at ${STEADY_RATE} ev/s: ${steady.latencyMs.p99} ms (${result.targets.steadyP99Ms.met ? 'met' : 'NOT met'})`,
  );
  console.log(`result: ${file}`);
  process.exit(0);
}

async function main(): Promise<void> {
  const baseline = await brokerBaseline();
  const bridge = await throughBridge(baseline);
  await report(baseline, bridge);
}

main().catch((err: Error) => {
  console.error(`bench failed: ${err.stack ?? err.message}`);
  process.exit(1);
});
