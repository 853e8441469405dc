#!/usr/bin/env python3
"""Python baseline of `fleetpulse bench process`.

What a data engineer would wire up in Python to do the processor's work, on
the same pre-encoded input (no broker): per message, read the signature
header `fps`, verify HMAC-SHA256 over version|topic|key|seq|ts|payload with the
connector's derived key (Python `hmac`), check the signing-time window, pick
the schema by the single-object fingerprint, decode with fastavro's
`schemaless_reader` (after the 10-byte header), check the connector, and
anonymise as the schema annotations say (HMAC pseudonyms with a key id
column, drop, IPv4 /24, country, hour); then per `rows_per_file` rows of a
table, a pyarrow Table and a zstd Parquet file in memory.

Written to be fair to Python: schemas parsed and anonymisers compiled once,
logical types stripped from the reader schema (so fastavro does not build
datetime/UUID objects the lake does not want), `hmac.digest` one-shot C
calls, country lookups memoised like the Rust side.

Usage: process_baseline.py --input input.bin --config config.json
Prints one JSON line: events, accepted, rows, cpu_s, wall_s, parquet_bytes, stages.
"""

import argparse
import functools
import hashlib
import hmac
import io
import ipaddress
import json
import re
import struct
import sys
import time

try:
    import fastavro
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError as e:  # reported by the Rust side as python_ratio=nan
    sys.stderr.write(f"missing Python package: {e.name} (pip install -r tests/requirements.txt)\n")
    sys.exit(3)

MAGIC = b"\xc3\x01"
HOUR_MS = 3_600_000

# --- generalisations (same tables as fleetpulse_core::generalize) -------------

COUNTRY_NAMES = [
    ("germany", "DE"), ("deutschland", "DE"), ("france", "FR"),
    ("united states of america", "US"), ("united states", "US"), ("usa", "US"),
    ("united kingdom", "GB"), ("great britain", "GB"), ("england", "GB"),
    ("scotland", "GB"), ("wales", "GB"), ("netherlands", "NL"), ("nederland", "NL"),
    ("holland", "NL"), ("spain", "ES"), ("españa", "ES"), ("espana", "ES"),
    ("italy", "IT"), ("italia", "IT"), ("japan", "JP"), ("china", "CN"),
    ("switzerland", "CH"), ("schweiz", "CH"), ("suisse", "CH"), ("svizzera", "CH"),
    ("austria", "AT"), ("österreich", "AT"), ("osterreich", "AT"), ("belgium", "BE"),
    ("belgique", "BE"), ("belgië", "BE"), ("poland", "PL"), ("polska", "PL"),
    ("sweden", "SE"), ("sverige", "SE"), ("denmark", "DK"), ("danmark", "DK"),
    ("norway", "NO"), ("norge", "NO"), ("finland", "FI"), ("suomi", "FI"),
    ("ireland", "IE"), ("portugal", "PT"), ("canada", "CA"), ("australia", "AU"),
    ("india", "IN"), ("brazil", "BR"), ("brasil", "BR"), ("mexico", "MX"),
    ("south korea", "KR"), ("korea", "KR"), ("singapore", "SG"),
    ("czech republic", "CZ"), ("czechia", "CZ"),
]
COUNTRY_CODES = {
    "DE": "DE", "FR": "FR", "US": "US", "USA": "US", "GB": "GB", "UK": "GB", "NL": "NL",
    "ES": "ES", "IT": "IT", "JP": "JP", "CN": "CN", "CH": "CH", "AT": "AT", "BE": "BE",
    "PL": "PL", "SE": "SE", "DK": "DK", "NO": "NO", "FI": "FI", "IE": "IE", "PT": "PT",
    "CA": "CA", "AU": "AU", "IN": "IN", "BR": "BR", "MX": "MX", "KR": "KR", "SG": "SG",
    "CZ": "CZ",
}
WORD = re.compile(r"[^\W_]+")


