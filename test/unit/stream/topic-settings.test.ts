/** What ensureTopics changes on existing topics (stream/topic-settings.ts planTopicSettings). */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { planTopicSettings, type TopicState } from '../../../stream/topic-settings.js';

const topic = (replicas: number[][], minInsyncReplicas = 1, ownConfig = {}): TopicState => ({
  name: 'recsys.items.v1',
  partitions: replicas.map((r, partition) => ({ partition, replicas: r })),
  minInsyncReplicas,
  ownConfig,
});
const BOOT = '10.0.0.1:9092';

describe('planTopicSettings', () => {
  it('raises the replication factor: replicas kept in order (leader first), brokers added evenly', () => {
    const plan = planTopicSettings(
      topic([[1], [2], [3], [1], [2], [3]]),
      { replicationFactor: 3, minInsyncReplicas: 0 },
      [1, 2, 3],
      BOOT,
    );
    assert.deepEqual(plan.warnings, []);
    assert.equal(plan.alterConfig, null);
    assert.equal(plan.reassign.length, 6);
    for (const [i, p] of plan.reassign.entries()) {
      assert.equal(p.partition, i);
      assert.equal(p.replicas[0], [1, 2, 3][i % 3]);
      assert.deepEqual([...p.replicas].sort(), [1, 2, 3]);
    }
    // From 1 to 2 replicas over 3 brokers: every broker ends with 4 of the 12 replicas.
    const two = planTopicSettings(
      topic([[1], [1], [1], [2], [2], [3]]),
      { replicationFactor: 2, minInsyncReplicas: 0 },
      [1, 2, 3],
      BOOT,
    );
    const load = new Map<number, number>();
    for (const p of two.reassign) for (const r of p.replicas) load.set(r, (load.get(r) ?? 0) + 1);
    assert.deepEqual([...load.values()].sort(), [4, 4, 4]);
  });

  it('sets min.insync.replicas once the replicas carry it, keeping the topic’s own settings', () => {
    const plan = planTopicSettings(
      topic([[1], [2]], 1, { 'cleanup.policy': 'compact' }),
      { replicationFactor: 3, minInsyncReplicas: 2 },
      [1, 2, 3],
      BOOT,
    );
    assert.equal(plan.reassign.length, 2);
    assert.deepEqual(plan.alterConfig, {
      'cleanup.policy': 'compact',
      'min.insync.replicas': '2',
    });
    // Already right: nothing to do.
    const same = planTopicSettings(
      topic([[1, 2, 3]], 2),
      { replicationFactor: 3, minInsyncReplicas: 2 },
      [1, 2, 3],
      BOOT,
    );
    assert.deepEqual(same, {
      topic: 'recsys.items.v1',
      reassign: [],
      alterConfig: null,
      warnings: [],
    });
    // Lowering is safe too.
    assert.deepEqual(
      planTopicSettings(
        topic([[1, 2, 3]], 3),
        { replicationFactor: -1, minInsyncReplicas: 2 },
        [1, 2, 3],
        BOOT,
      ).alterConfig,
      { 'min.insync.replicas': '2' },
    );
  });

  it('warns with the command when it cannot or should not change a topic', () => {
    // Too few brokers: no reassignment, and min.insync.replicas 2 on 1 replica would refuse writes.
    const few = planTopicSettings(
      topic([[1]], 1),
      { replicationFactor: 3, minInsyncReplicas: 2 },
      [1],
      BOOT,
    );
    assert.deepEqual(few.reassign, []);
    assert.equal(few.alterConfig, null);
    assert.equal(few.warnings.length, 2);
    assert.match(
      few.warnings[0] as string,
      /replication factor 1, configured 3, but only 1 broker/,
    );
    assert.match(
      few.warnings[1] as string,
      /not changed.*kafka-configs\.sh --bootstrap-server 10\.0\.0\.1:9092 --alter --entity-type topics --entity-name recsys\.items\.v1 --add-config min\.insync\.replicas=2/,
    );
    // Above the configured factor: never lowered here.
    const above = planTopicSettings(
      topic([[1, 2, 3]], 2),
      { replicationFactor: 2, minInsyncReplicas: 2 },
      [1, 2, 3],
      BOOT,
    );
    assert.deepEqual(above.reassign, []);
    assert.match(
      above.warnings[0] as string,
      /above the configured 2.*kafka-reassign-partitions\.sh/,
    );
  });

  it('enforces nothing with the broker defaults (-1 and 0)', () => {
    const plan = planTopicSettings(
      topic([[1]], 1),
      { replicationFactor: -1, minInsyncReplicas: 0 },
      [1, 2, 3],
      BOOT,
    );
    assert.deepEqual(plan, {
      topic: 'recsys.items.v1',
      reassign: [],
      alterConfig: null,
      warnings: [],
    });
  });
});
