"""The Spark side of the batch engine: one SparkSession that runs the batch's SQL statements.

batch/spark.ts starts this once per batch run and sends one JSON request per line on stdin;
each gets one JSON reply line on the reply channel (the original stdout; everything else that
would write to stdout, the JVM included, goes to stderr). The SQL text comes from etl.ts and
candidates.ts unchanged: this file only registers inputs, materialises tables, writes Parquet and
returns rows.

Requests ({"id": n, "op": ..., ...}):
  parquet {name, path, schema?} Parquet files (a path or glob) as temp view `name`
  json    {name, path, schema}  JSON Lines with a DDL schema ('itemId STRING, price DOUBLE') as view
  view    {name, sql}           the query as temp view `name` (evaluated where it is read)
  table   {name, sql}           the query cached (memory, then disk) and materialised as view `name`
  write   {sql, path}           the query's rows as ONE zstd Parquet file at `path` (replaced)
  rows    {sql}                 the query's rows as JSON arrays
Replies: {"id": n, "ok": true, "ms": ..., "rows"?: [...]} or {"id": n, "ok": false, "error": "..."}.
End of stdin stops the session and exits 0.

Logs go to stderr as plain lines ("spark_sql: ..."); the TS side logs them through pino.
"""

import argparse
import datetime
import decimal
import glob
import json
import os
import shutil
import sys
import time


def log(msg):
    sys.stderr.write(f"spark_sql: {msg}\n")
    sys.stderr.flush()


def reply_channel():
    """The original stdout for replies; fd 1 (Python and the JVM we start) then goes to stderr."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def plain(v):
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, (datetime.datetime, datetime.date)):
        return v.isoformat()
    return v


def build_session(args):
    from pyspark.sql import SparkSession

    b = (
        SparkSession.builder.appName("recsys-batch")
        .master(args.master)
        .config("spark.driver.memory", args.driver_memory)
        # The driver JVM compiles with C1 only: the batch's many short statements finished in
        # 42 s instead of 114 s on the 20,000-event test lake (2 loaded cores), C2 compiling
        # spent more than it saved. Executors on a cluster keep their default JIT.
        .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(args.shuffle_partitions))
        .config("spark.sql.parquet.compression.codec", "zstd")
        .config("spark.ui.showConsoleProgress", "false")
        # Parquet timestamps read as instants (the lake writes UTC-adjusted millis).
        .config("spark.sql.parquet.inferTimestampNTZ.enabled", "false")
    )
    if args.master.startswith("local"):
        # One machine: no network beyond loopback.
        b = b.config("spark.driver.bindAddress", "127.0.0.1").config(
            "spark.driver.host", "127.0.0.1"
        )
    spark = b.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def write_one_file(spark, sql, path):
    """Writes through a sibling temp directory, then renames its one part file onto `path`."""
    tmp = path + ".spark-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    spark.sql(sql).coalesce(1).write.mode("overwrite").parquet(tmp)
    parts = sorted(glob.glob(os.path.join(tmp, "part-*.parquet")))
    if len(parts) != 1:
        raise RuntimeError(f"expected one part file in {tmp}, found {len(parts)}")
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.replace(parts[0], path)
    shutil.rmtree(tmp, ignore_errors=True)


def handle(spark, req, cached):
    op = req["op"]
    if op == "parquet":
        reader = spark.read
        # A schema skips inference (which opens every file's footer); without one, files whose
        # columns differ are merged by name, as DuckDB's union_by_name.
        if req.get("schema"):
            reader = reader.schema(req["schema"])
        else:
            reader = reader.option("mergeSchema", "true")
        reader.parquet(req["path"]).createOrReplaceTempView(req["name"])
    elif op == "json":
        df = spark.read.schema(req["schema"]).json(req["path"])
        df.createOrReplaceTempView(req["name"])
    elif op == "view":
        spark.sql(req["sql"]).createOrReplaceTempView(req["name"])
    elif op == "table":
        name = req["name"]
        if name in cached:
            cached.pop(name).unpersist()
        df = spark.sql(req["sql"]).cache()
        df.count()  # materialise now, as DuckDB's CREATE TABLE does
        df.createOrReplaceTempView(name)
        cached[name] = df
    elif op == "write":
        write_one_file(spark, req["sql"], req["path"])
    elif op == "rows":
        return [[plain(v) for v in row] for row in spark.sql(req["sql"]).collect()]
    else:
        raise ValueError(f"unknown op {op!r}")
    return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--master", default="local[2]")
    p.add_argument("--driver-memory", default="1g")
    p.add_argument("--shuffle-partitions", type=int, default=8)
    args = p.parse_args()
    out = reply_channel()
    t0 = time.time()
    spark = build_session(args)
    log(f"session up: Spark {spark.version}, master {args.master}, {time.time() - t0:.1f} s")
    out.write(json.dumps({"ready": True, "version": spark.version}) + "\n")
    cached = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        t = time.time()
        try:
            rows = handle(spark, req, cached)
            res = {"id": req.get("id"), "ok": True, "ms": round((time.time() - t) * 1000)}
            if rows is not None:
                res["rows"] = rows
        except Exception as e:  # noqa: BLE001 - every failure goes back to the caller
            res = {"id": req.get("id"), "ok": False, "error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(res) + "\n")
    spark.stop()
    log("session stopped")


if __name__ == "__main__":
    main()
