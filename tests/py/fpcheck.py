#!/usr/bin/env python3
"""Independent checks of what fleetpulse wrote, for the end-to-end tests.

Nothing here imports fleetpulse code: Kafka is read with confluent-kafka,
Avro single-object messages are decoded with fastavro from schemas/*.avsc,
Parquet is read with DuckDB and pyarrow. Each subcommand prints one JSON
object on stdout for the Rust test to assert on.
"""
import argparse
import glob
import hashlib
import hmac
import io
import json
import os
import sys
import time
import uuid

import fastavro
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RAW_TYPES = ["device_heartbeat", "device_status", "usage_counters", "alert_event",
             "job_record", "connector_heartbeat"]


def schemas():
    """fingerprint bytes -> (name, parsed schema)"""
    out = {}
    for path in glob.glob(os.path.join(REPO, "schemas", "*.avsc")):
        with open(path) as f:
            parsed = fastavro.parse_schema(json.load(f))
        canonical = fastavro.schema.to_parsing_canonical_form(parsed)
        fp = bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
        out[fp] = (os.path.basename(path)[:-5], parsed)
    return out


SCHEMAS = schemas()


def decode(payload):
    """Decode Avro single-object encoding with fastavro; returns (type name, record)."""
    if payload is None or len(payload) < 10 or payload[:2] != b"\xc3\x01":
        raise ValueError("not single-object encoded")
    name, parsed = SCHEMAS[payload[2:10]]
    buf = io.BytesIO(payload[10:])
    rec = fastavro.schemaless_reader(buf, parsed)
    if buf.read():
        raise ValueError("trailing bytes")
    return name, rec


def encode(name, rec):
    """Avro single-object encoding of `rec` with schema `name` (fastavro)."""
    for fp, (n, parsed) in SCHEMAS.items():
        if n == name:
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, parsed, rec)
            return b"\xc3\x01" + fp + buf.getvalue()
    raise KeyError(name)


# Extra librdkafka properties (`--kafka-prop k=v`, e.g. SASL settings),
# applied to every client made here.
KAFKA_PROPS = {}


