/** `GET /`: the demo page (a live feed over the WebSocket), with a strict content policy. */
import { readFileSync } from 'node:fs';
import { statusText, type TemplatedApp } from '../../core/index.js';

export function mountPageRoute(app: TemplatedApp, pagePath: string): void {
  const page = readFileSync(pagePath);
  app.get('/', (res) => {
    res.cork(() => {
      res
        .writeStatus(statusText(200))
        .writeHeader('content-type', 'text/html; charset=utf-8')
        .writeHeader(
          'content-security-policy',
          "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
        )
        .writeHeader('cache-control', 'no-cache')
        .end(page);
    });
  });
}
