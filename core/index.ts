/**
 * Process plumbing every role uses: configuration compiled once at the edge, errors with stable
 * codes, the one retry helper, logging and the metrics registry.
 *
 * @example
 *   const config = loadConfig(process.env);
 *   const log = createLogger(config.logLevel, 'recsys-ingest');
 */
export { loadConfig, loadConfigOrExit } from './config.js';
export { VARIABLES, type VariableDoc } from './config-variables.js';
export {
  parseRedisUrl,
  redact as redactRedisUrl,
  type RedisClusterTarget,
  type RedisTarget,
} from './redis-url.js';
export type {
  AuthConfig,
  BatchConfig,
  Config,
  ConsumerConfig,
  FeaturesConfig,
  IndexerConfig,
  IngestConfig,
  LakeConfig,
  TrendingConfig,
  KafkaConfig,
  KafkaSasl,
  LocalConfig,
  MqttConfig,
  ServingConfig,
} from './config.js';
export {
  assertPortFree,
  bindFailure,
  listenPort,
  PortInUseError,
  type HttpConfig,
  type ProcessKind,
} from './ports.js';
export {
  classifyError,
  ConfigError,
  DependencyUnavailableError,
  isRetriable,
  RecsysError,
  REDIS_CLIENT_DOWN,
  type ErrorClass,
} from './errors.js';
export { withFileLock, type FileLockOptions } from './file-lock.js';
export { createLogger, type Logger } from './log.js';
export { createMetricsRegistry, Registry } from './metrics.js';
export {
  deadlineSignal,
  retry,
  startupRetry,
  sleep,
  untilAborted,
  withTimeout,
  type RetryOptions,
} from './retry.js';
export { checkHealth, type HealthCheck, type HealthReport } from './health.js';
export {
  createHttpServer,
  readBody,
  sendError,
  sendJson,
  statusText,
  type HttpRequest,
  type HttpResponse,
  type HttpServer,
  type RequestState,
  type TemplatedApp,
} from './http.js';
export {
  DEPENDENCY_CODES,
  ERROR_CODES,
  HTTP_ERRORS,
  publicMessage,
  type Dependency,
  type ErrorCode,
  type ErrorCodeInfo,
  type HttpErrorKind,
} from './error-codes.js';
export { retryForever, type ForeverRetry, type RoleDeps, type StreamRole } from './role.js';
export {
  ABANDONED,
  EXIT_CLEAN,
  EXIT_DEADLINE,
  EXIT_FAILED,
  onShutdown,
  type Shutdown,
  type ShutdownBudget,
  type ShutdownStep,
} from './shutdown.js';