def consume_all(brokers, topics, idle=6.0, limit=180.0):
    """Every message on `topics` from the beginning, until `idle` seconds pass without one."""
    c = Consumer({
        **KAFKA_PROPS,
        "bootstrap.servers": brokers,
        "group.id": "fpcheck-" + uuid.uuid4().hex,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    # Assign partitions directly: no consumer-group join (slow on tansu) and
    # no committed offsets to interfere with.
    assignment = []
    for t in topics:
        md = c.list_topics(t, timeout=10).topics.get(t)
        if md is None or md.error is not None:
            continue
        assignment += [TopicPartition(t, p, OFFSET_BEGINNING) for p in md.partitions]
    c.assign(assignment)
    msgs = []
    start = last = time.time()
    while time.time() - last < idle and time.time() - start < limit:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            continue
        msgs.append(m)
        last = time.time()
    c.close()
    return msgs


def cmd_raw(a):
    topics = [f"{a.prefix}.raw.{t}" for t in RAW_TYPES]
    exclude = set(a.exclude or [])
    ids, devices, per_topic, bad = [], set(), {}, 0
    for m in consume_all(a.brokers, topics):
        if f"{m.topic()}:{m.partition()}:{m.offset()}" in exclude:
            continue
        try:
            name, rec = decode(m.value())
        except Exception:
            bad += 1
            continue
        ids.append(str(rec["event_id"]))
        if name != "connector_heartbeat":
            devices.add(rec["device_id"])
        per_topic[name] = per_topic.get(name, 0) + 1
    with open(a.ids_out, "w") as f:
        json.dump(ids, f)
    print(json.dumps({"count": len(ids), "distinct": len(set(ids)), "undecodable": bad,
                      "per_type": per_topic, "device_ids": sorted(devices)}))


DERIVED_TABLES = {"kpi_device_daily", "late_records", "benchmark_cohort_monthly", "usage_ledger"}


def cmd_lake(a):
    import duckdb
    import pyarrow.parquet as pq
    # <lake>/table=<t>/date=YYYY-MM-DD[/hour=HH]/part-….parquet
    every_file = sorted(glob.glob(os.path.join(a.lake, "table=*", "date=*", "**", "*.parquet"),
                                  recursive=True))

    def table_of(f):
        return os.path.relpath(f, a.lake).split(os.sep)[0][len("table="):]

    # Derived tables (KPIs, late records, benchmarks, ledger) carry no
    # one-row-per-event; they are counted apart and still scanned for serials.
    files = [f for f in every_file if table_of(f) not in DERIVED_TABLES]
    derived = {}
    for f in every_file:
        t = table_of(f)
        if t in DERIVED_TABLES:
            derived[t] = derived.get(t, 0) + pq.ParquetFile(f).metadata.num_rows
    per_table = {}
    for t in sorted({table_of(f) for f in files}):
        pattern = os.path.join(a.lake, f"table={t}", "**", "*.parquet")
        n, d = duckdb.sql(f"SELECT count(*), count(DISTINCT event_id) FROM read_parquet('{pattern}')").fetchall()[0]
        arrow_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files if table_of(f) == t)
        per_table[t] = {"rows": n, "distinct": d, "pyarrow_rows": arrow_rows}
    lake_ids = []
    if files:
        lake_ids = [r[0] for r in duckdb.sql(
            f"SELECT event_id FROM read_parquet({files!r}, union_by_name = true, hive_partitioning = false)").fetchall()]
    out = {"files": len(files), "rows": len(lake_ids), "distinct": len(set(lake_ids)), "tables": per_table,
           "derived": derived}
    if a.ids:
        with open(a.ids) as f:
            raw = json.load(f)
        out["missing"] = len(set(raw) - set(lake_ids))
        out["extra"] = len(set(lake_ids) - set(raw))
    if a.serials:
        serials = [s for s in json.loads(a.serials) if s]
        out["serial_hits"] = serial_hits(every_file, serials)
    print(json.dumps(out))


def _strings(v):
    """Every str/bytes inside a decoded value (lists, structs, maps)."""
    if isinstance(v, str):
        yield v
    elif isinstance(v, (bytes, bytearray)):
        yield v.decode("utf-8", "replace")
    elif isinstance(v, dict):
        for k, x in v.items():
            yield from _strings(k)
            yield from _strings(x)
    elif isinstance(v, (list, tuple)):
        for x in v:
            yield from _strings(x)


def serial_hits(files, serials):
    """Where a serial occurs in the lake files: in any decoded value of any
    column, however nested (pages are zstd-compressed, so a byte scan can
    miss them), and in the raw bytes (footer metadata, statistics)."""
    import pyarrow.parquet as pq
    hits = []
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        hits += [f"{path}: {s} (raw bytes)" for s in serials if s.encode() in data]
        table = pq.read_table(path)
        for name in table.column_names:
            for value in table.column(name).to_pylist():
                for text in _strings(value):
                    hits += [f"{path}: {s} (column {name})" for s in serials if s in text]
    return hits


def cmd_selftest(a):
    """Prove the lake serial scan finds a serial that is only inside a
    zstd-compressed page, nested in a list of structs."""
    import random
    import tempfile
    import pyarrow as pa
    import pyarrow.parquet as pq
    canary = "RAWSERIAL-CANARY-0042"
    rnd = random.Random(1)
    rows = []
    for i in range(2000):
        text = "".join(rnd.choice("etaoinshrdlu ") for _ in range(40))
        rows.append({"id": i, "supplies": [{"description": text}]})
    clean = pa.Table.from_pylist(rows)
    rows[1234]["supplies"][0]["description"] = "toner " + canary + " of the device"
    leaky = pa.Table.from_pylist(rows)
    with tempfile.TemporaryDirectory() as d:
        clean_path = os.path.join(d, "clean.parquet")
        leaky_path = os.path.join(d, "leaky.parquet")
        for t, path in ((clean, clean_path), (leaky, leaky_path)):
            pq.write_table(t, path, compression="zstd", use_dictionary=False)
        with open(leaky_path, "rb") as f:
            raw_found = canary.encode() in f.read()
        found = serial_hits([leaky_path], [canary])
        none = serial_hits([clean_path], [canary])
    ok = bool(found) and not none
    print(json.dumps({"ok": ok, "found": found, "clean_hits": none,
                      "raw_bytes_alone_found_it": raw_found}))
    if not ok:
        sys.exit(1)


def cmd_alerts(a):
    alerts = []
    for m in consume_all(a.brokers, [f"{a.prefix}.alerts.maintenance"], idle=4.0):
        name, rec = decode(m.value())
        assert name == "maintenance_alert", name
        alerts.append({"key": (m.key() or b"").decode(errors="replace"), "kind": rec["kind"],
                       "state": rec["state"], "device_id": rec["device_id"], "message": rec["message"]})
    print(json.dumps({"count": len(alerts), "alerts": alerts[:20]}))


def cmd_dlq(a):
    out = []
    for m in consume_all(a.brokers, [f"{a.prefix}.dlq"], idle=4.0):
        h = {k: (v.decode(errors="replace") if v is not None else None) for k, v in (m.headers() or [])}
        out.append(h)
    print(json.dumps({"count": len(out), "records": out}))


def sign(secret, connector_id, topic, key, seq, ts, payload, corrupt=False):
    """Re-implementation of the connector signature (services/core/src/signing.rs):
    the Kafka headers of a signed record, i.e. one binary `fps` header of 57
    bytes: version 1, key id (8), seq (u64 BE), ts (i64 BE), HMAC-SHA256 over
    version, len-prefixed topic and key, seq, ts and len-prefixed payload.
    `corrupt` flips a bit of the MAC."""
    k = hmac.new(secret, b"fleetpulse-sign-v1|" + connector_id.encode(), hashlib.sha256).digest()
    key_id = hashlib.sha256(k).digest()[:8]
    mac = hmac.new(k, digestmod=hashlib.sha256)
    mac.update(b"\x01")
    for part in (topic.encode(), key):
        mac.update(len(part).to_bytes(8, "big"))
        mac.update(part)
    mac.update(seq.to_bytes(8, "big"))
    mac.update(ts.to_bytes(8, "big", signed=True))
    mac.update(len(payload).to_bytes(8, "big"))
    mac.update(payload)
    digest = bytearray(mac.digest())
    if corrupt:
        digest[-1] ^= 1
    header = b"\x01" + key_id + seq.to_bytes(8, "big") + ts.to_bytes(8, "big", signed=True) + bytes(digest)
    return [("fps", header)]


def cmd_inject(a):
    """Publish bad records: a bad signature, a correctly signed record of the wrong
    schema, a correctly signed record whose signing time is 10 minutes older
    than its Kafka timestamp, and a replay (a valid record published again,
    byte for byte). Prints the positions of those (`injected`: none belongs in
    the lake) and of the replayed original (`valid`: it belongs in the lake)."""
    status_topic = f"{a.prefix}.raw.device_status"
    hb_topic = f"{a.prefix}.raw.device_heartbeat"
    sample = {}
    for m in consume_all(a.brokers, [status_topic, hb_topic], idle=5.0, limit=60):
        sample.setdefault(m.topic(), m)
        if len(sample) == 2:
            break
    if len(sample) < 2:
        print(json.dumps({"error": "no sample records yet"}))
        sys.exit(1)
    secret = a.secret.encode()
    delivered = []

    def on_delivery(err, msg):
        if err is None:
            delivered.append(f"{msg.topic()}:{msg.partition()}:{msg.offset()}")

    p = Producer({**KAFKA_PROPS, "bootstrap.servers": a.brokers})
    ts = int(time.time() * 1000)
    base = 0  # sequence numbers 1..4: far below any connector's (start ms x 1000)
    # 1. A status record whose signature does not match (one hex digit changed).
    st = sample[status_topic]
    key = st.key()
    headers = sign(secret, a.connector, status_topic, key, base + 1, ts, st.value(), corrupt=True)
    p.produce(status_topic, key=key, value=st.value(), headers=headers, on_delivery=on_delivery)
    # 2. A heartbeat payload, correctly signed, on the device_status topic.
    hb = sample[hb_topic]
    headers = sign(secret, a.connector, status_topic, key, base + 2, ts, hb.value())
    p.produce(status_topic, key=key, value=hb.value(), headers=headers, on_delivery=on_delivery)
    # 3. A status record correctly signed 10 minutes before it is produced.
    old = ts - 10 * 60 * 1000
    headers = sign(secret, a.connector, status_topic, key, base + 3, old, st.value())
    p.produce(status_topic, key=key, value=st.value(), headers=headers, on_delivery=on_delivery)
    p.flush(30)
    # 4. A new valid status record (own event id), then the same bytes and
    #    headers again: the second copy is a replay of sequence number 4.
    _, rec = decode(st.value())
    rec["event_id"] = str(uuid.uuid4())
    fresh = encode("device_status", rec)
    headers = sign(secret, a.connector, status_topic, key, base + 4, ts, fresh)
    valid = []
    p.produce(status_topic, key=key, value=fresh, headers=headers,
              on_delivery=lambda err, msg: err is None and valid.append(
                  f"{msg.topic()}:{msg.partition()}:{msg.offset()}"))
    p.flush(30)
    p.produce(status_topic, key=key, value=fresh, headers=headers, on_delivery=on_delivery)
    p.flush(30)
    print(json.dumps({"injected": delivered, "valid": valid, "replayed_event_id": rec["event_id"]}))


def cmd_decode_files(a):
    """Decode every *.avro1 file (one single-object message each) in a folder."""
    out = {}
    for path in sorted(glob.glob(os.path.join(a.dir, "*.avro1"))):
        with open(path, "rb") as f:
            name, rec = decode(f.read())
        out[os.path.basename(path)] = {"type": name, "record": rec}
    print(json.dumps(out, default=str))


def blank(t):
    """A minimal valid value for an Avro type given as raw JSON (defaults
    where the schema has them, empty arrays, first enum symbols)."""
    prim = {"string": "x", "long": 0, "int": 0, "boolean": False, "double": 0.0,
            "float": 0.0, "bytes": b"", "null": None}
    if isinstance(t, list):
        return None if "null" in t else blank(t[0])
    if isinstance(t, str):
        return prim[t]
    kind = t["type"]
    if kind == "record":
        return {f["name"]: (f["default"] if "default" in f else blank(f["type"]))
                for f in t["fields"]}
    if kind == "enum":
        return t.get("default", t["symbols"][0])
    if kind == "array":
        return []
    if kind == "map":
        return {}
    if kind == "fixed":
        return b"\0" * t["size"]
    return blank(kind)


def raw_schema(name):
    with open(os.path.join(REPO, "schemas", f"{name}.avsc")) as f:
        return json.load(f)


def cmd_canary_inject(a):
    """Publish signed records whose personal fields carry canary values, and
    bad records (bad signature, wrong schema for the topic, not Avro) that
    carry them too. Every canary must stay out of the lake, the dead-letter
    topic and the logs."""
    c = json.loads(a.canaries)
    secret = a.secret.encode()
    now = int(time.time() * 1000)
    base = {"tenant_id": "tenant-canary", "connector_id": a.connector,
            "device_id": c["serial"], "observed_at": now}

    def record(name, **fields):
        rec = blank(raw_schema(name))
        rec.update(base)
        rec["event_id"] = str(uuid.uuid4())
        rec.update(fields)
        return encode(name, rec)

    status = record("device_status", sys_name=c["host"], sys_contact=c["user"],
                    sys_location=c["location"], ip_address=c["ip"], mac_address=c["mac"])
    heartbeat = record("device_heartbeat", ip_address=c["ip"])
    job = record("job_record", job_id=c["job"], user_name=c["user"])
    key = c["serial"].encode()
    p = Producer({"bootstrap.servers": a.brokers})
    seq = [int(time.time())]

    def send(topic, payload, corrupt=False):
        seq[0] += 1
        headers = sign(secret, a.connector, topic, key, seq[0], now, payload, corrupt=corrupt)
        p.produce(topic, key=key, value=payload, headers=headers)

    t = lambda name: f"{a.prefix}.raw.{name}"
    send(t("device_status"), status)
    send(t("device_heartbeat"), heartbeat)
    send(t("job_record"), job)
    send(t("device_status"), status, corrupt=True)           # bad signature
    send(t("device_status"), job)                            # wrong schema for the topic
    garbage = ("not avro: " + " ".join(c.values())).encode()
    send(t("device_status"), garbage)                        # not Avro at all
    p.flush(30)
    print(json.dumps({"valid": 3, "bad": 3}))


def encode_with(raw, rec):
    """Avro single-object encoding of `rec` with the schema `raw` (JSON)."""
    parsed = fastavro.parse_schema(raw)
    canonical = fastavro.schema.to_parsing_canonical_form(parsed)
    fp = bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, rec)
    return b"\xc3\x01" + fp + buf.getvalue()


