#!/usr/bin/env python3
"""Independent tools for the lake tests (tests/lake_s3.rs).

Nothing here imports fleetpulse code: records are built from schemas/*.avsc
and encoded with fastavro, signed with a re-implementation of the connector
signature (fpcheck.sign), produced with confluent-kafka; the lake is
downloaded with boto3 and read with DuckDB, pyarrow and polars. Each
subcommand prints one JSON object on stdout.
"""
import argparse
import glob
import json
import os
import random
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fpcheck  # noqa: E402  (decode/encode/sign helpers; no fleetpulse code)

FEED_TYPES = ["device_heartbeat", "device_status", "usage_counters"]


def _schemas_by_name():
    out = {}
    for path in glob.glob(os.path.join(fpcheck.REPO, "schemas", "*.avsc")):
        with open(path) as f:
            out[os.path.basename(path)[:-5]] = json.load(f)
    return out


def sample(schema, named=None, depth=0):
    """A valid value of an Avro schema: every optional branch filled in."""
    named = {} if named is None else named
    if isinstance(schema, str):
        if schema in named:
            return sample(named[schema], named, depth + 1)
        return {"string": "x", "int": 1, "long": 1, "double": 1.5, "float": 0.5,
                "boolean": True, "null": None, "bytes": b"x"}[schema]
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"]
        return sample(branches[0], named, depth + 1) if branches else None
    t = schema["type"]
    if "name" in schema:
        named[schema["name"]] = schema
        if "namespace" in schema:
            named[schema["namespace"] + "." + schema["name"]] = schema
    lt = schema.get("logicalType")
    if lt == "uuid":
        return str(uuid.uuid4())
    if lt == "timestamp-millis":
        return int(time.time() * 1000)
    if t == "record":
        return {f["name"]: sample(f["type"], named, depth + 1) for f in schema["fields"]}
    if t == "enum":
        return schema["symbols"][min(1, len(schema["symbols"]) - 1)]
    if t == "array":
        return [sample(schema["items"], named, depth + 1)] if depth < 6 else []
    if t == "map":
        return {}
    if t == "fixed":
        return b"\0" * schema["size"]
    return sample(t, named, depth + 1)


def cmd_bucket(a):
    import boto3
    s3 = _s3(a.endpoint)
    s3.create_bucket(Bucket=a.bucket)
    print(json.dumps({"bucket": a.bucket, "boto3": boto3.__version__}))


def _s3(endpoint):
    import boto3
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing-key-id", aws_secret_access_key="testing-secret")


def cmd_feed(a):
    """Produce signed records until `--stop-file` exists; write their event ids."""
    from confluent_kafka import Producer
    schemas = _schemas_by_name()
    secret = a.secret.encode()
    p = Producer({"bootstrap.servers": a.brokers, "linger.ms": 20, "acks": "all",
                  "enable.idempotence": True})
    delivered, failed = [], [0]

    def on_delivery(err, msg, event_id):
        if err is None:
            delivered.append(event_id)
        else:
            failed[0] += 1

    rng = random.Random(a.seed)
    seq, now0 = 0, int(time.time() * 1000)
    devices = [f"SER-{i:04d}" for i in range(a.devices)]
    while not os.path.exists(a.stop_file):
        for _ in range(a.batch):
            name = rng.choice(FEED_TYPES)
            rec = sample(schemas[name])
            event_id = str(uuid.uuid4())
            device = rng.choice(devices)
            # Event time over two hours and two dates (hour partitions,
            # several open files per partition, late records).
            observed = now0 - rng.choice([0, 3600_000, 86_400_000]) + rng.randint(0, 60_000)
            rec.update(event_id=event_id, tenant_id="tenant-lake", connector_id=a.connector,
                       device_id=device, observed_at=observed)
            payload = fpcheck.encode(name, rec)
            topic = f"{a.prefix}.raw.{name}"
            seq += 1
            ts = int(time.time() * 1000)
            key = device.encode()
            headers = fpcheck.sign(secret, a.connector, topic, key, seq, ts, payload)
            p.produce(topic, key=key, value=payload, headers=headers,
                      on_delivery=lambda err, msg, e=event_id: on_delivery(err, msg, e))
        p.poll(0)
        time.sleep(a.pause)
    p.flush(60)
    with open(a.ids_out, "w") as f:
        json.dump(delivered, f)
    print(json.dumps({"produced": seq, "delivered": len(delivered), "failed": failed[0]}))


