/**
 * Server versions, pinned once. `deploy/local` installs exactly these and `docker-compose.yml`
 * runs the same versions from official images (a unit test holds the two together).
 * Client majors follow server majors: @elastic/elasticsearch 8 for Elasticsearch 8;
 * kafkajs 2 speaks the Kafka 3.x protocol (Kafka 4 dropped protocol versions kafkajs uses).
 */
export const VERSIONS = Object.freeze({
  kafka: '3.9.1',
  /** Scala build of the Kafka broker jar. */
  kafkaScala: '2.13',
  /** Apicurio 3.0.x runs on Java 17; 3.1+ needs Java 21. */
  apicurio: '3.0.9',
  elasticsearch: '8.19.21',
  /** Debian bookworm's packages, which deploy/local installs with apt. */
  redis: '7.0.15',
  mosquitto: '2.0.11',
  /** Also the prom/prometheus and prom/alertmanager image tags (with a leading v) compose runs. */
  prometheus: '2.42.0',
  alertmanager: '0.25.0',
  /** Grafana's image in docker-compose.yml; not installed by deploy/local (dashboards: deploy/grafana). */
  grafana: '11.6.0',
  /** Node.js of the app image (Dockerfile `NODE_VERSION`, node:<version>-bookworm-slim). */
  node: '20.20.2',
  /** Load generator of `npm run bench:serve` (MIT), built with `go install`. */
  vegeta: '12.13.0',
});