def cmd_evolve_inject(a):
    """Publish usage_counters and connector_heartbeat records alternately
    encoded with their v1 schema (schemas/history) and the current one, all
    signed, on the topics' partition 0: what a fleet with old and new edges
    sends at once. Prints the event ids per version."""
    secret = a.secret.encode()
    now = int(time.time() * 1000)
    p = Producer({"bootstrap.servers": a.brokers})
    ids = {"v1": [], "current": []}
    seq = int(time.time())
    for i in range(a.n):
        for name in ("usage_counters", "connector_heartbeat"):
            version = "v1" if i % 2 == 0 else "current"
            raw = (json.load(open(os.path.join(REPO, "schemas", "history", name, "v1.avsc")))
                   if version == "v1" else raw_schema(name))
            rec = blank(raw)
            rec.update(event_id=str(uuid.uuid4()), tenant_id="tenant-evolve",
                       connector_id=a.connector, device_id=f"EVOLVE-{i % 3}", observed_at=now + i)
            if name == "usage_counters":
                items = [f for f in raw["fields"] if f["name"] == "markers"][0]["type"]["items"]
                marker = blank(items)
                marker["life_count"] = 1000 + i
                rec["markers"] = [marker]
            payload = encode_with(raw, rec)
            topic = f"{a.prefix}.raw.{name}"
            key = rec["device_id"].encode()
            seq += 1
            p.produce(topic, key=key, value=payload, partition=0,
                      headers=sign(secret, a.connector, topic, key, seq, now, payload))
            ids[version].append(rec["event_id"])
    p.flush(30)
    print(json.dumps({"v1": len(ids["v1"]), "current": len(ids["current"])}))


