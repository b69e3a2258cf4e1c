#!/usr/bin/env python3
"""Load and robustness test of paraflex-serve (standard library only).

    test_http_server.py PATH/TO/paraflex-serve [POLICY]      (default policy: slo-aware)

Starts the server on a free port (--port 0, the port is read from its first stdout line), then:
  1. load: many threads on many connections (keep-alive ones, one connection per request, clients
     that drop their connection between requests) submit valid requests, cancel some, poll some,
     while others send bad JSON, wrong types, invalid UTF-8, oversized bodies and headers, truncated
     requests, slowloris trickles and requests cut off mid-body; every answer is checked;
  2. protocol details: pipelining, chunked bodies, Expect: 100-continue, HTTP/1.0, 404/405/409, HEAD
     without a body, Host required on HTTP/1.1 (and valid), out-of-range numbers (400), absolute-form targets,
     control characters and U+2028/U+2029 in strings, a NUL byte after the object and repeated keys
     (400), null optional fields (201), transfer codings other than chunked (501), Transfer-Encoding
     on HTTP/1.0 (400), a request target over 8 KiB (414), chunk trailers and extensions over it (431),
     lines ending in a bare LF (400, not 408 after the read timeout);
  3. waits until every accepted request has ended (GET), checks each end state and that /metrics
     adds up (submitted = completed + dropped, by reason, histogram count, idle gauges);
  4. the connection cap: more idle connections than --max-connections get 503;
  5. shutdown: with long requests running, SIGTERM; new connections are refused, open ones get 503
     for POST and /healthz and stay open for GET, the server exits 0 and its summary says every
     request ended; SIGTERM right after the "listening on" line drains too (exit 0);
  6. a second server: --retain forgets old outcomes but keeps their ids taken (409, and never
     generated again); a deeply nested wrong-typed field under a large --body-limit is a 400;
  7. --max-degree, --decision-gap-ms and static:K servers; nan or inf in a floating-point flag exits 2;
     a server whose stderr pipe is closed drains on SIGTERM; --host ::1 prints [::1]:PORT.
Prints the figures (requests, connections, seconds) at the end. Exit status 0 when all checks pass.
"""

import contextlib
import http.client
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

SERVER = None          # subprocess.Popen
PORT = None
READ_TIMEOUT_S = 1.5   # the server's --read-timeout
MAX_CONNECTIONS = 400
BODY_LIMIT = 64 * 1024

lock = threading.Lock()
accepted = {}          # request_id -> {"cancelled": bool}
failures = []
stats = {"http_requests": 0, "connections": 0, "bad_inputs": 0}


def fail(msg):
    with lock:
        failures.append(msg)


def bump(key, n=1):
    with lock:
        stats[key] += n


def check(cond, msg):
    if not cond:
        fail(msg)
    return cond


# ---- plumbing -------------------------------------------------------------------------------

def new_conn(timeout=20):
    bump("connections")
    return http.client.HTTPConnection("127.0.0.1", PORT, timeout=timeout)


def call(conn, method, path, body=None, headers=None):
    """One request on an http.client connection; returns (status, headers, parsed JSON or text)."""
    hdrs = dict(headers or {})
    data = None
    if body is not None:
        data = body if isinstance(body, (bytes, bytearray)) else json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=data, headers=hdrs)
    res = conn.getresponse()
    raw = res.read()
    bump("http_requests")
    ctype = res.getheader("Content-Type", "")
    if ctype.startswith("application/json"):
        try:
            payload = json.loads(raw.decode("utf-8"))
        except Exception as e:  # noqa: BLE001 - any decoding problem is a failed check
            fail(f"{method} {path}: body is not valid JSON ({e}): {raw[:200]!r}")
            payload = None
    else:
        payload = raw.decode("utf-8", "replace")
    return res.status, res, payload


def raw_socket(timeout=10):
    bump("connections")
    s = socket.create_connection(("127.0.0.1", PORT), timeout=timeout)
    leftover.pop(id(s), None)  # from a closed socket that had the same id
    return s


leftover = {}  # bytes received past the end of a response (pipelining), by socket


def read_response(sock):
    """Reads one HTTP response from a raw socket: (status, headers, body) or None on EOF/reset."""
    buf = leftover.pop(id(sock), b"")
    try:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        n = 0 if status == 100 else int(headers.get("content-length", "0"))
        while len(rest) < n:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            rest += chunk
        if rest[n:]:
            leftover[id(sock)] = rest[n:]
        return status, headers, rest[:n]
    except (ConnectionResetError, BrokenPipeError, socket.timeout, OSError):
        return None


def expect_error(res, status, what, field=None):
    """res from read_response: status as expected, JSON body {"error": ...} naming `field`."""
    bump("bad_inputs")
    if not check(res is not None, f"{what}: no answer (expected {status})"):
        return
    code, headers, body = res
    if not check(code == status, f"{what}: status {code}, expected {status}: {body[:200]!r}"):
        return
    try:
        j = json.loads(body.decode("utf-8"))
    except Exception as e:  # noqa: BLE001
        fail(f"{what}: error body is not JSON ({e}): {body[:200]!r}")
        return
    check(isinstance(j, dict) and isinstance(j.get("error"), str) and j["error"], f"{what}: no 'error' message: {j}")
    if field is not None:
        check(field in j.get("error", ""), f"{what}: error does not name '{field}': {j}")


def post_raw(body_bytes, extra_headers=b""):
    s = raw_socket()
    try:
        s.sendall(b"POST /v1/requests HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: "
                  + str(len(body_bytes)).encode() + b"\r\n" + extra_headers + b"\r\n" + body_bytes)
        return read_response(s)
    finally:
        s.close()


def valid_request(rng, rid=None, long=False):
    if long:
        r = {"model": "sd3-medium", "width": 1024, "height": 1024, "steps": rng.randint(30, 50)}
    else:
        model, side = rng.choice([("flux-dev", 256), ("flux-dev", 512), ("sd3-medium", 256), ("sd3-medium", 512), ("flux-dev", 128)])
        r = {"model": model, "width": side, "height": side, "steps": rng.randint(4, 20)}
    if rng.random() < 0.5:
        r["slo_s"] = rng.choice([None, 600.0, 3600])
    if rng.random() < 0.3:
        r["priority"] = rng.randint(-3, 3)
    if rng.random() < 0.3:
        r["class"] = rng.choice(["S", "M", "", "ü-class"])
    if rid is not None:
        r["request_id"] = rid
    return r


def submit(conn, req, cancelled=False):
    status, res, j = call(conn, "POST", "/v1/requests", req)
    if not check(status == 201, f"POST {req}: status {status}: {j}"):
        return None
    if not check(isinstance(j, dict) and j.get("state") == "waiting" and isinstance(j.get("request_id"), str),
                 f"POST answer {j}"):
        return None
    rid = j["request_id"]
    if "request_id" in req:
        check(rid == req["request_id"], f"POST kept id {req['request_id']!r} as {rid!r}")
    check(res.getheader("Location", "").startswith("/v1/requests/"), "POST answer has no Location")
    with lock:
        check(rid not in accepted, f"id {rid} accepted twice")
        accepted[rid] = {"cancelled": cancelled}
    return rid


def quote(rid):
    from urllib.parse import quote as q
    return q(rid, safe="")


