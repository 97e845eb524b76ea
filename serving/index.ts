/**
 * The uWebSockets.js HTTP server every role serves from, with health, readiness and metrics,
 * and the helpers routes use to read bounded bodies and answer JSON.
 *
 * @example
 *   const server = createHttpServer({ host, port, log, metrics, readiness });
 *   await server.listen();
 */
export { HTTP_ERRORS, type HttpErrorKind } from './errors.js';
export {
  createHttpServer,
  readBody,
  sendError,
  sendJson,
  type HttpResponse,
  type HttpServer,
  type TemplatedApp,
} from './http.js';
