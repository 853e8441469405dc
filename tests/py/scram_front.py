#!/usr/bin/env python3
"""A SASL/SCRAM front for a Kafka-protocol broker that has none we can use.

tansu 0.6.0 (the test broker) cannot serve as a SCRAM peer: with
`--authentication` it refuses `tansu user create` itself, and its storage
engines (`memory://`, `s3://`) keep no SCRAM credentials across the
restart needed to turn authentication on. So the SCRAM server side is this
proxy, and the Kafka side stays tansu:

    client (librdkafka) --SASL_PLAINTEXT--> scram_front --PLAINTEXT--> tansu

Per client connection, until the client has authenticated:
- ApiVersions (key 18) is forwarded to tansu and its answer patched to
  advertise SaslHandshake (17) v0-1 and SaslAuthenticate (36) v0-1, the
  versions librdkafka 2.12 uses (it never asks for the flexible v2);
- SaslHandshake (17, v0/v1) and SaslAuthenticate (36, v0/v1) are answered
  here; the SCRAM-SHA-256/512 server is the `scramp` library (PyPI), an
  implementation independent of librdkafka's client side. After a v0
  handshake the SCRAM messages come as raw length-prefixed tokens, as
  Kafka's legacy flow has it;
- any other request closes the connection (as a Kafka broker does).
After a successful exchange the connection becomes a transparent pipe to
tansu. A failed exchange is answered with SASL_AUTHENTICATION_FAILED (58)
and the error message Apache Kafka uses, then the connection is closed.

tansu must advertise this front's address (`--advertised-listener-url`),
so that every broker connection of the client goes through it.

    scram_front.py --listen 127.0.0.1:19093 --upstream 127.0.0.1:19094 \
        --user fleetpulse-edge:@/path/to/password [--user name:password ...]

One log line per authentication outcome on stderr (user, mechanism,
result), never a password.
"""
import argparse
import asyncio
import logging
import struct
import sys

from scramp import ScramException, ScramMechanism

MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
# Advertised (min, max) for the keys answered here.
OURS = {SASL_HANDSHAKE: (0, 1), SASL_AUTHENTICATE: (0, 1)}
UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE, SASL_AUTHENTICATION_FAILED = 33, 34, 58
MAX_FRAME = 64 * 1024 * 1024
FAILED_MESSAGE = "Authentication failed during authentication due to invalid credentials with SASL mechanism {}"

log = logging.getLogger("scram_front")


class Reader:
    """Big-endian Kafka primitive reader over one frame."""

    def __init__(self, data, pos=0):
        self.data, self.pos = data, pos

    def take(self, n):
        if self.pos + n > len(self.data):
            raise ValueError("frame too short")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def i16(self):
        return struct.unpack(">h", self.take(2))[0]

    def i32(self):
        return struct.unpack(">i", self.take(4))[0]

    def uvarint(self):
        shift = value = 0
        while True:
            b = self.take(1)[0]
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 35:
                raise ValueError("varint too long")

    def string(self):
        n = self.i16()
        return None if n < 0 else self.take(n).decode()

    def bytes_(self):
        n = self.i32()
        return None if n < 0 else self.take(n)

    def tagged_fields(self):
        """Skip a tagged-field section, returning its raw bytes."""
        start = self.pos
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())
        return self.data[start:self.pos]


def uvarint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def kstring(s):
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def kbytes(b):
    return struct.pack(">i", len(b)) + b


async def read_frame(reader):
    size = struct.unpack(">i", await reader.readexactly(4))[0]
    if size < 0 or size > MAX_FRAME:
        raise ValueError(f"frame size {size}")
    return await reader.readexactly(size)


def write_frame(writer, payload):
    writer.write(struct.pack(">i", len(payload)) + payload)


def patch_api_versions(version, body):
    """ApiVersions response body with keys 17/36 advertised at OURS."""
    r = Reader(body)
    error = r.i16()
    if error != 0:
        return body
    flexible = version >= 3
    n = r.uvarint() - 1 if flexible else r.i32()
    entries = []
    for _ in range(max(n, 0)):
        key, lo, hi = r.i16(), r.i16(), r.i16()
        tags = r.tagged_fields() if flexible else b""
        if key not in OURS:
            entries.append((key, lo, hi, tags))
    rest = body[r.pos:]
    for key, (lo, hi) in OURS.items():
        entries.append((key, lo, hi, b"\x00" if flexible else b""))
    entries.sort(key=lambda e: e[0])
    out = struct.pack(">h", 0)
    out += uvarint(len(entries) + 1) if flexible else struct.pack(">i", len(entries))
    for key, lo, hi, tags in entries:
        out += struct.pack(">hhh", key, lo, hi) + tags
    return out + rest


