/** The lake sink's metrics, one set per registry (`lakeMetrics`). */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/** What the gauges read of each writer. */
export interface MeteredWriter {
  openFiles(): number;
  pendingRows(): number;
}

export interface LakeMetrics {
  files: Counter;
  rows: Counter;
  bytes: Counter;
  fileSeconds: Histogram;
  failures: Counter;
  recovered: Counter<'action'>;
  /** Writers whose open files and pending rows the gauges report. */
  writers: Set<MeteredWriter>;
}

const metricsByRegistry = new WeakMap<Registry, LakeMetrics>();

export function lakeMetrics(registry: Registry): LakeMetrics {
  const existing = metricsByRegistry.get(registry);
  if (existing) return existing;
  const registers = [registry];
  const writers = new Set<MeteredWriter>();
  const metrics: LakeMetrics = {
    files: new Counter({
      name: 'recsys_lake_files_written_total',
      help: 'Parquet files renamed into place',
      registers,
    }),
    rows: new Counter({
      name: 'recsys_lake_rows_written_total',
      help: 'rows in the Parquet files renamed into place',
      registers,
    }),
    bytes: new Counter({
      name: 'recsys_lake_written_bytes_total',
      help: 'bytes of the Parquet files renamed into place',
      registers,
    }),
    fileSeconds: new Histogram({
      name: 'recsys_lake_file_write_seconds',
      help: 'time to write one Parquet file: encode, fsync, rename, fsync the directory',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    }),
    failures: new Counter({
      name: 'recsys_lake_write_failures_total',
      help: 'failed attempts to write a roll of files (each is retried)',
      registers,
    }),
    recovered: new Counter({
      name: 'recsys_lake_recovered_files_total',
      help: 'files cleaned up on partition assignment: removed (never committed) or trimmed',
      labelNames: ['action'],
      registers,
    }),
    writers,
  };
  new Gauge({
    name: 'recsys_lake_open_files',
    help: 'Parquet files being filled (one per partition and hour of the open rolls)',
    registers,
    collect() {
      let n = 0;
      for (const w of writers) n += w.openFiles();
      this.set(n);
    },
  });
  new Gauge({
    name: 'recsys_lake_pending_rows',
    help: 'rows taken from Kafka and not yet in a committed file',
    registers,
    collect() {
      let n = 0;
      for (const w of writers) n += w.pendingRows();
      this.set(n);
    },
  });
  metricsByRegistry.set(registry, metrics);
  return metrics;
}
