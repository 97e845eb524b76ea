/** Batch side: directories, model registry, candidates, retrain trigger and schedule. */
import type { VariableDoc } from './doc.js';

export const BATCH: readonly VariableDoc[] = [
  {
    name: 'RECSYS_BATCH_DIR',
    default: '.local/batch',
    doc: 'batch working directory (ETL tables, training data, evaluation reports)',
  },
  {
    name: 'RECSYS_MODEL_REGISTRY_URL',
    default: 'file://.local/models',
    doc: 'model registry: file://<dir> (local directory) or the MLflow tracking URL; MLFLOW_TRACKING_URI, when set, wins',
  },
  {
    name: 'MLFLOW_TRACKING_URI',
    default: '',
    doc: 'MLflow tracking server; when set the model registry is MLflow',
  },
  {
    name: 'RECSYS_MODEL_NAME',
    default: 'recsys-reranker',
    doc: 'registered model name of the reranker',
  },
  {
    name: 'RECSYS_MODEL_MIN_NDCG',
    default: '0.05',
    doc: 'a new model becomes champion only with NDCG@10 at least this and above the champion',
  },
  {
    name: 'RECSYS_PYTHON_VENV',
    default: '~/.cache/recsys/venv',
    doc: 'virtual environment the batch Python steps (LightGBM, ONNX export, MLflow) run in; created by the project',
  },
  {
    name: 'RECSYS_BATCH_ENGINE',
    default: 'duckdb',
    doc: 'engine of the ETL and candidate SQL: duckdb (embedded) or spark (PySpark in the venv, Java 17)',
  },
  {
    name: 'RECSYS_SPARK_MASTER',
    default: 'local[2]',
    doc: 'Spark master of the spark engine: local[N] or a cluster URL (spark://host:7077)',
  },
  {
    name: 'RECSYS_CANDIDATES_PER_USER',
    default: '200',
    doc: 'batch home-feed candidates kept per user',
  },
  {
    name: 'RECSYS_NEIGHBOURS_PER_ITEM',
    default: '100',
    doc: 'co-visitation (and EASE) neighbours kept per item (batch lists, and the online lists the feature role keeps)',
  },
  {
    name: 'RECSYS_BATCH_EASE_ITEMS',
    default: '5000',
    doc: 'most interacted items the EASE item weights (a rank feature) are fitted over; memory 8 x items^2 bytes; 0 turns it off',
  },
  {
    name: 'RECSYS_BATCH_EASE_LAMBDA',
    default: '200',
    doc: "EASE's L2 penalty: larger for more interactions per item",
  },
  {
    name: 'RECSYS_CANDIDATES_KEEP_VERSIONS',
    default: '2',
    doc: 'batch output versions kept in Redis (the live one and rollbacks); older ones expire',
  },
  {
    name: 'RECSYS_RETRAIN_TOKEN',
    default: '',
    doc: 'bearer token of the retrain webhook; required by `npm run batch -- --serve`; Alertmanager sends it',
  },
  {
    name: 'RECSYS_BATCH_SCHEDULE',
    default: '',
    doc: 'cron expression for `npm run batch -- --schedule` (empty: run once)',
  },
];
