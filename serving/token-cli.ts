/**
 * Prints a feed token for a user, signed with this environment's RECSYS_JWT_SECRET:
 * `node dist/serving/token-cli.js <userId> [ttlSeconds=86400]`. For development and the demo page.
 * `--users <n> [ttlSeconds]` prints a JSON object of tokens for the generator's users u0..u<n-1>
 * instead: the setup step of the k6 scripts (deploy/k6/), which cannot sign tokens themselves.
 */
import { loadConfigOrExit } from '../core/index.js';
import { mintToken } from '../core/auth.js';

const args = process.argv.slice(2);
const many = args[0] === '--users';
const [userId, ttl = '86400'] = many ? args.slice(1) : args;
if (!userId || !/^[0-9]+$/.test(ttl) || (many && !/^[1-9][0-9]*$/.test(userId))) {
  process.stderr.write(
    'usage: node dist/serving/token-cli.js <userId> [ttlSeconds=86400]\n' +
      '       node dist/serving/token-cli.js --users <count> [ttlSeconds=86400]\n',
  );
  process.exit(2);
}
const config = loadConfigOrExit(process.env);
if (many) {
  const tokens: Record<string, string> = {};
  for (let i = 0; i < Number(userId); i++) {
    tokens[`u${i}`] = await mintToken(config.serving, `u${i}`, Number(ttl));
  }
  process.stdout.write(`${JSON.stringify(tokens)}\n`);
} else {
  process.stdout.write(`${await mintToken(config.serving, userId, Number(ttl))}\n`);
}