def check_status_doc(j, rid, what):
    if not check(isinstance(j, dict), f"{what}: not an object: {j}"):
        return
    for key in ("request_id", "state", "reason", "latency_s", "degree", "migrations"):
        check(key in j, f"{what}: key '{key}' missing: {j}")
    check(j.get("request_id") == rid, f"{what}: id {j.get('request_id')!r} != {rid!r}")
    st = j.get("state")
    check(st in ("waiting", "running", "completed", "dropped"), f"{what}: state {st!r}")
    if st == "completed":
        check(isinstance(j.get("latency_s"), (int, float)) and j["latency_s"] > 0, f"{what}: completed without latency: {j}")
        check(isinstance(j.get("degree"), int) and j["degree"] >= 1, f"{what}: completed without degree: {j}")
        check(j.get("reason") is None, f"{what}: completed with a reason: {j}")
        check(j.get("steps_done") == j.get("steps_total"), f"{what}: completed after {j.get('steps_done')} of {j.get('steps_total')} steps")
    elif st == "dropped":
        check(isinstance(j.get("reason"), str) and j["reason"], f"{what}: dropped without reason: {j}")
        check(j.get("latency_s") is None, f"{what}: dropped with a latency: {j}")
    else:
        check(j.get("reason") is None and j.get("latency_s") is None, f"{what}: unfinished with reason/latency: {j}")


# ---- 1. load ------------------------------------------------------------------------------------

def keepalive_client(n, per_thread):
    """One keep-alive connection; sometimes it is dropped and reopened (a client that goes away)."""
    rng = random.Random(1000 + n)
    conn = new_conn()
    try:
        for i in range(per_thread):
            long = rng.random() < 0.15
            rid = f"ka{n}-{i}" if rng.random() < 0.5 else None
            req = valid_request(rng, rid, long)
            cancel = rng.random() < 0.2
            got = submit(conn, req, cancelled=cancel)
            if got is None:
                continue
            if cancel:
                if rng.random() < 0.5:
                    time.sleep(rng.random() * 0.02)
                status, _, j = call(conn, "DELETE", "/v1/requests/" + quote(got))
                if check(status == 200, f"DELETE {got}: {status} {j}"):
                    check_status_doc(j, got, f"DELETE {got}")
                    # Waiting requests end at once (DELETE waits for it); running ones after their task.
                    check(j["state"] in ("dropped", "running", "completed"), f"DELETE {got} left it {j['state']}")
                    if j["state"] == "dropped":
                        check(j["reason"] == "cancelled", f"DELETE {got}: reason {j['reason']}")
                    if j["state"] == "running":
                        check(j.get("cancel_requested") is True, f"DELETE {got}: running without cancel_requested")
            if rng.random() < 0.4:
                status, _, j = call(conn, "GET", "/v1/requests/" + quote(got))
                if check(status == 200, f"GET {got}: {status}"):
                    check_status_doc(j, got, f"GET {got}")
            if rng.random() < 0.1:  # vanish between requests, come back on a new connection
                conn.close()
                conn = new_conn()
    except Exception as e:  # noqa: BLE001
        fail(f"keep-alive client {n}: {type(e).__name__}: {e}")
    finally:
        conn.close()


def oneshot_client(n, count):
    """A new connection (Connection: close) per request."""
    rng = random.Random(5000 + n)
    try:
        for _ in range(count):
            conn = new_conn()
            submit(conn, valid_request(rng), cancelled=False)
            conn.close()
    except Exception as e:  # noqa: BLE001
        fail(f"one-shot client {n}: {type(e).__name__}: {e}")


BAD_BODIES = [
    (b'{"model": "flux-dev", "width": 512, "height": 512, "steps": 28', None, "truncated JSON"),
    (b"not json at all", None, "not JSON"),
    (b"", None, "empty body"),
    (b"[1, 2, 3]", None, "an array"),
    (b'{"model": "flux-dev\xff\xfe", "width": 512, "height": 512, "steps": 8}', None, "invalid UTF-8"),
    (b'{"model": "flux-dev", "width": "512", "height": 512, "steps": 8}', "width", "width as a string"),
    (b'{"model": "flux-dev", "width": 512.5, "height": 512, "steps": 8}', "width", "fractional width"),
    (b'{"model": "flux-dev", "width": 512, "height": -1, "steps": 8}', "height", "negative height"),
    (b'{"model": "flux-dev", "width": 512, "height": 512, "steps": 0}', "steps", "zero steps"),
    (b'{"model": "flux-dev", "width": 512, "height": 512}', "steps", "no steps"),
    (b'{"width": 512, "height": 512, "steps": 8}', "model", "no model"),
    (b'{"model": 7, "width": 512, "height": 512, "steps": 8}', "model", "model as a number"),
    (b'{"model": "nope", "width": 512, "height": 512, "steps": 8}', "flux-dev", "unknown model lists known ones"),
    (b'{"model": "flux-dev", "width": 512, "height": 512, "steps": 8, "slo_s": -3}', "slo_s", "negative slo"),
    (b'{"model": "flux-dev", "width": 512, "height": 512, "steps": 8, "slo_s": "soon"}', "slo_s", "slo as a string"),
    (b'{"model": "flux-dev", "width": 512, "height": 512, "steps": 8, "priority": 1.5}', "priority", "fractional priority"),
    (b'{"model": "flux-dev", "width": 512, "height": 512, "steps": 8, "class": 3}', "class", "class as a number"),
    (b'{"model": "flux-dev", "width": 512, "height": 512, "steps": 8, "request_id": ""}', "request_id", "empty id"),
    (b'{"model": "flux-dev", "width": 512, "height": 512, "steps": 8, "request_id": 12}', "request_id", "id as a number"),
    (b'{"model": "flux-dev", "width": 512, "height": 512, "steps": 8, "frames": 0}', "frames", "zero frames"),
    (b'{"model": "flux-dev", "width": 99999999999, "height": 512, "steps": 8}', "width", "width out of range"),
    (b'{"model": "hunyuanvideo", "width": 16384, "height": 16384, "frames": 129, "steps": 8}', "max-tokens", "too many tokens"),
]


def bad_input_client(n):
    rng = random.Random(9000 + n)
    try:
        for body, field, what in rng.sample(BAD_BODIES, 8):
            expect_error(post_raw(body), 400, what, field)
        # Oversized body (Content-Length over the limit): 413 from the headers alone.
        expect_error(post_raw(b"{" + b" " * (BODY_LIMIT + 10) + b"}"), 413, "oversized body")
        # Oversized headers: 431.
        s = raw_socket()
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        expect_error(read_response(s), 431, "oversized header")
        s.close()
        # Garbage instead of HTTP: 400.
        s = raw_socket()
        s.sendall(b"\x16\x03\x01\x02\x00 hello?\r\n\r\n")
        expect_error(read_response(s), 400, "not HTTP")
        s.close()
    except Exception as e:  # noqa: BLE001
        fail(f"bad-input client {n}: {type(e).__name__}: {e}")


