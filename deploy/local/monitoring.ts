/**
 * Prometheus and Alertmanager on the local stack, from Debian's `prometheus` and
 * `prometheus-alertmanager` packages (which bring `promtool` and `amtool`). Their configuration
 * is the one in `deploy/prometheus/` with only what differs on this machine changed: paths, the
 * ports, a 5 s scrape interval (so a test sees a rate within seconds; the shipped file keeps
 * 15 s) and the retrain token file. Prometheus finds the product's processes through file-based
 * discovery: `targets/local.json` lists every process kind on its configured port, labelled
 * `process`; other files dropped beside it (a test's processes) are picked up within seconds.
 */
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../../core/index.js';
import type { MonitorName, ServiceDef, StackContext } from './service-def.js';

/** Prometheus's port (RECSYS_PROMETHEUS_PORT). */
export const prometheusPort = (ctx: Pick<StackContext, 'config'>): number =>
  ctx.config.local.prometheusPort;
/** Alertmanager's port (RECSYS_ALERTMANAGER_PORT; not its usual 9093, see the variable). */
export const alertmanagerPort = (ctx: Pick<StackContext, 'config'>): number =>
  ctx.config.local.alertmanagerPort;
/** The shipped files' values, replaced in the local copies. */
const SHIPPED = { scrapeInterval: '15s', retrainTokenFile: '/etc/recsys/retrain-token' };

/** Where the generated configuration lives; `targets/` beside it holds the scrape targets. */
export const prometheusConfDir = (ctx: StackContext): string =>
  join(ctx.localDir, 'conf', 'prometheus');
const alertmanagerConfDir = (ctx: StackContext): string =>
  join(ctx.localDir, 'conf', 'alertmanager');

/** One file_sd entry per process kind: its configured port, labelled with the kind. */
export function scrapeTargets(
  config: Readonly<Config>,
): { targets: string[]; labels: { process: string } }[] {
  // A process listening on every address is scraped over loopback.
  const host = config.http.host === '0.0.0.0' ? '127.0.0.1' : config.http.host;
  return Object.entries(config.http.ports).map(([kind, port]) => ({
    targets: [`${host}:${port}`],
    labels: { process: kind },
  }));
}

function replaceOnce(text: string, from: string, to: string, file: string): string {
  if (!text.includes(from))
    throw new Error(`${file} no longer contains "${from}"; update monitoring.ts`);
  return text.split(from).join(to);
}

/** `deploy/prometheus/prometheus.yml` as the local Prometheus runs it. */
export function localPrometheusConfig(
  shipped: string,
  root: string,
  config: Readonly<Config>,
): string {
  const file = 'deploy/prometheus/prometheus.yml';
  let text = replaceOnce(
    shipped,
    `scrape_interval: ${SHIPPED.scrapeInterval}`,
    'scrape_interval: 5s',
    file,
  );
  text = replaceOnce(
    text,
    `evaluation_interval: ${SHIPPED.scrapeInterval}`,
    'evaluation_interval: 5s',
    file,
  );
  text = replaceOnce(
    text,
    '- rules/*.yml',
    `- ${join(root, 'deploy', 'prometheus', 'rules')}/*.yml`,
    file,
  );
  const { alertmanagerPort, prometheusPort } = config.local;
  text = replaceOnce(text, "'127.0.0.1:9094'", `'127.0.0.1:${alertmanagerPort}'`, file);
  return replaceOnce(text, "'127.0.0.1:9090'", `'127.0.0.1:${prometheusPort}'`, file);
}

/** `deploy/prometheus/alertmanager.yml` as the local Alertmanager runs it. */
export function localAlertmanagerConfig(
  shipped: string,
  config: Readonly<Config>,
  tokenFile: string,
): string {
  const file = 'deploy/prometheus/alertmanager.yml';
  const text = replaceOnce(
    shipped,
    'http://127.0.0.1:8095/',
    `http://127.0.0.1:${config.http.ports.batch}/`,
    file,
  );
  return replaceOnce(text, SHIPPED.retrainTokenFile, tokenFile, file);
}