def cmd_download(a):
    """Download every object under the prefix into a folder (same relative keys)."""
    s3 = _s3(a.endpoint)
    keys, total = [], 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=a.bucket, Prefix=a.prefix):
        for o in page.get("Contents", []):
            keys.append(o["Key"])
            total += o["Size"]
    bad_keys = []
    for k in keys:
        rel = k[len(a.prefix):].lstrip("/")
        parts = rel.split("/")
        ok = (parts[0].startswith("table=") and parts[1].startswith("date=")
              and parts[-1].startswith("part-") and parts[-1].endswith(".parquet"))
        if not ok:
            bad_keys.append(k)
        dest = os.path.join(a.out, *parts)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        s3.download_file(a.bucket, k, dest)
    uploads = s3.list_multipart_uploads(Bucket=a.bucket).get("Uploads", [])
    print(json.dumps({"objects": len(keys), "bytes": total, "bad_keys": bad_keys[:5],
                      "open_multipart_uploads": len(uploads)}))


def cmd_count(a):
    """Rows by event_id with DuckDB over the downloaded lake."""
    import duckdb
    pattern = os.path.join(a.lake, "table=*", "**", "*.parquet")
    rows = duckdb.sql(
        f"SELECT event_id, count(*) AS n FROM read_parquet('{pattern}', union_by_name = true, hive_partitioning = false) "
        "GROUP BY event_id").fetchall()
    counts = {r[0]: r[1] for r in rows}
    with open(a.ids) as f:
        sent = json.load(f)
    sent_set = set(sent)
    dups = {k: v for k, v in counts.items() if v > 1}
    print(json.dumps({
        "rows": sum(counts.values()), "distinct": len(counts), "sent": len(sent),
        "sent_distinct": len(sent_set), "duplicated_ids": len(dups),
        "missing": len(sent_set - counts.keys()), "extra": len(counts.keys() - sent_set),
        "duplicate_examples": list(dups.items())[:3],
    }))


def cmd_readers(a):
    """Read every table with DuckDB, pyarrow and polars, with no options, and
    report the column types the lake's users see."""
    import duckdb
    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq
    out = {}
    for tdir in sorted(glob.glob(os.path.join(a.lake, "table=*"))):
        table = os.path.basename(tdir)[len("table="):]
        files = sorted(glob.glob(os.path.join(tdir, "**", "*.parquet"), recursive=True))
        pattern = os.path.join(tdir, "**", "*.parquet")
        d = duckdb.sql(f"SELECT * FROM read_parquet('{pattern}')")
        duck_types = {c: str(t) for c, t in zip(d.columns, d.types)}
        duck_rows = duckdb.sql(f"SELECT count(*) FROM read_parquet('{pattern}')").fetchall()[0][0]
        pa_table = pq.read_table(tdir)
        pa_types = {f.name: str(f.type) for f in pa_table.schema}
        pl_df = pl.read_parquet(tdir)
        pl_types = {c: str(t) for c, t in pl_df.schema.items()}
        # Encodings of the string columns (dictionary pages for enums).
        encodings = {}
        md = pq.ParquetFile(files[0]).metadata
        for i in range(md.num_columns):
            c = md.row_group(0).column(i)
            encodings[c.path_in_schema] = sorted(set(c.encodings))
        stats = all(md.row_group(0).column(i).statistics is not None
                    for i in range(md.num_columns))
        compression = sorted({md.row_group(0).column(i).compression for i in range(md.num_columns)})
        out[table] = {
            "files": len(files), "duckdb_rows": duck_rows, "pyarrow_rows": pa_table.num_rows,
            "polars_rows": pl_df.height, "duckdb": duck_types, "pyarrow": pa_types,
            "polars": pl_types, "encodings": encodings, "statistics": stats,
            "compression": compression, "pyarrow_version": pa.__version__,
            "polars_version": pl.__version__, "duckdb_version": duckdb.__version__,
        }
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bucket")
    b.add_argument("--endpoint", required=True)
    b.add_argument("--bucket", required=True)
    b.set_defaults(f=cmd_bucket)
    f = sub.add_parser("feed")
    f.add_argument("--brokers", required=True)
    f.add_argument("--prefix", required=True)
    f.add_argument("--secret", required=True)
    f.add_argument("--connector", required=True)
    f.add_argument("--ids-out", required=True)
    f.add_argument("--stop-file", required=True)
    f.add_argument("--batch", type=int, default=20)
    f.add_argument("--pause", type=float, default=0.1)
    f.add_argument("--devices", type=int, default=12)
    f.add_argument("--seed", type=int, default=7)
    f.set_defaults(f=cmd_feed)
    d = sub.add_parser("download")
    d.add_argument("--endpoint", required=True)
    d.add_argument("--bucket", required=True)
    d.add_argument("--prefix", required=True)
    d.add_argument("--out", required=True)
    d.set_defaults(f=cmd_download)
    c = sub.add_parser("count")
    c.add_argument("--lake", required=True)
    c.add_argument("--ids", required=True)
    c.set_defaults(f=cmd_count)
    r = sub.add_parser("readers")
    r.add_argument("--lake", required=True)
    r.set_defaults(f=cmd_readers)
    a = ap.parse_args()
    a.f(a)


if __name__ == "__main__":
    main()