class Front:
    def __init__(self, upstream, users, iterations):
        self.upstream = upstream
        # mechanism -> user -> (salt, stored_key, server_key, iterations)
        self.creds = {}
        for mech in MECHANISMS:
            m = ScramMechanism(mech)
            self.creds[mech] = {
                u: m.make_auth_info(pw, iteration_count=iterations) for u, pw in users.items()
            }

    async def handle(self, creader, cwriter):
        peer = cwriter.get_extra_info("peername")
        host, port = self.upstream
        try:
            ureader, uwriter = await asyncio.open_connection(host, port)
        except OSError as e:
            log.warning("upstream %s:%s unreachable: %s", host, port, e)
            cwriter.close()
            return
        try:
            if await self.authenticate(peer, creader, cwriter, ureader, uwriter):
                await asyncio.gather(pipe(creader, uwriter), pipe(ureader, cwriter))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as e:
            log.debug("connection %s ended: %s", peer, e)
        finally:
            for w in (cwriter, uwriter):
                w.close()

    async def authenticate(self, peer, creader, cwriter, ureader, uwriter):
        """Run the pre-authentication part of a connection; True once authenticated."""
        mech = server = None
        legacy = False  # SaslHandshake v0: SCRAM tokens follow as raw frames
        while True:
            frame = await read_frame(creader)
            if legacy:
                ok, reply = self.step(peer, mech, server, frame)
                if reply is not None:
                    write_frame(cwriter, reply)
                    await cwriter.drain()
                if ok is not None:
                    return ok
                continue
            r = Reader(frame)
            api_key, api_version, corr = r.i16(), r.i16(), r.i32()
            r.string()  # client id
            if api_key == API_VERSIONS:
                write_frame(uwriter, frame)
                await uwriter.drain()
                resp = await read_frame(ureader)
                # ApiVersions responses always use header v0: correlation id only.
                write_frame(cwriter, resp[:4] + patch_api_versions(api_version, resp[4:]))
                await cwriter.drain()
            elif api_key == SASL_HANDSHAKE and api_version in (0, 1):
                wanted = r.string()
                enabled = [m for m in MECHANISMS]
                if wanted in MECHANISMS and mech is None:
                    mech, error = wanted, 0
                    server = ScramMechanism(mech).make_server(self.auth_fn(mech))
                    legacy = api_version == 0
                else:
                    error = UNSUPPORTED_SASL_MECHANISM if mech is None else ILLEGAL_SASL_STATE
                    log.info("client %s asked for SASL mechanism %r: refused", peer, wanted)
                body = struct.pack(">hi", error, len(enabled)) + b"".join(kstring(m) for m in enabled)
                write_frame(cwriter, struct.pack(">i", corr) + body)
                await cwriter.drain()
                if error:
                    return False
            elif api_key == SASL_AUTHENTICATE and api_version in (0, 1) and server is not None:
                token = r.bytes_() or b""
                ok, reply = self.step(peer, mech, server, token)
                if reply is None:
                    body = struct.pack(">h", SASL_AUTHENTICATION_FAILED) + kstring(FAILED_MESSAGE.format(mech)) + kbytes(b"")
                else:
                    body = struct.pack(">h", 0) + kstring(None) + kbytes(reply)
                if api_version >= 1:
                    body += struct.pack(">q", 0)  # session_lifetime_ms: no re-authentication
                write_frame(cwriter, struct.pack(">i", corr) + body)
                await cwriter.drain()
                if ok is not None:
                    return ok
            else:
                log.info("client %s sent api_key %d v%d before authenticating: closing", peer, api_key, api_version)
                return False

    def auth_fn(self, mech):
        def lookup(username):
            return self.creds[mech][username]  # KeyError: unknown user
        return lookup

    def step(self, peer, mech, server, token):
        """One SCRAM message. Returns (done, reply): done is None while the
        exchange goes on, True/False at its end; reply None means failure."""
        try:
            if server.stage is None:
                server.set_client_first(token.decode())
                return None, server.get_server_first().encode()
            server.set_client_final(token.decode())
            final = server.get_server_final().encode()
            log.info("client %s authenticated with %s as %r", peer, mech, user_of(server))
            return True, final
        except (ScramException, KeyError, UnicodeDecodeError, ValueError) as e:
            # scramp reports a failed user lookup as "auth_fn exception".
            unknown = isinstance(e, KeyError) or "auth_fn" in str(e)
            what = "unknown user" if unknown else "invalid credentials"
            log.info("client %s failed %s authentication (%s)", peer, mech, what)
            return False, None


def user_of(server):
    for part in (server.client_first_bare or "").split(","):
        if part.startswith("n="):
            return part[2:]
    return None


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


def hostport(s):
    host, _, port = s.rpartition(":")
    return host, int(port)


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", required=True, type=hostport)
    p.add_argument("--upstream", required=True, type=hostport)
    p.add_argument("--user", action="append", required=True,
                   help="name:password, or name:@file to read the password from a file")
    p.add_argument("--iterations", type=int, default=4096)
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO,
                        format="%(asctime)s scram_front %(message)s", stream=sys.stderr)
    users = {}
    for u in a.user:
        name, _, pw = u.partition(":")
        if pw.startswith("@"):  # password in a file, off the command line
            with open(pw[1:]) as f:
                pw = f.read().strip()
        users[name] = pw
    front = Front(a.upstream, users, a.iterations)
    srv = await asyncio.start_server(front.handle, *a.listen)
    log.info("listening on %s:%d, forwarding to %s:%d, users %s",
             *a.listen, *a.upstream, sorted(users))
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