async function ready(port: number): Promise<boolean> {
  const res = await fetch(`http://127.0.0.1:${port}/-/ready`, {
    signal: AbortSignal.timeout(1500),
  });
  await res.body?.cancel();
  return res.status === 200;
}

const prometheus: ServiceDef = {
  name: 'prometheus',
  memory: 'GOMEMLIMIT 256MiB',
  port: prometheusPort,
  async install() {
    // Debian package, see ensureDebianPackages.
  },
  async prepare(ctx) {
    const confDir = prometheusConfDir(ctx);
    const dataDir = join(ctx.localDir, 'data', 'prometheus');
    await mkdir(join(confDir, 'targets'), { recursive: true });
    await mkdir(dataDir, { recursive: true });
    const shipped = await readFile(
      join(ctx.root, 'deploy', 'prometheus', 'prometheus.yml'),
      'utf8',
    );
    const confFile = join(confDir, 'prometheus.yml');
    await writeFile(confFile, localPrometheusConfig(shipped, ctx.root, ctx.config));
    await writeFile(
      join(confDir, 'targets', 'local.json'),
      JSON.stringify(scrapeTargets(ctx.config), null, 2) + '\n',
    );
    return {
      command: 'prometheus',
      args: [
        `--config.file=${confFile}`,
        `--storage.tsdb.path=${dataDir}`,
        '--storage.tsdb.retention.time=7d',
        `--web.listen-address=127.0.0.1:${prometheusPort(ctx)}`,
        '--web.enable-lifecycle',
      ],
      env: { ...process.env, GOMEMLIMIT: '256MiB' },
      marker: `--config.file=${confFile}`,
    };
  },
  probe: (ctx) => ready(prometheusPort(ctx)),
};

const alertmanager: ServiceDef = {
  name: 'alertmanager',
  memory: 'GOMEMLIMIT 64MiB',
  port: alertmanagerPort,
  async install() {
    // Debian package.
  },
  async prepare(ctx) {
    const confDir = alertmanagerConfDir(ctx);
    const dataDir = join(ctx.localDir, 'data', 'alertmanager');
    await mkdir(confDir, { recursive: true });
    await mkdir(dataDir, { recursive: true });
    // The token the batch trigger (RECSYS_RETRAIN_TOKEN) requires, in a file only we can read.
    const tokenFile = join(confDir, 'retrain-token');
    await writeFile(tokenFile, ctx.config.batch.retrainToken, { mode: 0o600 });
    await chmod(tokenFile, 0o600);
    if (!ctx.config.batch.retrainToken) {
      ctx.log.warn(
        'RECSYS_RETRAIN_TOKEN is not set: Alertmanager posts retrain alerts without a token and the batch trigger refuses them; set it and restart alertmanager',
      );
    }
    const shipped = await readFile(
      join(ctx.root, 'deploy', 'prometheus', 'alertmanager.yml'),
      'utf8',
    );
    const confFile = join(confDir, 'alertmanager.yml');
    await writeFile(confFile, localAlertmanagerConfig(shipped, ctx.config, tokenFile));
    return {
      command: 'prometheus-alertmanager',
      args: [
        `--config.file=${confFile}`,
        `--storage.path=${dataDir}`,
        `--web.listen-address=127.0.0.1:${alertmanagerPort(ctx)}`,
        // One instance: no gossip port.
        '--cluster.listen-address=',
      ],
      env: { ...process.env, GOMEMLIMIT: '64MiB' },
      marker: `--config.file=${confFile}`,
    };
  },
  probe: (ctx) => ready(alertmanagerPort(ctx)),
};

export const MONITORING: Readonly<Record<MonitorName, ServiceDef>> = { prometheus, alertmanager };
