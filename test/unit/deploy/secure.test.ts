/** The secure backbone's credentials and server settings (deploy/local/secure.ts), offline. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { pbkdf2Sync } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../../core/config.js';
import { createLogger } from '../../../core/log.js';
import { kafka } from '../../../deploy/local/kafka.js';
import {
  backboneCredentials,
  backboneLoginEnv,
  kafkaSecureProps,
  redisAclFile,
  scramFormatArgs,
  withCredentials,
} from '../../../deploy/local/secure.js';
import type { StackContext } from '../../../deploy/local/service-def.js';

const creds = {
  kafka: { password: 'kafka-app-pw', adminPassword: 'kafka-admin-pw' },
  redis: { password: 'redis-app-pw', adminPassword: 'redis-admin-pw' },
};

describe('secure backbone settings', () => {
  it('makes credentials only when RECSYS_SECURE_BACKBONE=1, each 0600, the same on every read', async () => {
    const localDir = await mkdtemp(join(tmpdir(), 'secure-'));
    try {
      assert.equal(
        await backboneCredentials({ config: loadConfig({ RECSYS_ENV: 'development' }), localDir }),
        null,
      );
      const config = loadConfig({ RECSYS_ENV: 'development', RECSYS_SECURE_BACKBONE: '1' });
      const made = await backboneCredentials({ config, localDir });
      assert.ok(made);
      assert.deepEqual(await backboneCredentials({ config, localDir }), made);
      for (const name of ['kafka-password', 'kafka-admin-password', 'redis-password']) {
        assert.equal((await stat(join(localDir, 'secrets', name))).mode & 0o777, 0o600);
      }
      assert.equal(new Set(Object.values(made).flatMap((c) => Object.values(c))).size, 4);
    } finally {
      await rm(localDir, { recursive: true, force: true });
    }
  });

  it('hands the logins to child processes through the usual variables', () => {
    const base = loadConfig({
      RECSYS_ENV: 'development',
      RECSYS_SECURE_BACKBONE: '1',
      RECSYS_REDIS_URL: 'redis://127.0.0.1:26379/4',
    });
    const config = withCredentials(base, creds);
    assert.equal(config.redis.url, 'redis://recsys:redis-app-pw@127.0.0.1:26379/4');
    assert.deepEqual(config.kafka.sasl, {
      mechanism: 'scram-sha-256',
      username: 'recsys',
      password: 'kafka-app-pw',
    });
    // What a child loads from the variables is what the parent holds.
    const child = loadConfig({ RECSYS_ENV: 'development', ...backboneLoginEnv(config) });
    assert.equal(child.redis.url, config.redis.url);
    assert.deepEqual(child.kafka.sasl, config.kafka.sasl);
    // The plain backbone passes nothing on.
    assert.deepEqual(backboneLoginEnv(loadConfig({ RECSYS_ENV: 'development' })), {});
    assert.equal(withCredentials(base, null), base);
  });

  it('writes Redis users with hashed passwords: default off, the app without admin commands', () => {
    const acl = redisAclFile(creds);
    assert.match(acl, /^user default off$/m);
    assert.match(acl, /^user recsys on #[0-9a-f]{64} ~\* &\* \+@all -@admin -@dangerous \+info$/m);
    assert.match(acl, /^user admin on #[0-9a-f]{64} ~\* &\* \+@all$/m);
    assert.ok(!acl.includes('redis-app-pw') && !acl.includes('redis-admin-pw'));
  });

  it('configures Kafka with no listener that takes clients without SASL', () => {
    const props = kafkaSecureProps('127.0.0.1', 29092, 29093, creds);
    const get = (key: string) => props.find((p) => p.startsWith(`${key}=`))?.slice(key.length + 1);
    assert.equal(get('listeners'), 'SASL_PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093');
    assert.equal(
      get('listener.security.protocol.map'),
      'CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT',
    );
    assert.equal(get('listener.name.sasl_plaintext.sasl.enabled.mechanisms'), 'SCRAM-SHA-256');
    assert.equal(get('allow.everyone.if.no.acl.found'), 'false');
    assert.equal(get('super.users'), 'User:admin');
  });

  it('formats SCRAM accounts from salted passwords, never the passwords themselves', () => {
    const args = scramFormatArgs(creds);
    assert.equal(args.filter((a) => a === '--add-scram').length, 2);
    assert.ok(!args.join(' ').includes('kafka-app-pw'));
    const app = args.find((a) => a.includes('name=recsys,')) ?? '';
    const m = /salt="([^"]+)",saltedpassword="([^"]+)",iterations=(\d+)/.exec(app);
    assert.ok(m, app);
    const salted = pbkdf2Sync(
      'kafka-app-pw',
      Buffer.from(m[1]!, 'base64'),
      Number(m[3]),
      32,
      'sha256',
    );
    assert.equal(salted.toString('base64'), m[2]);
  });

  it('refuses a Kafka storage formatted without the SCRAM accounts, naming the way out', async () => {
    const localDir = await mkdtemp(join(tmpdir(), 'secure-kafka-'));
    try {
      const data = join(localDir, 'data', 'kafka');
      await mkdir(data, { recursive: true });
      await writeFile(join(data, 'meta.properties'), 'version=1\n');
      const ctx: StackContext = {
        config: loadConfig({
          RECSYS_ENV: 'development',
          RECSYS_SECURE_BACKBONE: '1',
          RECSYS_KAFKA_BROKERS: '127.0.0.1:29092',
        }),
        root: process.cwd(),
        localDir,
        cacheDir: join(localDir, 'cache'),
        log: createLogger('silent'),
      };
      await assert.rejects(
        kafka.prepare(ctx),
        /without SCRAM accounts; start without RECSYS_SECURE_BACKBONE, or remove/,
      );
      // The broker's settings hold the admin password: owner-only.
      const props = join(localDir, 'conf', 'kafka', 'server.properties');
      assert.equal((await stat(props)).mode & 0o777, 0o600);
      assert.match(await readFile(props, 'utf8'), /^listeners=SASL_PLAINTEXT:/m);
    } finally {
      await rm(localDir, { recursive: true, force: true });
    }
  });
});