def abusive_client(n):
    """Clients that stall, trickle or vanish: the server must answer 408 or just close, and go on."""
    try:
        kind = n % 4
        if kind == 0:  # slowloris: a byte of header every 0.3 s, never finishing in time
            s = raw_socket(timeout=READ_TIMEOUT_S + 8)
            start = time.time()
            payload = b"POST /v1/requests HTTP/1.1\r\nHost: t\r\nContent-Length: 50\r\nX-Slow: " + b"z" * 200
            closed_at = None
            for byte in payload:
                try:
                    s.sendall(bytes([byte]))
                except OSError:
                    closed_at = time.time()
                    break
                time.sleep(0.3)
                if time.time() - start > READ_TIMEOUT_S + 3:
                    break
            res = read_response(s)
            elapsed = (closed_at or time.time()) - start
            check(elapsed < READ_TIMEOUT_S + 4, f"slowloris kept its connection {elapsed:.1f} s")
            if res is not None:
                expect_error(res, 408, "slowloris")
            s.close()
        elif kind == 1:  # a body that never completes, connection left open: 408 after the read timeout
            s = raw_socket(timeout=READ_TIMEOUT_S + 8)
            s.sendall(b"POST /v1/requests HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{\"model\"")
            expect_error(read_response(s), 408, "stalled body")
            s.close()
        elif kind == 2:  # vanishes mid-body (reset): nothing is accepted under its id
            s = raw_socket()
            body = json.dumps({"model": "flux-dev", "width": 256, "height": 256, "steps": 4, "request_id": f"gone-{n}"}).encode()
            s.sendall(b"POST /v1/requests HTTP/1.1\r\nHost: t\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:20])
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()  # RST
            time.sleep(0.2)
            conn = new_conn()
            status, _, _ = call(conn, "GET", f"/v1/requests/gone-{n}")
            check(status == 404, f"a request cut off mid-body was accepted (GET gave {status})")
            conn.close()
        else:  # sends a whole request, then goes away without reading the answer: it is accepted
            s = raw_socket()
            rid = f"left-{n}"
            body = json.dumps({"model": "flux-dev", "width": 256, "height": 256, "steps": 4, "request_id": rid}).encode()
            s.sendall(b"POST /v1/requests HTTP/1.1\r\nHost: t\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            s.close()
            conn = new_conn()
            status = 404
            for _ in range(100):
                status, _, j = call(conn, "GET", "/v1/requests/" + rid)
                if status == 200:
                    break
                time.sleep(0.02)
            if check(status == 200, f"a complete request whose client left was not accepted ({status})"):
                with lock:
                    accepted[rid] = {"cancelled": False}
            conn.close()
        # Truncated request, then a clean close (EOF mid-header): no answer, no harm.
        s = raw_socket()
        s.sendall(b"GET /v1/requests/x HTTP/1.1\r\nHo")
        s.shutdown(socket.SHUT_WR)
        check(read_response(s) is None, "a truncated request got an answer")
        s.close()
        # A body shorter than its Content-Length, then a half-close: the request is known, so it is
        # answered 400 (the client can still read).
        s = raw_socket()
        s.sendall(b"POST /v1/requests HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\":")
        s.shutdown(socket.SHUT_WR)
        short = read_response(s)
        check(short is not None and short[0] == 400 and b"before the end of the request's body" in short[2],
              f"a short body and a half-close: 400 (got {short and short[:1]})")
        s.close()
    except Exception as e:  # noqa: BLE001
        fail(f"abusive client {n}: {type(e).__name__}: {e}")


# ---- 2. protocol details ------------------------------------------------------------------------

def protocol_checks():
    rng = random.Random(7)
    conn = new_conn()
    status, res, j = call(conn, "GET", "/healthz")
    check(status == 200 and j == {"status": "ok"}, f"/healthz: {status} {j}")
    status, res, j = call(conn, "GET", "/nope")
    check(status == 404 and "error" in j, f"unknown path: {status} {j}")
    status, res, j = call(conn, "GET", "/v1/requests/no-such-id")
    check(status == 404 and "error" in j, f"unknown id GET: {status} {j}")
    status, res, j = call(conn, "DELETE", "/v1/requests/no-such-id")
    check(status == 404 and "error" in j, f"unknown id DELETE: {status} {j}")
    status, res, j = call(conn, "GET", "/v1/requests/%FF%FE")
    check(status == 404 and "error" in j, f"invalid UTF-8 id: {status} {j}")
    status, res, j = call(conn, "GET", "/v1/requests/%zz")
    check(status == 400 and "error" in j, f"bad percent-encoding: {status} {j}")
    status, res, j = call(conn, "GET", "/v1/requests/abc#frag")  # a fragment is never part of a target
    check(status == 400 and "fragment" in j.get("error", ""), f"a '#' in the target: {status} {j}")
    for method, path, allow in (("PUT", "/v1/requests", "POST"), ("GET", "/v1/requests", "POST"), ("POST", "/v1/requests/x", "GET, HEAD, DELETE"),
                                ("DELETE", "/healthz", "GET, HEAD"), ("POST", "/metrics", "GET, HEAD")):
        status, res, j = call(conn, method, path, body={} if method in ("PUT", "POST") else None)
        check(status == 405 and "error" in j and res.getheader("Allow") == allow, f"{method} {path}: {status} {j} Allow={res.getheader('Allow')}")
    for path in ("/healthz", "/v1/requests", "/nowhere"):  # a method nobody defined: 501, not 405 or 404
        status, res, j = call(conn, "FROB", path)
        check(status == 501 and "FROB" in j.get("error", "") and "not implemented" in j["error"], f"FROB {path}: {status} {j}")
    # Ids with characters that need escaping, and a duplicate.
    rid = "odd id/ü?#%"
    got = submit(conn, valid_request(rng, rid))
    if got:
        status, res, j = call(conn, "GET", "/v1/requests/" + quote(rid))
        check(status == 200 and j.get("request_id") == rid, f"escaped id GET: {status} {j}")
    status, res, j = call(conn, "POST", "/v1/requests", valid_request(rng, rid))
    check(status == 409 and rid in j.get("error", ""), f"duplicate id: {status} {j}")
    # Absolute-form targets (RFC 9112 3.2.2: a server must accept them) route by their path.
    for target, want in (("http://t/healthz?probe=1", {"status": "ok"}), ("HTTP://t:80/v1/requests/" + quote(rid), None)):
        status, res, j = call(conn, "GET", target)
        check(status == 200 and (j == want if want else (j or {}).get("request_id") == rid), f"absolute-form GET {target}: {status} {j}")
    # Control characters (C0, DEL, C1) and U+2028/U+2029 in a string field: 400 naming the field.
    for ch in ("\u0001", "\u007f", "\u0080", "\u0085", "\u009f", "\u2028", "\u2029"):
        for field in ("request_id", "class"):
            status, res, j = call(conn, "POST", "/v1/requests", {**valid_request(rng, f"cc-{ord(ch):x}"), field: "a" + ch + "b"})
            check(status == 400 and f"field '{field}' must not contain control characters" in (j or {}).get("error", ""),
                  f"{field} with U+{ord(ch):04X}: {status} {j}, expected 400")
    submit(conn, valid_request(rng, "nbsp\u00a0\u2027\u00a0"))  # the neighbours of the refused ones are fine
    conn.close()

    # A transfer coding other than chunked: 501 naming it, before any body is read, and the
    # connection closed (the body's end is unknown). Chunked twice, an empty Transfer-Encoding, and
    # Transfer-Encoding on HTTP/1.0 (faulty framing, RFC 9112 6.1): 400, closed. Nothing is accepted.
    def te_request(n, head, framing):
        body = json.dumps(valid_request(rng, f"te-{n}")).encode()
        length = b"Content-Length: %d\r\n" % len(body) if framing == "length" else b""
        payload = {"chunked": b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n", "length": body, "none": b""}[framing]
        return b"POST /v1/requests " + head + b"\r\n" + length + b"\r\n" + payload
    te_cases = [  # (version and headers, how the body is sent, status, what the error names)
        (b"HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked", "chunked", 501, "transfer coding 'gzip'"),
        (b"HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: x-zip;q=1 ,chunked", "chunked", 501, "transfer coding 'x-zip'"),
        (b"HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked", "chunked", 501, "transfer coding 'gzip'"),
        (b"HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity", "length", 501, "transfer coding 'identity'"),
        # With Expect: the 501 comes first, no 100 Continue.
        (b"HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\nExpect: 100-continue", "none", 501, "transfer coding 'gzip'"),
        (b"HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked", "chunked", 400, "Transfer-Encoding"),
        (b"HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: ", "length", 400, "Transfer-Encoding"),
        (b"HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked", "chunked", 400, "Transfer-Encoding"),
    ]
    for n, (head, framing, want, named) in enumerate(te_cases):
        s = raw_socket()
        s.sendall(te_request(n, head, framing))
        expect_error(read_response(s), want, f"POST {head!r}", named)
        check(read_response(s) is None, f"POST {head!r}: the connection stayed open")
        s.close()
    conn = new_conn()
    for n in range(len(te_cases)):
        status, _, j = call(conn, "GET", f"/v1/requests/te-{n}")
        check(status == 404, f"a request with a bad Transfer-Encoding was accepted: GET te-{n} {status} {j}")
    conn.close()

    # A request target over the 8 KiB header limit: 414 about the target (headers alone: 431, above).
    s = raw_socket()
    s.sendall(b"GET /v1/requests/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    expect_error(read_response(s), 414, "9000-byte request target", "request target")
    s.close()

    # Pipelining: two requests in one write, two answers in order.
    s = raw_socket()
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /v1/requests/no-such HTTP/1.1\r\nHost: t\r\n\r\n")
    a, b = read_response(s), read_response(s)
    check(a is not None and a[0] == 200 and b is not None and b[0] == 404, f"pipelining: {a and a[0]} {b and b[0]}")
    s.close()

    # Chunked body: accepted; an oversized chunked body: 413.
    body = json.dumps(valid_request(rng, "chunked-1")).encode()
    s = raw_socket()
    s.sendall(b"POST /v1/requests HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
              + b"%x\r\n" % 10 + body[:10] + b"\r\n" + b"%x\r\n" % (len(body) - 10) + body[10:] + b"\r\n0\r\n\r\n")
    r = read_response(s)
    if check(r is not None and r[0] == 201, f"chunked POST: {r}"):
        with lock:
            accepted["chunked-1"] = {"cancelled": False}
    s.close()
    s = raw_socket()
    big = b"x" * 40000
    s.sendall(b"POST /v1/requests HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + (b"%x\r\n" % len(big) + big + b"\r\n") * 2 + b"0\r\n\r\n")
    expect_error(read_response(s), 413, "oversized chunked body")
    s.close()

    # Chunk extensions and trailer fields are held, together, to the 8 KiB header limit: 431 at once,
    # then closed (a trailer field of 64 KiB or more made Beast throw out of the read: no answer).
    def chunked_post(rid, ext, trailer):
        body = json.dumps(valid_request(rng, rid)).encode()
        return (b"POST /v1/requests HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"%x" % len(body) + ext + b"\r\n" + body + b"\r\n0\r\n" + trailer + b"\r\n")
    for n, (ext, trailer, what) in enumerate(((b"", b"X-T: " + b"a" * 70000 + b"\r\n", "a 70000-byte trailer value"),
                                              (b"", b"X" * 70000 + b": v\r\n", "a 70000-byte trailer name"),
                                              (b"", b"X-T: " + b"a" * 20000 + b"\r\n", "a 20000-byte trailer"),
                                              (b";e=" + b"a" * 100000, b"", "a 100000-byte chunk extension"))):
        s = raw_socket()
        s.sendall(chunked_post(f"trailer-{n}", ext, trailer))
        expect_error(read_response(s), 431, what, "trailer")
        check(read_response(s) is None, f"{what}: the connection stayed open")
        s.close()
    s = raw_socket()
    s.sendall(chunked_post("trailer-ok", b";e=1", b"X-T: small\r\n"))
    r = read_response(s)
    if check(r is not None and r[0] == 201, f"chunked POST with a small extension and trailer: {r}"):
        with lock:
            accepted["trailer-ok"] = {"cancelled": False}
    s.close()

    # A line ending in a bare LF instead of CRLF: 400 at once. Beast's parser ends lines at CRLF only,
    # so these waited for one and got 408 after the read timeout (paraflex-serve now looks at what
    # the parser has not taken). The Content-Length body's own LF is data, and is accepted.
    body = json.dumps(valid_request(rng, "bare-lf")).encode()
    chunked_head = b"POST /v1/requests HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    for what, raw in (("chunk lines ending in a bare LF", chunked_head + b"%x\n" % len(body) + body + b"\n0\n\n"),
                      ("a chunk trailer ending in a bare LF", chunked_head + b"%x\r\n" % len(body) + body + b"\r\n0\r\nX-T: 1\n\r\n"),
                      ("a header block ending in a bare LF", b"GET /healthz HTTP/1.1\r\nHost: t\r\n\n")):
        s = raw_socket()
        s.sendall(raw)
        expect_error(read_response(s), 400, what, "bare LF")
        s.close()
    body = json.dumps(valid_request(rng, "lf-in-body")).encode() + b"\n"
    s = raw_socket()
    s.sendall(b"POST /v1/requests HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    r = read_response(s)
    if check(r is not None and r[0] == 201, f"POST whose body ends in LF: {r}"):
        with lock:
            accepted["lf-in-body"] = {"cancelled": False}
    s.close()

    # Expect: 100-continue, accepted; and refused by size before the body is sent.
    body = json.dumps(valid_request(rng, "continue-1")).encode()
    s = raw_socket()
    s.sendall(b"POST /v1/requests HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    r = read_response(s)
    if check(r is not None and r[0] == 100, f"Expect: 100-continue: {r}"):
        s.sendall(body)
        r = read_response(s)
        if check(r is not None and r[0] == 201, f"POST after 100 Continue: {r}"):
            with lock:
                accepted["continue-1"] = {"cancelled": False}
    s.close()
    s = raw_socket()
    s.sendall(b"POST /v1/requests HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 10000000\r\n\r\n")
    expect_error(read_response(s), 413, "Expect with an oversized Content-Length")
    s.close()

    # HTTP/1.0 without keep-alive: one answer, then the server closes.
    s = raw_socket()
    s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
    r = read_response(s)
    check(r is not None and r[0] == 200, f"HTTP/1.0: {r}")
    check(read_response(s) is None, "HTTP/1.0 connection left open")
    s.close()

    # No 100 Continue to an HTTP/1.0 client (RFC 9110 10.1.1): the first answer is the final one.
    s = raw_socket()
    s.sendall(b"POST /v1/requests HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}")
    r = read_response(s)
    check(r is not None and r[0] == 400, f"HTTP/1.0 with Expect: {r and r[0]}, expected 400 without a 100 first")
    s.close()

    # HTTP/1.1 without Host: 400 (RFC 9112 3.2).
    s = raw_socket()
    s.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
    expect_error(read_response(s), 400, "HTTP/1.1 without Host")
    s.close()

    # HEAD: GET's headers, no body. A HEAD then a GET in one write: right after the HEAD's headers
    # comes the GET's status line.
    for path in ("/healthz", "/metrics", "/v1/requests/no-such-id", "/nope"):
        s = raw_socket()
        s.sendall(b"HEAD " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        data = b""
        try:
            while data.count(b"\r\n\r\n") < 2:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        head, _, rest = data.partition(b"\r\n\r\n")
        want = b"200" if path in ("/healthz", "/metrics") else b"404"
        check(head.startswith(b"HTTP/1.1 " + want) and b"content-length" in head.lower() and rest.startswith(b"HTTP/1.1 200"),
              f"HEAD {path}: a body after the headers, or a wrong status: {data[:300]!r}")
        s.close()

    # A Host header with an invalid value: 400 (RFC 9112 3.2), as for none or two.
    for host, want in ((b"a b", 400), (b"[::1", 400), (b"x:99999999", 400), (b"a/b?c", 400), (b"\xff\xfe", 400),
                       (b"x:65536", 400), (b"[::1]:8080", 200), (b"example.com:80", 200), (b"10.0.0.1", 200), (b"h%41st", 200), (b"", 200)):
        s = raw_socket()
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
        res = read_response(s)
        s.close()
        if want == 400:
            expect_error(res, 400, f"Host: {host!r}")
        else:
            check(res is not None and res[0] == 200, f"Host: {host!r}: {res and res[0]}, expected 200")

    # A number out of double's range, even in an ignored field: invalid JSON (400), connection kept.
    conn = new_conn()
    for body in (b'{"model":"flux-dev","width":256,"height":256,"steps":2,"slo_s":1e400}',
                 b'{"model":"flux-dev","width":256,"height":256,"steps":2,"note":-1e999}'):
        status, res, j = call(conn, "POST", "/v1/requests", body)
        check(status == 400 and "invalid JSON" in (j or {}).get("error", "") and res.getheader("Connection") != "close",
              f"number overflow: {status} {j} Connection={res.getheader('Connection')}")
    # A NUL byte is refused: nlohmann's parser takes it for the end of the input and ignored what follows.
    status, res, j = call(conn, "POST", "/v1/requests", json.dumps(valid_request(rng, "nul-1")).encode() + b'\x00{"steps": -1} x')
    check(status == 400 and "NUL byte" in (j or {}).get("error", ""), f"a NUL after the object: {status} {j}")
    # A key repeated within an object (at any depth): 400 naming it, never the last value silently.
    base = b'"model":"flux-dev","width":256,"height":256'
    for body, key in ((b'{' + base + b',"steps":-1,"steps":4}', "steps"),
                      (b'{"request_id":"dup-a","request_id":"dup-b",' + base + b',"steps":2}', "request_id"),
                      (b'{' + base + b',"steps":2,"note":[{"k":1,"k":1}]}', "k")):
        status, res, j = call(conn, "POST", "/v1/requests", body)
        err = (j or {}).get("error", "")
        check(status == 400 and f'"{key}" appears more than once' in err, f"repeated key {key!r}: {status} {j}")
    for rid in ("dup-a", "dup-b"):
        status, res, j = call(conn, "GET", "/v1/requests/" + rid)
        check(status == 404, f"a body with a repeated key was accepted: GET {rid} {status} {j}")
    submit(conn, {**valid_request(rng), "x": {"k": 1}, "y": {"k": 2}})  # the same key in two objects
    # Ids "." and "..": their Location escapes the dots (a client would resolve the segment away,
    # RFC 3986 5.2.4), and GET at that Location finds them.
    for rid, location in ((".", "/v1/requests/%2E"), ("..", "/v1/requests/%2E%2E")):
        status, res, j = call(conn, "POST", "/v1/requests", valid_request(rng, rid))
        if check(status == 201 and res.getheader("Location") == location, f"id {rid!r}: {status} {j} Location={res.getheader('Location')}"):
            with lock:
                accepted[rid] = {"cancelled": False}
            status, res, j = call(conn, "GET", location)
            check(status == 200 and (j or {}).get("request_id") == rid, f"GET {location}: {status} {j}")
    # null in an optional field is its default, as an empty CSV cell is (README).
    status, res, j = call(conn, "POST", "/v1/requests", {"model": "flux-dev", "width": 256, "height": 256, "steps": 2, "frames": None,
                                                         "priority": None, "class": None, "slo_s": None, "request_id": None})
    if check(status == 201, f"null optional fields: {status} {j}"):
        with lock:
            accepted[j["request_id"]] = {"cancelled": False}
    # A wrong-typed array or object is named by its type, never dumped (dump() recurses per level).
    status, res, j = call(conn, "POST", "/v1/requests", b'{"model":"flux-dev","height":8,"steps":1,"width":[[[[1]]]]}')
    check(status == 400 and (j or {}).get("error") == "field 'width': expected an integer, got array", f"nested width: {status} {j}")
    conn.close()


# ---- 3. end states and metrics ------------------------------------------------------------------

def wait_all_ended(stall_s, cap_s=120):
    # Waits while requests keep ending: a slow build (sanitizers, a loaded machine) takes longer but
    # still progresses, whereas a request the scheduler lost never ends. Fails after stall_s seconds
    # in which nothing ended, or cap_s in all.
    ids = sorted(accepted)
    final = {}
    pending = list(ids)
    start = last_progress = time.time()
    conns = [new_conn() for _ in range(8)]

    def poll(part, conn):
        for rid in part:
            status, _, j = call(conn, "GET", "/v1/requests/" + quote(rid))
            if status != 200:
                fail(f"GET {rid} after it was accepted: {status}")
                continue
            check_status_doc(j, rid, f"GET {rid}")
            if j["state"] in ("completed", "dropped"):
                with lock:
                    final[rid] = j

    while pending and time.time() - last_progress < stall_s and time.time() - start < cap_s:
        before = len(pending)
        parts = [pending[i::len(conns)] for i in range(len(conns))]
        threads = [threading.Thread(target=poll, args=(p, c)) for p, c in zip(parts, conns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        pending = [r for r in pending if r not in final]
        if len(pending) < before:
            last_progress = time.time()
        if pending:
            time.sleep(0.2)
    for c in conns:
        c.close()
    check(not pending, f"{len(pending)} accepted request(s) never ended (none ended in the last {stall_s} s, "
                       f"{time.time() - start:.0f} s in all), e.g. {pending[:5]}")
    for rid, j in final.items():
        if not accepted[rid]["cancelled"]:
            check(j["state"] == "completed" or j["reason"] != "cancelled", f"{rid} was never cancelled but ended {j['reason']}")
    return final


def parse_metrics(text):
    values = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$', line)
        if not check(m is not None, f"/metrics: malformed line {line!r}"):
            continue
        values[m.group(1)] = float(m.group(2))
    return values


def metrics_checks(final):
    # A request's status is published a moment before its outcome is counted and the gauges are
    # refreshed at the end of the scheduler's turn: take a scrape where everything has settled.
    conn = new_conn()
    for _ in range(50):
        status, res, text = call(conn, "GET", "/metrics")
        check(status == 200 and res.getheader("Content-Type", "").startswith("text/plain"), f"/metrics: {status}")
        m = parse_metrics(text)
        ended = m.get("paraflex_requests_completed_total", 0) + sum(v for k, v in m.items() if k.startswith("paraflex_requests_dropped_total{"))
        idle = all(m.get(g) == 0 for g in ("paraflex_requests_waiting", "paraflex_requests_running", "paraflex_devices_busy"))
        if ended == m.get("paraflex_requests_submitted_total") and idle:
            break
        time.sleep(0.05)
    conn.close()
    submitted = m.get("paraflex_requests_submitted_total", -1)
    completed = m.get("paraflex_requests_completed_total", -1)
    dropped = {k: v for k, v in m.items() if k.startswith("paraflex_requests_dropped_total{")}
    check(submitted == len(accepted), f"metrics: submitted {submitted} != {len(accepted)} accepted")
    check(submitted == completed + sum(dropped.values()), f"metrics: submitted {submitted} != completed {completed} + dropped {sum(dropped.values())}")
    n_completed = sum(1 for j in final.values() if j["state"] == "completed")
    check(completed == n_completed, f"metrics: completed {completed} != {n_completed} seen by GET")
    by_reason = {}
    for j in final.values():
        if j["state"] == "dropped":
            by_reason[j["reason"]] = by_reason.get(j["reason"], 0) + 1
    for reason, n in by_reason.items():
        check(dropped.get(f'paraflex_requests_dropped_total{{reason="{reason}"}}') == n, f"metrics: dropped {reason} != {n}: {dropped}")
    check(m.get("paraflex_request_latency_seconds_count") == completed, "metrics: histogram count != completed")
    check(m.get('paraflex_request_latency_seconds_bucket{le="+Inf"}') == completed, "metrics: +Inf bucket != completed")
    buckets = [v for k, v in m.items() if k.startswith("paraflex_request_latency_seconds_bucket")]
    check(buckets == sorted(buckets), "metrics: buckets are not cumulative")
    for gauge in ("paraflex_requests_waiting", "paraflex_requests_running", "paraflex_devices_busy"):
        check(m.get(gauge) == 0, f"metrics: {gauge} = {m.get(gauge)} when everything has ended")
    check(m.get('paraflex_http_responses_total{code="413"}', 0) > 0, "metrics: no 413 counted")
    return m


# ---- 4. connection cap --------------------------------------------------------------------------

def connection_cap_check():
    socks = []
    refused = 0
    try:
        for _ in range(MAX_CONNECTIONS + 20):
            socks.append(raw_socket(timeout=5))
        time.sleep(0.3)
        for s in socks[MAX_CONNECTIONS - 5:]:
            s.setblocking(False)
            try:
                data = s.recv(65536)
                if data.startswith(b"HTTP/1.1 503"):
                    refused += 1
            except (BlockingIOError, OSError):
                pass
        check(refused >= 15, f"connection cap: only {refused} of 20 connections over the cap got 503")
    finally:
        for s in socks:
            s.close()
    # Once they are gone the server serves again.
    time.sleep(0.3)
    conn = new_conn()
    status, _, _ = call(conn, "GET", "/healthz")
    check(status == 200, f"after the connection cap: /healthz {status}")
    conn.close()
    return refused


# ---- 5. shutdown --------------------------------------------------------------------------------

def shutdown_check():
    rng = random.Random(11)
    conn = new_conn()
    # Long requests: some start, the rest wait; SIGTERM drops the waiting ones, the running ones finish.
    ids = []
    for i in range(24):
        rid = submit(conn, {"model": "cogvideox", "width": 1360, "height": 768, "frames": 81, "steps": 12, "request_id": f"drain-{i}"})
        if rid:
            ids.append(rid)
    for _ in range(500):  # until the first one runs (up to 5 s on a loaded machine)
        status, _, j = call(conn, "GET", "/v1/requests/" + ids[0])
        if j and j["state"] != "waiting":
            break
        time.sleep(0.01)
    spare = [new_conn() for _ in range(3)]
    for c in spare:
        call(c, "GET", "/healthz")  # opened before the signal
    SERVER.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    try:  # the running requests take ~0.5 s more: the server is still draining
        status, _, j = call(spare[0], "POST", "/v1/requests", valid_request(rng))
        check(status == 503, f"POST while draining: {status} {j}")
        status, _, j = call(spare[2], "POST", "/v1/requests", {})  # not even valid: still 503, not 400
        check(status == 503, f"an invalid POST while draining: {status} {j}")
        status, res, j = call(spare[1], "GET", "/healthz")
        check(status == 503 and j == {"status": "draining"}, f"/healthz while draining: {status} {j}")
        # Keep-alive stays on: a client follows its running request to the end (a closed connection
        # would make http.client reconnect, which the closed listener refuses).
        for _ in range(2):
            status, res, j = call(spare[1], "GET", "/v1/requests/" + ids[0])
            check(status == 200 and res.getheader("Connection") != "close", f"GET while draining: {status} {j} Connection={res.getheader('Connection')}")
    except (OSError, http.client.HTTPException) as e:
        fail(f"an open connection was not answered while draining: {type(e).__name__}: {e}")
    try:
        s = socket.create_connection(("127.0.0.1", PORT), timeout=2)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        r = read_response(s)
        check(r is None, f"a new connection was served while draining: {r and r[0]}")
        s.close()
    except OSError:
        pass  # refused: as it should be
    for c in spare + [conn]:
        c.close()
    try:
        rc = SERVER.wait(timeout=30)
    except subprocess.TimeoutExpired:
        fail("the server did not exit within 30 s of SIGTERM")
        SERVER.kill()
        rc = SERVER.wait()
    check(rc == 0, f"exit status {rc} after SIGTERM")
    err = SERVER.stderr.read().decode("utf-8", "replace")
    m = re.search(r"stopped: (\d+) submitted, (\d+) completed, (\d+) dropped(?: \((.*)\))?", err)
    if check(m is not None, f"no summary on stderr:\n{err[-2000:]}"):
        n, c, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
        check(n == len(accepted), f"summary: {n} submitted, the client saw {len(accepted)} accepted")
        check(n == c + d, f"summary: {n} submitted != {c} completed + {d} dropped")
        reasons = dict(part.split(": ") for part in (m.group(4) or "").split(", ") if part)
        check(int(reasons.get("shutdown", 0)) > 0, f"no request dropped for the shutdown: {reasons}")
    return err


# ---- 6. retention -------------------------------------------------------------------------------

def sigterm_exit_status(srv):
    """SIGTERM to a server, then its exit status ("a hang" when it is still there 10 s later)."""
    srv.send_signal(signal.SIGTERM)
    try:
        return srv.wait(timeout=10)
    except subprocess.TimeoutExpired:
        srv.kill()
        return "a hang"


def early_sigterm_check(exe):
    """SIGTERM as soon as the "listening on" line is read: a drain and exit 0, not death by the signal."""
    for _ in range(3):
        srv = subprocess.Popen([exe, "--port", "0", "--gpus", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        srv.stdout.readline()
        rc = sigterm_exit_status(srv)
        check(rc == 0, f"SIGTERM right after the listening line: exit status {rc}, expected 0")


@contextlib.contextmanager
def side_server(exe, args, what):
    """A second server, started with args for one check: yields its process once it listens (PORT
    points at it meanwhile), or None when it did not start; SIGTERM and PORT restored after."""
    global PORT
    srv = subprocess.Popen([exe, "--port", "0", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    saved = PORT
    try:
        m = re.match(r"listening on 127\.0\.0\.1:(\d+)$", srv.stdout.readline().decode().strip())
        if check(m is not None, f"{what}: the server did not start"):
            PORT = int(m.group(1))
        yield srv if m else None
    finally:
        PORT = saved
        srv.send_signal(signal.SIGTERM)
        try:
            srv.wait(timeout=30)
        except subprocess.TimeoutExpired:
            srv.kill()


def retain_check(exe):
    """A server started with --retain 3 answers GET for the last three ended requests only; a
    forgotten id stays taken. Its large --body-limit lets a deeply nested body in."""
    with side_server(exe, ["--gpus", "2", "--policy", "static:1", "--time-scale", "1000", "--retain", "3", "--body-limit", "1000000"],
                     "retain") as srv:
        if srv is None:
            return
        conn = new_conn()
        ids = ["r1"] + [f"keep-{i}" for i in range(1, 6)]  # "r1": the first id the server would generate
        for rid in ids:  # one at a time, each waited for: they end in this order
            status, _, j = call(conn, "POST", "/v1/requests", {"model": "flux-dev", "width": 256, "height": 256, "steps": 2,
                                                               "request_id": rid})
            check(status == 201, f"retain: POST {rid}: {status} {j}")
            for _ in range(1000):
                status, _, j = call(conn, "GET", "/v1/requests/" + rid)
                if j and j.get("state") in ("completed", "dropped"):
                    break
                time.sleep(0.01)
        for i, rid in enumerate(ids):
            status, _, j = call(conn, "GET", "/v1/requests/" + rid)
            want = 404 if i < 3 else 200
            check(status == want, f"retain 3: GET {rid} (ended {6 - i} from last): {status}, expected {want}")
        # Forgotten, but ids are unique over the server's life: 409, and not generated again.
        status, _, j = call(conn, "POST", "/v1/requests", {"model": "flux-dev", "width": 256, "height": 256, "steps": 2, "request_id": "r1"})
        check(status == 409, f"retain: POST of forgotten id r1: {status} {j}, expected 409")
        status, _, j = call(conn, "POST", "/v1/requests", {"model": "flux-dev", "width": 256, "height": 256, "steps": 2})
        check(status == 201 and j.get("request_id") not in ids, f"retain: generated id reuses a forgotten one: {status} {j}")
        # 200 000 levels in a wrong-typed field (400 KB): a 400 naming the type, and the server lives.
        depth = 200000
        try:
            status, _, j = call(conn, "POST", "/v1/requests", b'{"model":"flux-dev","height":8,"steps":1,"width":' + b"[" * depth + b"]" * depth + b"}")
            check(status == 400 and j == {"error": "field 'width': expected an integer, got array"}, f"deep width: {status} {j}")
            status, _, j = call(conn, "GET", "/healthz")
            check(status == 200, f"after the deep body: /healthz {status} {j}")
        except (OSError, http.client.HTTPException) as e:
            fail(f"deep width: the server did not answer ({type(e).__name__}: {e}); exit status {srv.poll()}")
        conn.close()


def widest_degree(exe, extra):
    """The widest degree GET reports while one lone 1024 px request runs on 4 devices under
    slo-aware, which widens it onto spare devices whatever its slack; None when the server did not
    start. Its deadline is over ten times what degree 1 needs: at --time-scale 10 a server slowed by a
    sanitizer or a loaded machine lags its profile clock by ten times the real delay, and a tight
    deadline then drops the request (TSan in CI did, for all three servers)."""
    with side_server(exe, ["--gpus", "4", "--policy", "slo-aware", "--time-scale", "10", *extra], f"max-degree {extra}") as srv:
        if srv is None:
            return None
        conn = new_conn()
        status, _, j = call(conn, "POST", "/v1/requests", {"model": "flux-dev", "width": 1024, "height": 1024, "steps": 16, "slo_s": 160,
                                                           "request_id": "wide"})
        check(status == 201, f"max-degree {extra}: POST: {status} {j}")
        widest, state, j = 0, None, None
        give_up = time.monotonic() + 60  # 16 steps of about 0.1-0.3 s real each, however slow the build
        while time.monotonic() < give_up:
            status, _, j = call(conn, "GET", "/v1/requests/wide")
            state = (j or {}).get("state")
            widest = max(widest, (j or {}).get("degree") or 0)
            if state in ("completed", "dropped"):
                break
            time.sleep(0.005)
        check(state == "completed", f"max-degree {extra}: the request ends completed ({state}: {j})")
        conn.close()
        return widest


def max_degree_check(exe):
    """--max-degree K: no request runs on more than K devices; a static policy above K, or K out of
    range, exits 2 naming the flag."""
    uncapped, capped = widest_degree(exe, []), widest_degree(exe, ["--max-degree", "2"])
    check(uncapped is not None and uncapped > 2, f"without --max-degree a lone request widens past 2 devices (widest {uncapped})")
    check(capped is not None and 1 <= capped <= 2, f"--max-degree 2: widest degree {capped}")
    for args in (["--max-degree", "0"], ["--max-degree", "300"], ["--max-degree", "2", "--policy", "static:4"]):
        p = subprocess.run([exe, "--port", "0", *args], capture_output=True, timeout=30)
        err = p.stderr.decode("utf-8", "replace")
        check(p.returncode == 2 and "--max-degree" in err, f"{' '.join(args)}: exit 2 naming --max-degree ({p.returncode}: {err.strip()})")


def decision_gap_check(exe):
    """--decision-gap-ms G: requests are still served (decided at most once per G ms); a negative
    gap exits 2 naming the flag."""
    widest = widest_degree(exe, ["--decision-gap-ms", "20"])
    check(widest is not None and widest >= 1, f"--decision-gap-ms 20: a lone request is served (widest degree {widest})")
    p = subprocess.run([exe, "--port", "0", "--decision-gap-ms", "-1"], capture_output=True, timeout=30)
    err = p.stderr.decode("utf-8", "replace")
    check(p.returncode == 2 and "--decision-gap-ms" in err, f"--decision-gap-ms -1: exit 2 naming it ({p.returncode}: {err.strip()})")


def float_flag_check(exe):
    """A floating-point flag given nan or inf exits 2 naming it (nan passes every comparison: it
    aborted --time-scale and switched the read timeout, the drain and the token cap off)."""
    for flag in ("--time-scale", "--read-timeout", "--drain-timeout", "--max-tokens", "--decision-gap-ms"):
        for value in ("nan", "-NaN", "inf"):
            try:
                p = subprocess.run([exe, "--port", "0", "--gpus", "1", flag, value], capture_output=True, timeout=5)
            except subprocess.TimeoutExpired:
                fail(f"{flag} {value}: the server started instead of exiting 2")
                continue
            err = p.stderr.decode("utf-8", "replace")
            check(p.returncode == 2 and f"paraflex-serve: error: {flag}" in err, f"{flag} {value}: exit 2 naming it ({p.returncode}: {err.strip()})")


def empty_value_check(exe):
    """An empty --profile or --gpu exits 2 naming the flag, as in paraflex-sim (formats.md section 6): it
    is an unset shell variable, not a request for the default (the server served on the bundled profile)."""
    for flag in ("--profile", "--gpu"):
        try:
            p = subprocess.run([exe, "--port", "0", "--gpus", "1", flag, ""], capture_output=True, timeout=5)
        except subprocess.TimeoutExpired:
            fail(f"{flag} '': the server started instead of exiting 2")
            continue
        err = p.stderr.decode("utf-8", "replace")
        check(p.returncode == 2 and f"paraflex-serve: error: {flag}" in err and "empty value" in err,
              f"{flag} '': exit 2 naming it ({p.returncode}: {err.strip()})")


def dead_stderr_check(exe):
    """SIGTERM with stderr a pipe nobody reads any more (a log shipper that died): the server drains
    and exits 0, not killed by SIGPIPE at its first line of log."""
    srv = subprocess.Popen([exe, "--port", "0", "--gpus", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    srv.stdout.readline()
    srv.stderr.close()
    time.sleep(0.2)
    rc = sigterm_exit_status(srv)
    check(rc == 0, f"SIGTERM with a closed stderr pipe: exit status {rc}, expected 0")


def ipv6_listening_line_check(exe):
    """--host ::1: the first line puts the address in brackets, [::1]:PORT (skipped without IPv6)."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return
    srv = subprocess.Popen([exe, "--port", "0", "--gpus", "1", "--host", "::1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = srv.stdout.readline().decode().strip()
        check(re.match(r"listening on \[::1\]:\d+$", line) is not None, f"--host ::1: first line {line!r}, expected 'listening on [::1]:PORT'")
    finally:
        srv.send_signal(signal.SIGTERM)
        try:
            srv.wait(timeout=30)
        except subprocess.TimeoutExpired:
            srv.kill()


def fixed_degree_check(exe):
    """Under static:K a request whose model does not allow K (its heads) is refused at submit with a
    400 naming the degrees it allows, instead of being accepted and never run; a model that allows K
    is served."""
    with tempfile.TemporaryDirectory() as d:
        profile = os.path.join(d, "heads.csv")
        with open(profile, "w") as f:
            f.write("model,gpu,height,width,frames,degree,step_s,heads\n"
                    "m24,g,512,512,1,1,0.02,24\nm24,g,512,512,1,2,0.012,24\n"
                    "m10,g,512,512,1,1,0.02,10\nm10,g,512,512,1,2,0.012,10\n")
        with side_server(exe, ["--gpus", "8", "--profile", profile, "--policy", "static:5", "--time-scale", "10"], "static:5") as srv:
            if srv is None:
                return
            conn = new_conn()
            status, _, j = call(conn, "POST", "/v1/requests", {"model": "m24", "width": 512, "height": 512, "steps": 2})
            want = ("field 'model': this server runs every request on 5 devices (--policy static:5), which model 'm24' does not allow "
                    "(its heads must be divisible by the degree, and it must not exceed --max-degree); it allows 1..4, 6, 8 of 1..8")
            check(status == 400 and j == {"error": want}, f"static:5, a 24-head model: {status} {j}, expected 400 {want!r}")
            status, _, j = call(conn, "POST", "/v1/requests", {"model": "m10", "width": 512, "height": 512, "steps": 2, "request_id": "ten"})
            check(status == 201, f"static:5, a 10-head model: POST {status} {j}, expected 201")
            for _ in range(2000):
                status, _, j = call(conn, "GET", "/v1/requests/ten")
                if (j or {}).get("state") in ("completed", "dropped"):
                    break
                time.sleep(0.005)
            check((j or {}).get("state") == "completed" and j.get("degree") == 5, f"static:5, a 10-head model: ends {j}, expected completed on 5 devices")
            conn.close()


def main():
    global SERVER, PORT
    if len(sys.argv) not in (2, 3):
        print(__doc__)
        return 2
    exe = sys.argv[1]
    policy = sys.argv[2] if len(sys.argv) == 3 else "slo-aware"
    t0 = time.time()
    SERVER = subprocess.Popen([exe, "--port", "0", "--gpus", "4", "--policy", policy, "--time-scale", "200", "--channels", "4",
                               "--read-timeout", str(READ_TIMEOUT_S), "--max-connections", str(MAX_CONNECTIONS), "--threads", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = SERVER.stdout.readline().decode()
    m = re.match(r"listening on 127\.0\.0\.1:(\d+)$", line.strip())
    if not m:
        print(f"FAIL: first line {line!r}; stderr: {SERVER.stderr.read().decode()}")
        SERVER.kill()
        return 1
    PORT = int(m.group(1))
    try:
        protocol_checks()
        threads = [threading.Thread(target=keepalive_client, args=(i, 6)) for i in range(120)]
        threads += [threading.Thread(target=oneshot_client, args=(i, 2)) for i in range(100)]
        threads += [threading.Thread(target=bad_input_client, args=(i,)) for i in range(20)]
        threads += [threading.Thread(target=abusive_client, args=(i,)) for i in range(16)]
        t_load = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        load_s = time.time() - t_load
        clients = len(threads)
        final = wait_all_ended(30)
        m = metrics_checks(final)
        refused = connection_cap_check()
        n_load = len(accepted)
        shutdown_check()
        early_sigterm_check(exe)
        retain_check(exe)
        max_degree_check(exe)
        decision_gap_check(exe)
        fixed_degree_check(exe)
        float_flag_check(exe)
        empty_value_check(exe)
        dead_stderr_check(exe)
        ipv6_listening_line_check(exe)
    except Exception as e:  # noqa: BLE001
        fail(f"test driver: {type(e).__name__}: {e}")
        if SERVER.poll() is None:
            SERVER.kill()
        raise
    finally:
        if SERVER.poll() is None:
            SERVER.kill()
    completed = sum(1 for j in final.values() if j["state"] == "completed")
    cancelled = sum(1 for j in final.values() if j["state"] == "dropped" and j["reason"] == "cancelled")
    reasons = {}
    for j in final.values():
        if j["state"] == "dropped":
            reasons[j["reason"]] = reasons.get(j["reason"], 0) + 1
    print(f"{n_load} requests accepted in the load phase from {clients} concurrent clients "
          f"(dropped: {reasons}) "
          f"({stats['connections']} connections, {stats['http_requests']} HTTP requests via http.client, "
          f"{stats['bad_inputs']} bad inputs checked) in {load_s:.1f} s; {completed} completed, {cancelled} cancelled; "
          f"{refused} connections over the cap refused; total {time.time() - t0:.1f} s")
    if failures:
        print(f"FAIL: {len(failures)} check(s) failed:")
        for f in failures[:40]:
            print("  " + f)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