def cmd_evolve_check(a):
    """DuckDB over the v1 fixture files and the files the processor wrote,
    with union_by_name: both versions in one query; file counts per table."""
    import duckdb
    out = {}
    for table in ("usage_counters", "connector_heartbeat"):
        new = sorted(glob.glob(os.path.join(a.lake, f"table={table}", "**", "*.parquet"), recursive=True))
        old = sorted(glob.glob(os.path.join(a.fixtures, table, "*.parquet")))
        files = old + new
        src = f"read_parquet({files!r}, union_by_name = true, hive_partitioning = false)"
        cols = duckdb.sql(f"SELECT * FROM {src}").columns
        rows = duckdb.sql(f"SELECT count(*) FROM {src}").fetchall()[0][0]
        info = {"new_files": len(new), "old_files": len(old), "rows": rows, "columns": cols}
        if table == "connector_heartbeat":
            q = duckdb.sql(f"SELECT count(*) FILTER (WHERE devices IS NULL), count(*) FILTER (WHERE devices IS NOT NULL) "
                           f"FROM read_parquet({files!r}, union_by_name = true, hive_partitioning = false)").fetchall()[0]
            info["devices_null"], info["devices_set"] = q
        else:
            q = duckdb.sql(f"SELECT count(*) FROM (SELECT unnest(markers) AS m FROM read_parquet({files!r}, union_by_name = true, hive_partitioning = false)) "
                           f"WHERE m.life_count IS NOT NULL").fetchall()[0]
            info["markers"] = q[0]
            info["marker_fields"] = duckdb.sql(f"SELECT * FROM (SELECT unnest(markers) AS m FROM read_parquet({new!r})) LIMIT 1").columns
            sub = duckdb.sql(f"SELECT typeof(markers) FROM read_parquet({new!r}) LIMIT 1").fetchall()
            info["markers_type"] = sub[0][0] if sub else None
        out[table] = info
    print(json.dumps(out))


