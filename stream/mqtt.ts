/** MQTT client for general use (publishers, tests, tools) and its health check. */
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { DependencyUnavailableError } from '../core/index.js';

export type { MqttClient };

export interface MqttConnectOptions {
  url: string;
  username?: string;
  password?: string;
  clientId?: string;
  /** Keep the session (subscriptions and queued QoS 1 messages) across reconnects. */
  persistent?: boolean;
  connectTimeoutMs?: number;
}

/** Connects (MQTT 5) and resolves once the broker accepted the connection. */
export async function connectMqtt(opts: MqttConnectOptions): Promise<MqttClient> {
  const options: IClientOptions = {
    protocolVersion: 5,
    username: opts.username,
    password: opts.password,
    clientId: opts.clientId ?? `recsys-${process.pid}-${Math.random().toString(16).slice(2, 10)}`,
    clean: !opts.persistent,
    properties: opts.persistent ? { sessionExpiryInterval: 7 * 24 * 3600 } : {},
    connectTimeout: opts.connectTimeoutMs ?? 5000,
    reconnectPeriod: 1000,
  };
  const client = mqtt.connect(opts.url, options);
  try {
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
    });
  } catch (err) {
    client.end(true);
    throw new DependencyUnavailableError('mqtt', (err as Error).message, { cause: err });
  }
  return client;
}

export function mqttHealth(client: MqttClient): void {
  if (!client.connected)
    throw new DependencyUnavailableError('mqtt', 'not connected to the broker');
}

/**
 * Discards the broker-side session of `clientId` (subscriptions and queued messages): connects
 * with clean start and no session expiry, then leaves. For retiring a bridge's client id, and
 * for tests and benchmarks that must not leave sessions queueing every event behind them.
 */
export async function discardMqttSession(
  opts: Omit<MqttConnectOptions, 'persistent'> & { clientId: string },
): Promise<void> {
  const client = await connectMqtt({ ...opts, persistent: false });
  await client.endAsync();
}

/** Whether the broker accepts these credentials now: connect, and leave at once. */
export function canConnectMqtt(
  url: string,
  username: string,
  password: string,
  timeoutMs = 2000,
): Promise<boolean> {
  return new Promise((resolve) => {
    const client = mqtt.connect(url, {
      username,
      password,
      protocolVersion: 5,
      clientId: `recsys-probe-${process.pid}-${Math.random().toString(16).slice(2, 10)}`,
      connectTimeout: timeoutMs,
      reconnectPeriod: 0,
    });
    const done = (ok: boolean): void => {
      client.end(true);
      resolve(ok);
    };
    client.once('connect', () => done(true));
    client.once('error', () => done(false));
    client.once('close', () => done(false));
  });
}
