/**
 * Runs one of the product's entry points with this checkout's local secrets in its environment
 * (`secrets.ts`: the JWT secret, the bridge's MQTT password, the retrain token, each unless the
 * caller set it), so the npm scripts work on a development machine without a published default
 * secret. The entry point runs in this process (signals reach it as they would directly).
 *
 *   node dist/deploy/local/with-secrets.js dist/stream/main.js all
 */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { applyLocalSecrets } from './secrets.js';

let root = dirname(fileURLToPath(import.meta.url));
while (!existsSync(join(root, 'package.json'))) root = dirname(root);

const [, , script, ...args] = process.argv;
if (!script) {
  console.error('usage: with-secrets.js <entry point .js> [args...]');
  process.exit(2);
}
await applyLocalSecrets(root);
// The entry point reads its arguments from process.argv as if started directly.
process.argv = [process.argv[0] as string, resolve(script), ...args];
await import(pathToFileURL(resolve(script)).href);
