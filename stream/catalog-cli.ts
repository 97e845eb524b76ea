/**
 * `npm run catalog -- load <file>`: validates a JSON Lines or CSV catalog and writes it to Redis.
 * `npm run catalog -- publish <file>`: validates it and writes it to the compacted items topic,
 * which every `catalog` role applies to its Redis (the path for many regions or a live feed).
 * A bad record stops the command before anything is written, naming the line. A backbone still
 * starting is waited for (`startupRetry`: some 30 s); the writes are idempotent, so a retried
 * batch changes nothing.
 */
import { readFile } from 'node:fs/promises';
import { createLogger, loadConfigOrExit, retry, startupRetry } from '../core/index.js';
import { CatalogStore, parseCatalog } from '../store/catalog.js';
import { createKafka, createProducer, ensureTopics } from './kafka.js';
import { createRedis } from '../store/redis.js';

const [command, file] = process.argv.slice(2);
if ((command !== 'load' && command !== 'publish') || !file) {
  process.stderr.write('usage: catalog load|publish <file.jsonl|file.csv>\n');
  process.exit(2);
}
const config = loadConfigOrExit(process.env);
const log = createLogger(config.logLevel, 'recsys-catalog');
let items;
try {
  items = parseCatalog(await readFile(file, 'utf8'), file);
} catch (err) {
  process.stderr.write(`${(err as Error).message}\n`);
  process.exit(1);
}
if (command === 'load') {
  const redis = createRedis(config.redis.url, 'recsys-catalog-cli');
  const store = new CatalogStore(redis, { cacheTtlMs: 0, cacheSize: 0 });
  await retry(() => store.upsert(items), startupRetry('catalog load to Redis', log));
  redis.disconnect();
} else {
  const kafka = createKafka(config.kafka, log, 'catalog-cli');
  await retry(() => ensureTopics(kafka, config.kafka, log), startupRetry('kafka topics', log));
  const producer = createProducer(kafka);
  await retry(() => producer.connect(), startupRetry('kafka producer connect', log));
  for (let i = 0; i < items.length; i += 1000) {
    // The idempotent producer retries within kafkajs; this covers a leader election longer
    // than its attempts (a compacted topic keeps the latest record per itemId either way).
    await retry(
      () =>
        producer.send({
          topic: config.kafka.topics.items,
          acks: -1,
          messages: items
            .slice(i, i + 1000)
            .map((item) => ({ key: item.itemId, value: JSON.stringify(item) })),
        }),
      startupRetry('kafka send', log),
    );
  }
  await producer.disconnect();
}
log.info({ command, file, items: items.length }, 'catalog written');