def cmd_grep_dlq(a):
    """Search every dead letter's key, header values and payload (raw bytes)
    for the canaries; with --open-key also open sealed payloads (positive
    control: the canaries must be inside)."""
    canaries = [x.encode() for x in json.loads(a.canaries).values()]
    hits, opened_hits, count = [], 0, 0
    opener = None
    if a.open_key:
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
        k = hmac.new(a.open_key.encode(), b"fleetpulse-dlq-seal-v1", hashlib.sha256).digest()
        opener = ChaCha20Poly1305(k)
    for m in consume_all(a.brokers, [f"{a.prefix}.dlq"], idle=4.0):
        count += 1
        parts = [("key", m.key() or b""), ("payload", m.value() or b"")]
        parts += [(f"header {k}", v or b"") for k, v in (m.headers() or [])]
        for where, data in parts:
            hits += [f"offset {m.offset()} {where}: {x.decode()}" for x in canaries if x in data]
        if opener is not None and (m.value() or b"")[:4] == b"FPS1":
            hdrs = dict(m.headers() or [])
            plain = opener.decrypt(m.value()[4:16], m.value()[16:], hdrs.get("fp-sealed", b""))
            opened_hits += sum(1 for x in canaries if x in plain)
    print(json.dumps({"count": count, "hits": hits, "opened_hits": opened_hits}))


