/**
 * The product's own processes on the local backbone: `stream` (the ingest bridge and every
 * stream role, `dist/stream/main.js all`, HTTP on RECSYS_STREAM_PORT) and `serving` (the feed
 * server, `dist/serving/main.js`, HTTP on RECSYS_SERVING_PORT). They run from the built checkout
 * (`npm run build`), detached like the backbone, and are ready when their `/readyz` answers 200:
 * for serving that means a model is loaded and the caches are warm. The stream process gets the
 * machine's ingest service token (`.local/secrets/ingest-token`), and both the secure backbone's
 * logins when it runs (`secure.ts`).
 */
import { join } from 'node:path';
import { localIngestTokens } from './secrets.js';
import { backboneLoginEnv } from './secure.js';
import type { AppName, ServiceDef, StackContext } from './service-def.js';

/** HTTP ports of the app processes (`/readyz`, `/metrics`; ingest's `POST /v1/events`). */
export const APP_PORTS = {
  stream: (ctx: StackContext): number => ctx.config.http.ports.stream,
  serving: (ctx: StackContext): number => ctx.config.http.ports.serving,
} as const;

async function ready(port: number): Promise<boolean> {
  const res = await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(2000) });
  await res.body?.cancel();
  return res.status === 200;
}

function appDef(name: AppName, script: string, args: string[]): ServiceDef {
  return {
    name,
    memory: 'no cap',
    port: (ctx) => APP_PORTS[name](ctx),
    async install() {
      // Built by `npm run build`; nothing to fetch.
    },
    async prepare(ctx) {
      return {
        command: process.execPath,
        args: [join(ctx.root, script), ...args],
        // Each on its kind's port (what Prometheus scrapes), even if the caller set one for all.
        // The stream process takes the local service token on HTTP ingest (`secrets.ts`);
        // on the secure backbone both log in to Kafka and Redis as the application.
        env: {
          ...process.env,
          ...backboneLoginEnv(ctx.config),
          RECSYS_HTTP_PORT: '',
          ...(name === 'stream' ? { RECSYS_INGEST_TOKENS: await localIngestTokens(ctx) } : {}),
        },
        cwd: ctx.root,
        marker: script,
      };
    },
    probe: (ctx) => ready(APP_PORTS[name](ctx)),
  };
}

export const APP: Readonly<Record<AppName, ServiceDef>> = {
  stream: appDef('stream', 'dist/stream/main.js', ['all']),
  serving: appDef('serving', 'dist/serving/main.js', []),
};