@functools.lru_cache(maxsize=4096)
def country_code(text):
    words = WORD.findall(text)
    lower = [w.lower() for w in words]
    for start in range(len(lower)):
        for name, code in COUNTRY_NAMES:
            parts = name.split(" ")
            if lower[start:start + len(parts)] == parts:
                return code
    for w in words:
        if w in COUNTRY_CODES:
            return COUNTRY_CODES[w]
    return None


def ipv4_slash24(text):
    text = text.strip()
    if text.endswith("/24"):
        text = text[:-3]
    try:
        a, b, c, _ = ipaddress.IPv4Address(text).packed
    except ValueError:
        return None
    return f"{a}.{b}.{c}.0/24"


# --- schemas ------------------------------------------------------------------


def strip_logical(schema):
    """The schema without logicalType annotations (fastavro then returns plain ints/strings)."""
    if isinstance(schema, dict):
        return {k: strip_logical(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [strip_logical(s) for s in schema]
    return schema


def collect_names(schema, names, namespace=None):
    if isinstance(schema, dict):
        t = schema.get("type")
        ns = schema.get("namespace", namespace)
        if t in ("record", "enum", "fixed"):
            names[schema["name"]] = schema
            if ns:
                names[f"{ns}.{schema['name']}"] = schema
        if t == "record":
            for f in schema["fields"]:
                collect_names(f["type"], names, ns)
        elif t == "array":
            collect_names(schema["items"], names, ns)
        elif isinstance(t, (dict, list)):
            collect_names(t, names, ns)
    elif isinstance(schema, list):
        for s in schema:
            collect_names(s, names, namespace)


TS_UTC = pa.timestamp("ms", tz="UTC")


class Table:
    """One record type: its reader schema, anonymiser and Arrow schema."""

    def __init__(self, table, avsc, pseudonym_key, key_id):
        self.name = table
        self.names = {}
        collect_names(avsc, self.names)
        self.reader = fastavro.parse_schema(strip_logical(avsc))
        self.key = pseudonym_key
        self.key_id = key_id
        self.anonymise = self.compile_record(avsc)
        fields = self.arrow_fields(avsc)
        fields += [pa.field("_kafka_partition", pa.int32(), False), pa.field("_kafka_offset", pa.int64(), False)]
        self.arrow = pa.schema(fields)

    def resolve(self, t):
        if isinstance(t, str) and t in self.names:
            return self.names[t]
        if isinstance(t, dict) and isinstance(t.get("type"), (dict, list)):
            return t["type"]
        return t

    @staticmethod
    def nullable(t):
        if isinstance(t, list) and len(t) == 2 and "null" in t:
            return [x for x in t if x != "null"][0]
        return None

    # anonymisation compiled to closures
    def compile_record(self, rec):
        steps = []
        for f in rec["fields"]:
            name, action = f["name"], f.get("fleetpulse.privacy")
            if action == "drop":
                continue
            if action == "pseudonymize":
                purpose = (name + "|").encode()
                steps.append(("pseudo", name, purpose))
            elif action == "generalize":
                how = f["fleetpulse.generalize"]
                fn = {"ipv4_24": ipv4_slash24, "country": country_code,
                      "hour": lambda ms: ms - ms % HOUR_MS}[how]
                steps.append(("general", name, fn))
            else:
                sub = self.compile_value(f["type"])
                steps.append(("value", name, sub) if sub else ("copy", name, None))
        key, key_id = self.key, self.key_id

        def anonymise(d):
            out = {}
            for kind, name, arg in steps:
                v = d[name]
                if kind == "copy":
                    out[name] = v
                elif kind == "value":
                    out[name] = None if v is None else arg(v)
                elif kind == "pseudo":
                    if v is None:
                        out[name] = None
                        out[name + "_key_id"] = None
                    else:
                        out[name] = hmac.digest(key, arg + v.encode(), "sha256")[:16].hex()
                        out[name + "_key_id"] = key_id
                else:
                    out[name] = None if v is None else arg(v)
            return out

        return anonymise

    def compile_value(self, t):
        """A function for values that need work (records, arrays of records, floats), else None."""
        t = self.resolve(t)
        inner = self.nullable(t)
        if inner is not None:
            return self.compile_value(inner)
        if isinstance(t, dict):
            if t.get("type") == "record":
                return self.compile_record(t)
            if t.get("type") == "array":
                item = self.compile_value(t["items"])
                if item:
                    return lambda xs: [None if x is None else item(x) for x in xs]
        if t in ("float", "double"):
            return lambda x: x if x == x and x not in (float("inf"), float("-inf")) else None
        return None

    # Arrow schema of the output, as the Rust side derives it
    def arrow_type(self, t):
        t = self.resolve(t)
        inner = self.nullable(t)
        if inner is not None:
            return self.arrow_type(inner)[0], True
        if isinstance(t, dict):
            kind, logical = t.get("type"), t.get("logicalType")
            if kind == "record":
                return pa.struct(self.arrow_fields(t)), False
            if kind == "array":
                item, n = self.arrow_type(t["items"])
                return pa.list_(pa.field("item", item, n)), False
            if kind == "enum":
                return pa.string(), False
            if logical == "timestamp-millis":
                return TS_UTC, False
            return self.arrow_type(kind)
        return {
            "boolean": (pa.bool_(), False), "int": (pa.int32(), False), "long": (pa.int64(), False),
            "float": (pa.float32(), True), "double": (pa.float64(), True), "string": (pa.string(), False),
        }[t]

    def arrow_fields(self, rec):
        out = []
        for f in rec["fields"]:
            action = f.get("fleetpulse.privacy")
            if action == "drop":
                continue
            dt, n = self.arrow_type(f["type"])
            if action == "pseudonymize":
                out += [pa.field(f["name"], pa.string(), n), pa.field(f["name"] + "_key_id", pa.string(), n)]
            elif action == "generalize" and f["fleetpulse.generalize"] != "hour":
                out.append(pa.field(f["name"], pa.string(), True))
            else:
                out.append(pa.field(f["name"], dt, n))
        return out


# --- input ----------------------------------------------------------------------


def read_input(path):
    data = open(path, "rb").read()
    if data[:8] != b"FPBENCH1":
        raise SystemExit("not a fleetpulse bench input file")
    (count,) = struct.unpack_from(">I", data, 8)
    pos, out = 12, []
    for _ in range(count):
        (n,) = struct.unpack_from(">H", data, pos); pos += 2
        topic = data[pos:pos + n].decode(); pos += n
        (n,) = struct.unpack_from(">H", data, pos); pos += 2
        key = data[pos:pos + n]; pos += n
        (n,) = struct.unpack_from(">I", data, pos); pos += 4
        payload = data[pos:pos + n]; pos += n
        (ts,) = struct.unpack_from(">q", data, pos); pos += 8
        hcount = data[pos]; pos += 1
        headers = {}
        for _ in range(hcount):
            n = data[pos]; pos += 1
            name = data[pos:pos + n].decode(); pos += n
            (m,) = struct.unpack_from(">H", data, pos); pos += 2
            headers[name] = data[pos:pos + m]; pos += m
        out.append((topic, key, payload, ts, headers))
    return out


def lp(b):
    return struct.pack(">Q", len(b)) + b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--partition", type=int, default=0)
    args = ap.parse_args()
    cfg = json.load(open(args.config))
    messages = read_input(args.input)
    pkey = bytes.fromhex(cfg["pseudonym_key"])
    tables_by_fp = {}
    tables_by_topic = {}
    for fp, s in cfg["schemas"].items():
        t = Table(s["table"], s["avsc"], pkey, cfg["pseudonym_key_id"])
        tables_by_fp[bytes.fromhex(fp)] = t
        tables_by_topic[s["topic"]] = t
    keys = {}  # key id -> (connector, key)
    for conn, secret in cfg["connectors"].items():
        k = hmac.digest(bytes.fromhex(secret), b"fleetpulse-sign-v1|" + conn.encode(), "sha256")
        keys[hashlib.sha256(k).digest()[:8]] = (conn, k)
    window = cfg["signature_window_ms"]
    rows_per_file = cfg["rows_per_file"]
    level = cfg["zstd_level"]
    partition = args.partition

    stages = {"authenticate": 0.0, "decode": 0.0, "anonymise": 0.0, "arrow": 0.0, "parquet": 0.0}
    buffers = {}
    accepted = rows = parquet_bytes = 0
    rejected = {}
    clock = time.perf_counter

    def flush(table):
        nonlocal rows, parquet_bytes
        buf = buffers.pop(table.name, None)
        if not buf:
            return
        t0 = clock()
        arrow = pa.Table.from_pylist(buf, schema=table.arrow)
        t1 = clock()
        sink = io.BytesIO()
        pq.write_table(arrow, sink, compression="zstd", compression_level=level)
        t2 = clock()
        stages["arrow"] += t1 - t0
        stages["parquet"] += t2 - t1
        rows += arrow.num_rows
        parquet_bytes += sink.tell()

    def reject(cls):
        rejected[cls] = rejected.get(cls, 0) + 1

    now_ms = int(time.time() * 1000)
    cpu0, wall0 = time.process_time(), clock()
    for offset, (topic, key, payload, ts, h) in enumerate(messages):
        t0 = clock()
        table = tables_by_topic.get(topic)
        if table is None:
            reject("unknown_topic"); continue
        fps = h.get("fps")
        if fps is None or len(fps) != 57 or fps[0] != 1:
            reject("missing_signature"); continue
        key_id = fps[1:9]
        seq, sig_ts = struct.unpack(">Qq", fps[9:25])
        sig = fps[25:57]
        if key_id not in keys:
            reject("unknown_connector"); continue
        conn, skey = keys[key_id]
        msg = b"".join((b"\x01", lp(topic.encode()), lp(key), struct.pack(">Qq", seq, sig_ts), lp(payload)))
        if not hmac.compare_digest(hmac.digest(skey, msg, "sha256"), sig):
            reject("bad_signature"); continue
        reference = min(ts, now_ms) if ts > 0 else now_ms
        if abs(sig_ts - reference) > window:
            reject("stale_signature"); continue
        t1 = clock()
        if len(payload) < 10 or payload[:2] != MAGIC:
            reject("not_avro"); continue
        found = tables_by_fp.get(payload[2:10])
        if found is None:
            reject("unknown_schema"); continue
        if found is not table:
            reject("wrong_schema"); continue
        stream = io.BytesIO(payload[10:])
        try:
            record = fastavro.schemaless_reader(stream, table.reader)
        except Exception:
            reject("bad_datum"); continue
        if stream.read(1):
            reject("bad_datum"); continue
        if record.get("connector_id") != conn:
            reject("connector_mismatch"); continue
        observed = record.get("observed_at")
        if not isinstance(observed, int) or not (-62_135_596_800_000 <= observed < 253_402_300_800_000):
            reject("bad_datum"); continue
        t2 = clock()
        row = table.anonymise(record)
        row["_kafka_partition"] = partition
        row["_kafka_offset"] = offset
        buf = buffers.setdefault(table.name, [])
        buf.append(row)
        accepted += 1
        t3 = clock()
        stages["authenticate"] += t1 - t0
        stages["decode"] += t2 - t1
        stages["anonymise"] += t3 - t2
        if len(buf) >= rows_per_file:
            flush(table)
    for table in list(tables_by_topic.values()):
        flush(table)
    cpu, wall = time.process_time() - cpu0, clock() - wall0
    print(json.dumps({
        "events": len(messages), "accepted": accepted, "rejected": rejected, "rows": rows,
        "cpu_s": cpu, "wall_s": wall, "parquet_bytes": parquet_bytes, "stages": stages,
    }))


if __name__ == "__main__":
    main()
