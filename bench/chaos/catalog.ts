/**
 * Catalog traffic for the fault matrix, so the catalog role has work while it is killed: the
 * run's items go to the items topic at start (JSON, key = itemId, as `npm run catalog --
 * publish` writes them), then a few items a second get a new price (a counter, so the newest
 * value is the largest). At the end every item's Redis entry must carry the value of its last
 * record in the topic.
 */
import kafkajs from 'kafkajs';
import { createLogger, sleep, type Config } from '../../core/index.js';
import { createKafka, ensureTopics } from '../../stream/kafka.js';
import { CATALOG_SIZE, CATEGORIES, itemId } from './events.js';

const QUIET = createLogger('silent', 'chaos-catalog');

export class CatalogDriver {
  /** Per item, the phase of its last acknowledged update. */
  readonly lastPhase = new Map<string, number>();
  acked = 0;
  failed = 0;
  #price = 1;
  #timer: NodeJS.Timeout | null = null;
  #phase = 0;
  #inFlight: Promise<void> = Promise.resolve();
  readonly #producer: kafkajs.Producer;

  constructor(
    readonly config: Readonly<Config>,
    readonly prefix: string,
    /** Price updates a second. */
    readonly perSecond = 5,
  ) {
    const kafka = createKafka(config.kafka, QUIET, 'chaos-catalog', {
      logLevel: kafkajs.logLevel.NOTHING,
    });
    this.#producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    this.#kafka = kafka;
  }

  readonly #kafka: kafkajs.Kafka;

  /** Publishes the whole catalog, then starts the updates. */
  async start(): Promise<void> {
    await ensureTopics(this.#kafka, this.config.kafka, QUIET);
    await this.#producer.connect();
    const all = Array.from({ length: CATALOG_SIZE }, (_, n) => n);
    await this.#send(all, 0);
    this.#timer = setInterval(() => {
      const picks = Array.from({ length: this.perSecond }, () =>
        Math.floor(Math.random() * CATALOG_SIZE),
      );
      // One send at a time: an update never overtakes an earlier one of the same item.
      this.#inFlight = this.#inFlight.then(() => this.#send(picks, this.#phase));
    }, 1000);
  }

  set phase(index: number) {
    this.#phase = index;
  }

  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    await this.#inFlight;
    await this.#producer.disconnect().catch(() => undefined);
  }

  async #send(items: number[], phase: number): Promise<void> {
    const messages = items.map((n) => ({
      key: itemId(this.prefix, n),
      value: JSON.stringify({
        itemId: itemId(this.prefix, n),
        categoryL1: CATEGORIES[n % CATEGORIES.length],
        price: this.#price++,
        isAvailable: true,
        createdAt: Date.now() - 86_400_000,
      }),
    }));
    // Kafka may be down (a fault): try for a minute, as a catalog publisher would.
    for (let attempt = 0; attempt < 30; attempt++) {
      try {
        await this.#producer.send({ topic: this.config.kafka.topics.items, acks: -1, messages });
        this.acked += messages.length;
        for (const m of messages) this.lastPhase.set(m.key, phase);
        return;
      } catch {
        await sleep(2000);
      }
    }
    this.failed += messages.length;
  }
}
