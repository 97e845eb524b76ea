/**
 * The backbone clients the other folders use (Kafka, Redis, MQTT, Elasticsearch), each with a
 * health check, and the readiness aggregator. The ingest role itself starts from `main.ts`.
 *
 * @example
 *   const kafka = createKafka(config.kafka, log, 'indexer');
 *   const report = await checkHealth({ kafka: () => kafkaHealth(kafka, 1000) }, 1000);
 */
export { createElastic, elasticAuthHeaders, elasticHealth, type ElasticClient } from './elastic.js';
export { createConsumer, createKafka, createProducer, ensureTopics, kafkaHealth } from './kafka.js';
export { canConnectMqtt, connectMqtt, discardMqttSession, mqttHealth } from './mqtt.js';
export { createRedis, redisHealth, type Redis, type RedisClient } from '../store/redis.js';
export { startLake } from './roles/lake.js';
export { lakeGlob } from './lake-layout.js';
export { startIndexer } from './roles/indexer.js';