def cmd_firehose(a):
    """Every envelope line Firehose delivered under s3://bucket/prefix (boto3),
    its payload decoded with fastavro; the event ids of valid records."""
    import base64
    import boto3
    s3 = boto3.client("s3", endpoint_url=a.endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    ids, objects, lines, bad = [], 0, 0, 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=a.bucket, Prefix=a.prefix):
        for o in page.get("Contents", []):
            objects += 1
            body = s3.get_object(Bucket=a.bucket, Key=o["Key"])["Body"].read()
            for line in body.split(b"\n"):
                if not line.strip():
                    continue
                lines += 1
                try:
                    env = json.loads(line)
                    _, rec = decode(base64.b64decode(env["payload"]))
                    ids.append(str(rec["event_id"]))
                except Exception:
                    bad += 1
    with open(a.ids_out, "w") as f:
        json.dump(ids, f)
    print(json.dumps({"objects": objects, "lines": lines, "count": len(ids),
                      "distinct": len(set(ids)), "undecodable": bad}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kafka-prop", action="append", default=[], metavar="KEY=VALUE",
                    help="extra librdkafka property for every Kafka client (repeatable)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("raw")
    r.add_argument("--brokers", required=True)
    r.add_argument("--prefix", required=True)
    r.add_argument("--ids-out", required=True)
    r.add_argument("--exclude", nargs="*")
    r.set_defaults(f=cmd_raw)
    l = sub.add_parser("lake")
    l.add_argument("--lake", required=True)
    l.add_argument("--ids")
    l.add_argument("--serials")
    l.set_defaults(f=cmd_lake)
    for name, f in (("alerts", cmd_alerts), ("dlq", cmd_dlq)):
        s = sub.add_parser(name)
        s.add_argument("--brokers", required=True)
        s.add_argument("--prefix", required=True)
        s.set_defaults(f=f)
    i = sub.add_parser("inject")
    i.add_argument("--brokers", required=True)
    i.add_argument("--prefix", required=True)
    i.add_argument("--secret", required=True)
    i.add_argument("--connector", required=True)
    i.set_defaults(f=cmd_inject)
    st = sub.add_parser("selftest")
    st.set_defaults(f=cmd_selftest)
    ci = sub.add_parser("canary-inject")
    ci.add_argument("--brokers", required=True)
    ci.add_argument("--prefix", required=True)
    ci.add_argument("--secret", required=True)
    ci.add_argument("--connector", required=True)
    ci.add_argument("--canaries", required=True)
    ci.set_defaults(f=cmd_canary_inject)
    ev = sub.add_parser("evolve-inject")
    ev.add_argument("--brokers", required=True)
    ev.add_argument("--prefix", required=True)
    ev.add_argument("--secret", required=True)
    ev.add_argument("--connector", required=True)
    ev.add_argument("--n", type=int, default=20)
    ev.set_defaults(f=cmd_evolve_inject)
    ec = sub.add_parser("evolve-check")
    ec.add_argument("--lake", required=True)
    ec.add_argument("--fixtures", required=True)
    ec.set_defaults(f=cmd_evolve_check)
    gd = sub.add_parser("grep-dlq")
    gd.add_argument("--brokers", required=True)
    gd.add_argument("--prefix", required=True)
    gd.add_argument("--canaries", required=True)
    gd.add_argument("--open-key")
    gd.set_defaults(f=cmd_grep_dlq)
    fh = sub.add_parser("firehose")
    fh.add_argument("--endpoint", required=True)
    fh.add_argument("--bucket", required=True)
    fh.add_argument("--prefix", required=True)
    fh.add_argument("--ids-out", required=True)
    fh.set_defaults(f=cmd_firehose)
    d = sub.add_parser("decode-files")
    d.add_argument("dir")
    d.set_defaults(f=cmd_decode_files)
    a = ap.parse_args()
    KAFKA_PROPS.update(kv.split("=", 1) for kv in a.kafka_prop)
    a.f(a)


if __name__ == "__main__":
    main()
