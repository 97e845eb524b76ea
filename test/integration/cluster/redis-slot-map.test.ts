/**
 * A Cluster client (`createRedis` with a `redis-cluster://` URL) after its master of some slots
 * became a replica: the cluster fault matrix (`npm run chaos -- --profile cluster`, kill a Redis
 * master) found the catalog role failing with `MOVED` for minutes after the old master rejoined
 * as a replica. ioredis follows a MOVED (and refreshes its slot map) only when every command of
 * an auto-pipeline got the same redirection; the commands of one turn for keys in several slots
 * of that node each get their own, the errors reach the caller, and nothing refreshes the map.
 * Here a manual failover (`CLUSTER FAILOVER` on the replica, redis-cli) makes a master a replica
 * at once; writes to 16 slots of it in one turn must succeed again within a few seconds.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { createRedis, type RedisClient } from '../../../store/redis.js';
import { CI, run } from '../harness.js';
import { type RedisClusterProcesses, startRedisCluster } from './redis-cluster.js';

const hasRedisServer = (await run('redis-server', ['--version']).catch(() => null))?.code === 0;

describe('Redis Cluster slot map', { timeout: 120_000 }, () => {
  let cluster: RedisClusterProcesses | null = null;
  let redis: RedisClient | null = null;

  before(async () => {
    if (!hasRedisServer) {
      if (CI) throw new Error('redis-server is not installed');
      return;
    }
    cluster = await startRedisCluster({ fromPort: 21100 });
  });

  after(async () => {
    redis?.disconnect();
    await cluster?.stop();
  });

  it('writes to the new master after a failover turned the old one into a replica', async (t) => {
    if (!cluster) return t.skip('redis-server not installed');
    const c = cluster;
    redis = createRedis(c.url, 'test-slot-map');
    redis.on('error', () => undefined);
    // 16 keys in 16 slots of one master.
    const master = await c.masterOf('slot-map-0');
    const keys: string[] = [];
    const slots = new Set<string>();
    for (let i = 0; keys.length < 16; i++) {
      const key = `slot-map-${i}`;
      const slot = (await c.cli(['CLUSTER', 'KEYSLOT', key], { follow: false })).stdout.trim();
      if (slots.has(slot) || (await c.masterOf(key)) !== master) continue;
      slots.add(slot);
      keys.push(key);
    }
    const writeAll = (v: string) =>
      Promise.allSettled(keys.map((k) => (redis as RedisClient).set(k, v)));
    const first = await writeAll('1');
    assert.ok(
      first.every((r) => r.status === 'fulfilled'),
      'written before the failover',
    );

    // The master's replica takes over by a manual failover; the old master becomes its replica.
    const nodes = (await c.cli(['CLUSTER', 'NODES'], { port: master, follow: false })).stdout;
    const masterId = nodes
      .split('\n')
      .find((l) => l.includes('myself'))
      ?.split(' ')[0];
    const replicaLine = nodes.split('\n').find((l) => l.split(' ')[3] === masterId);
    const replica = Number(/:(\d+)@/.exec(replicaLine ?? '')?.[1]);
    assert.ok(replica > 0, `a replica of ${master}: ${nodes}`);
    const failover = await c.cli(['CLUSTER', 'FAILOVER'], { port: replica, follow: false });
    assert.match(failover.stdout, /OK/);
    for (let i = 0; ; i++) {
      const role = (await c.cli(['ROLE'], { port: master, follow: false })).stdout;
      if (role.startsWith('slave') && (await c.masterOf(keys[0] as string)) === replica) break;
      assert.ok(i < 200, `no failover to ${replica} in 20 s`);
      await sleep(100);
    }

    // Writes in one turn, again and again, until all land (on the new master).
    const t0 = Date.now();
    const errors = new Map<string, number>();
    for (let round = 0; ; round++) {
      const results = await writeAll(`r${round}`);
      const failed = results.filter((r) => r.status === 'rejected');
      for (const r of failed) {
        const m = String((r.reason as Error).message).split(' ')[0] as string;
        errors.set(m, (errors.get(m) ?? 0) + 1);
      }
      if (failed.length === 0) break;
      assert.ok(Date.now() - t0 < 10_000, `still failing after 10 s: ${[...errors]}`);
      await sleep(200);
    }
    const tookMs = Date.now() - t0;
    const onNew = await c.cli(['GET', keys[0] as string], { port: replica, follow: false });
    assert.match(onNew.stdout, /^r\d+/, 'the last write is on the new master');
    t.diagnostic(
      `all 16 slots written ${tookMs} ms after the failover; errors meanwhile: ${[...errors].map(([m, n]) => `${n}x ${m}`).join(', ') || 'none'}`,
    );
  });
});
