/**
 * Prints a feed token for a user, signed with this environment's RECSYS_JWT_SECRET:
 * `node dist/serving/token-cli.js <userId> [ttlSeconds=86400]`. For development and the demo page.
 */
import { loadConfig } from '../core/index.js';
import { mintToken } from './auth.js';

const [userId, ttl = '86400'] = process.argv.slice(2);
if (!userId || !/^[0-9]+$/.test(ttl)) {
  process.stderr.write('usage: node dist/serving/token-cli.js <userId> [ttlSeconds=86400]\n');
  process.exit(2);
}
const config = loadConfig(process.env);
process.stdout.write(`${await mintToken(config.serving, userId, Number(ttl))}\n`);
