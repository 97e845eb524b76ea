/**
 * An MQTT 5 subscriber whose QoS 1 acknowledgements are in the caller's hands: each message
 * carries an `ack()` the bridge calls only after Kafka acknowledged the write. mqtt.js cannot do
 * this without stalling: it handles incoming packets one at a time and only moves on once a
 * message is acknowledged, so a deferred ack would admit one Kafka round trip per message.
 *
 * How it keeps the delivery guarantee:
 * 1. The session is persistent (clean start off, session expiry set) under a fixed client id, so
 *    the broker keeps unacknowledged and queued messages while the bridge is away and resends
 *    them when it returns.
 * 2. PUBACKs go out in the order the PUBLISHes arrived (MQTT 5, 4.6): acked messages wait
 *    behind an older unacked one in a FIFO.
 * 3. The broker sends at most `receiveMaximum` unacknowledged messages: that is the bridge's
 *    back-pressure when Kafka is slow or down.
 * 4. After a reconnect, acks for messages of the old connection are dropped: the broker
 *    redelivers those, and the duplicate is harmless (eventId is the idempotency key).
 * 5. `pause()` stops reading the socket (a stopping bridge takes nothing more; the broker keeps
 *    what is unacknowledged for the session) while acks still go out.
 */
import { EventEmitter } from 'node:events';
import { connect as tcpConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import mqttPacket, { type IPublishPacket, type Packet } from 'mqtt-packet';
import { DependencyUnavailableError, type Logger, sleep } from '../core/index.js';

const PROTOCOL = { protocolVersion: 5 } as const;
const HANDSHAKE_TIMEOUT_MS = 10_000;

export interface InboundMessage {
  topic: string;
  payload: Buffer;
  /** Redelivery after a reconnect (or the broker's own retry). */
  dup: boolean;
  /** 0: at most once, nothing to acknowledge; 1: at least once, `ack()` once it is in Kafka. */
  qos: 0 | 1;
  /** The connection it came on is gone: an ack is ignored and the broker will redeliver it. */
  readonly stale: boolean;
  /** Sends the PUBACK (in arrival order). Idempotent; ignored after the connection is gone. */
  ack(): void;
}

export interface MqttSubscriberOptions {
  url: string;
  username: string;
  password: string;
  clientId: string;
  topicFilter: string;
  /** Most unacknowledged QoS 1 messages the broker may send us. */
  receiveMaximum: number;
  keepaliveSec?: number;
  sessionExpirySec?: number;
  reconnectInitialMs?: number;
  reconnectMaxMs?: number;
  log: Logger;
  onMessage(message: InboundMessage): void;
}

interface Pending {
  messageId: number;
  acked: boolean;
}

export class MqttSubscriber extends EventEmitter {
  readonly #opts: Required<Omit<MqttSubscriberOptions, 'onMessage' | 'log'>> &
    Pick<MqttSubscriberOptions, 'onMessage' | 'log'>;
  #socket: Socket | null = null;
  #generation = 0;
  #pending: Pending[] = [];
  #flushScheduled = false;
  #connected = false;
  #stopping = false;
  #pingTimer: NodeJS.Timeout | undefined;
  #lastPong = 0;
  #firstSubscribe: { resolve: () => void; reject: (e: Error) => void } | null = null;
  #paused = false;
  #neverSubscribed = true;
  #sessionsLost = 0;

  constructor(options: MqttSubscriberOptions) {
    super();
    this.#opts = {
      keepaliveSec: 30,
      sessionExpirySec: 7 * 24 * 3600,
      reconnectInitialMs: 200,
      reconnectMaxMs: 5000,
      ...options,
    };
  }

  get connected(): boolean {
    return this.#connected;
  }

  /**
   * Reconnects on which the broker no longer held our session (CONNACK session present 0
   * after an earlier connection of this process): QoS 1 messages it had queued for us are gone,
   * e.g. after another client connected with our client id and clean start.
   */
  get sessionsLost(): number {
    return this.#sessionsLost;
  }

  /** Messages received but not yet acknowledged. */
  get inFlight(): number {
    return this.#pending.length;
  }

  /**
   * Connects and subscribes; resolves once the first subscription is granted. Later drops are
   * retried for as long as the subscriber runs. Rejects if the broker refuses us (bad
   * credentials, subscription not allowed): retrying cannot fix that.
   */
  start(): Promise<void> {
    const first = new Promise<void>((resolve, reject) => {
      this.#firstSubscribe = { resolve, reject };
    });
    void this.#runLoop();
    return first;
  }

  /** Stops reading: no more messages arrive (acks of earlier ones still go out). */
  pause(): void {
    this.#paused = true;
    this.#socket?.pause();
  }

  /**
   * Leaves with a normal DISCONNECT: the broker keeps the session (its expiry is set on
   * connect) with every message not acknowledged yet, and delivers them on the next connect.
   */
  async stop(): Promise<void> {
    this.#stopping = true;
    const socket = this.#socket;
    if (!socket) return;
    // Reading again only to see the broker close the connection; messages are ignored now.
    this.#paused = false;
    socket.resume();
    await new Promise<void>((resolve) => {
      socket.once('close', () => resolve());
      if (this.#connected) socket.end(mqttPacket.generate({ cmd: 'disconnect' }, PROTOCOL));
      else socket.destroy();
      setTimeout(() => socket.destroy(), 1000).unref();
    });
  }

  async #runLoop(): Promise<void> {
    let delay = this.#opts.reconnectInitialMs;
    while (!this.#stopping) {
      const outcome = await this.#connectOnce();
      if (this.#stopping) break;
      // Refused before we ever ran (bad credentials, ACL): start() has rejected; stop here.
      // Refused later (a password rotated under us): keep trying, slowly, while /readyz is red.
      if (outcome === 'fatal' && this.#neverSubscribed) return;
      if (outcome === 'fatal') delay = this.#opts.reconnectMaxMs;
      if (outcome === 'subscribed') delay = this.#opts.reconnectInitialMs;
      const wait = Math.round(Math.random() * delay);
      this.#opts.log.warn({ reconnectInMs: wait }, 'mqtt connection lost; reconnecting');
      await sleep(wait);
      delay = Math.min(this.#opts.reconnectMaxMs, delay * 2);
    }
  }

  /** One connection's life. Resolves when it ends. */
  #connectOnce(): Promise<'subscribed' | 'failed' | 'fatal'> {
    const url = new URL(this.#opts.url);
    const port = Number(url.port) || (url.protocol === 'mqtts:' ? 8883 : 1883);
    const generation = ++this.#generation;
    this.#pending = [];
    const socket =
      url.protocol === 'mqtts:'
        ? tlsConnect({ host: url.hostname, port, servername: url.hostname })
        : tcpConnect({ host: url.hostname, port });
    socket.setNoDelay(true);
    if (this.#paused) socket.pause();
    this.#socket = socket;
    const parser = mqttPacket.parser(PROTOCOL);
    let outcome: 'subscribed' | 'failed' | 'fatal' = 'failed';

    return new Promise((resolve) => {
      // A broker that accepts TCP but never completes CONNECT/SUBSCRIBE must not hold us forever.
      const handshakeTimer = setTimeout(() => {
        fail(
          new DependencyUnavailableError(
            'mqtt',
            `no CONNACK/SUBACK within ${HANDSHAKE_TIMEOUT_MS} ms`,
          ),
        );
      }, HANDSHAKE_TIMEOUT_MS);
      const fail = (err: Error, fatal = false): void => {
        if (fatal) outcome = 'fatal';
        this.#opts.log.error({ err: err.message }, 'mqtt subscriber error');
        if (this.#firstSubscribe && fatal) {
          this.#firstSubscribe.reject(err);
          this.#firstSubscribe = null;
        }
        socket.destroy();
      };
      socket.once('connect', () => {
        this.#send({
          cmd: 'connect',
          protocolId: 'MQTT',
          protocolVersion: 5,
          clientId: this.#opts.clientId,
          clean: false,
          keepalive: this.#opts.keepaliveSec,
          username: this.#opts.username,
          password: Buffer.from(this.#opts.password),
          properties: {
            sessionExpiryInterval: this.#opts.sessionExpirySec,
            receiveMaximum: this.#opts.receiveMaximum,
          },
        });
      });
      socket.on('data', (chunk: Buffer) => parser.parse(chunk));
      socket.on('error', (err) => fail(err));
      socket.once('close', () => {
        clearTimeout(handshakeTimer);
        this.#connected = false;
        clearInterval(this.#pingTimer);
        this.emit('disconnect');
        resolve(outcome);
      });
      parser.on('error', (err: Error) => fail(err));
      parser.on('packet', (packet: Packet) => {
        switch (packet.cmd) {
          case 'connack': {
            const code = packet.reasonCode ?? 0;
            if (code !== 0) {
              // 0x86 bad credentials, 0x87 not authorized: retrying will not help.
              const fatal = code === 0x86 || code === 0x87 || code === 0x84;
              return fail(
                new DependencyUnavailableError(
                  'mqtt',
                  `broker refused connection, reason code 0x${code.toString(16)}`,
                ),
                fatal,
              );
            }
            // A connection after the first subscription follows a lost one.
            if (!this.#neverSubscribed) this.emit('reconnect');
            if (
              !this.#neverSubscribed &&
              !(packet as { sessionPresent?: boolean }).sessionPresent
            ) {
              this.#sessionsLost += 1;
              this.emit('sessionLost');
              this.#opts.log.error(
                { clientId: this.#opts.clientId },
                'mqtt session was gone on reconnect: messages queued for it are lost',
              );
            }
            this.#connected = true;
            this.#lastPong = Date.now();
            this.#startKeepalive(socket);
            this.#send({
              cmd: 'subscribe',
              messageId: 1,
              subscriptions: [{ topic: this.#opts.topicFilter, qos: 1 }],
            });
            return;
          }
          case 'suback': {
            const granted = (packet as unknown as { granted: number[] }).granted?.[0] ?? 0x80;
            if (granted > 1) {
              return fail(
                new DependencyUnavailableError(
                  'mqtt',
                  `subscription to ${this.#opts.topicFilter} refused, reason code 0x${granted.toString(16)}`,
                ),
                true,
              );
            }
            outcome = 'subscribed';
            this.#neverSubscribed = false;
            clearTimeout(handshakeTimer);
            this.#opts.log.info(
              { topicFilter: this.#opts.topicFilter, clientId: this.#opts.clientId },
              'mqtt subscribed',
            );
            this.emit('connect');
            this.#firstSubscribe?.resolve();
            this.#firstSubscribe = null;
            return;
          }
          case 'publish':
            return this.#onPublish(packet, generation);
          case 'pingresp':
            this.#lastPong = Date.now();
            return;
          case 'disconnect':
            this.#opts.log.warn({ reasonCode: packet.reasonCode }, 'broker sent DISCONNECT');
            return;
          default:
            return;
        }
      });
    });
  }

  #onPublish(packet: IPublishPacket, generation: number): void {
    if (this.#stopping) return;
    const payload =
      typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
    if (packet.qos === 0) {
      this.#opts.onMessage({
        topic: packet.topic,
        payload,
        dup: false,
        qos: 0,
        stale: false,
        ack: () => undefined,
      });
      return;
    }
    if (packet.qos !== 1) {
      // We subscribe at QoS 1, so the broker downgrades; a QoS 2 message is a broker bug.
      this.#opts.log.error({ topic: packet.topic, qos: packet.qos }, 'unexpected QoS; ignoring');
      return;
    }
    const entry: Pending = { messageId: packet.messageId as number, acked: false };
    this.#pending.push(entry);
    const isStale = (): boolean => generation !== this.#generation;
    this.#opts.onMessage({
      topic: packet.topic,
      payload,
      dup: packet.dup,
      qos: 1,
      get stale() {
        return isStale();
      },
      ack: () => {
        if (entry.acked || generation !== this.#generation) return;
        entry.acked = true;
        // A Kafka batch acknowledges hundreds of messages in one microtask run; flush once after.
        if (!this.#flushScheduled) {
          this.#flushScheduled = true;
          process.nextTick(() => {
            this.#flushScheduled = false;
            this.#flushAcks();
          });
        }
      },
    });
  }

  /**
   * Writes PUBACKs for the acknowledged prefix of the arrival queue as one buffer in one socket
   * write. A success PUBACK without properties is 4 bytes in MQTT 5 (3.4.2.1: reason code and
   * property length may be omitted when the reason is 0), so they are written by hand rather
   * than through mqtt-packet's generic encoder, which allocated per packet.
   */
  #flushAcks(): void {
    let n = 0;
    while (n < this.#pending.length && this.#pending[n]?.acked) n++;
    if (n === 0) return;
    const done = this.#pending.splice(0, n);
    const socket = this.#socket;
    if (!socket || !this.#connected) return;
    const buf = Buffer.allocUnsafe(4 * n);
    for (let i = 0; i < n; i++) {
      const id = (done[i] as Pending).messageId;
      buf[4 * i] = 0x40;
      buf[4 * i + 1] = 0x02;
      buf.writeUInt16BE(id, 4 * i + 2);
    }
    socket.write(buf);
  }

  #startKeepalive(socket: Socket): void {
    const intervalMs = this.#opts.keepaliveSec * 1000;
    clearInterval(this.#pingTimer);
    this.#pingTimer = setInterval(() => {
      // While paused nothing is read, PINGRESP included; the connection is not at fault.
      if (this.#paused) this.#lastPong = Date.now();
      if (Date.now() - this.#lastPong > intervalMs * 1.5) {
        this.#opts.log.warn('no PINGRESP from broker; dropping connection');
        socket.destroy();
        return;
      }
      this.#send({ cmd: 'pingreq' });
    }, intervalMs);
    this.#pingTimer.unref();
  }

  #send(packet: Packet): void {
    this.#socket?.write(mqttPacket.generate(packet, PROTOCOL));
  }
}
