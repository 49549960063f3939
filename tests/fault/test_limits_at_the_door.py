"""Limits at the door, against a real server process (app.serve, as deployed) and real
clients on raw sockets: an oversized body or head, a client that trickles its request in or
never sends one, an idle keep-alive connection, more connections than the server admits.

Each refusal must be a clear JSON error that arrives without the server reading what it
refuses (a 413 answers a 50 MB Content-Length before one body byte is sent).
"""

from __future__ import annotations

import json
import select
import socket
import sys
import time
from collections.abc import Iterator

import pytest
from sqlite_faults.server import ServerProcess

pytestmark = pytest.mark.sqlite_only("the HTTP layer is the same on both backends")

MAX_BODY = 4096
MAX_HEAD = 4096
TIMEOUT_S = 1.0  # head, body and keep-alive bounds of the server under test
LIMIT_CONCURRENCY = 8
LATE_S = 3.0  # how late a timed refusal may be on a loaded machine
SERVE = [sys.executable, "-m", "app.serve"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("limits"), launcher=SERVE, env={
        "PASSWORD_HASH_TIME_COST": "1", "PASSWORD_HASH_MEMORY_KIB": "8",
        "HTTP_MAX_BODY_BYTES": str(MAX_BODY), "HTTP_MAX_HEADER_BYTES": str(MAX_HEAD),
        "HTTP_HEADER_TIMEOUT_S": str(TIMEOUT_S), "HTTP_BODY_TIMEOUT_S": str(TIMEOUT_S),
        "HTTP_KEEP_ALIVE_S": str(TIMEOUT_S),
        "HTTP_LIMIT_CONCURRENCY": str(LIMIT_CONCURRENCY),
    })
    server.start()
    yield server
    server.kill()


def connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10 + LATE_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body; (0, {}, b"") if the server closed
    the connection without answering."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return (0, {}, b"") if not data else (_status(data), {}, b"")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in
               (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return _status(data), headers, body


def _status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def error_code(body: bytes) -> str:
    return str(json.loads(body)["error"]["code"])


def head(method: str, path: str, *lines: str) -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: service\r\n" + "".join(f"{ln}\r\n" for ln in lines)
            + "\r\n").encode()


def test_a_declared_oversized_body_is_refused_before_it_is_sent(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(head("POST", "/users/", "Content-Type: application/json",
                          "Content-Length: 50000000"))  # the head only: no body byte follows
        status, headers, body = read_response(sock)
        assert status == 413, body
        assert error_code(body) == "request_too_large"
        assert headers["connection"] == "close"
        assert closed_by_server(sock)


def test_a_chunked_body_is_refused_once_it_passes_the_bound(server: ServerProcess) -> None:
    """Refused while the body is read: the rest of it is never read, so the connection cannot
    carry another request and must say so and close."""
    chunk = b"a" * 1024
    with connect(server) as sock:
        sock.sendall(head("POST", "/users/", "Content-Type: application/json",
                          "Transfer-Encoding: chunked"))
        for _ in range(MAX_BODY // len(chunk) + 2):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        status, headers, body = read_response(sock)
        assert status == 413, body
        assert error_code(body) == "request_too_large"
        assert headers["connection"] == "close"
        assert closed_by_server(sock)


def test_a_body_at_the_bound_is_read_and_judged_on_its_content(server: ServerProcess) -> None:
    body = json.dumps({"name": "x" * (MAX_BODY - 40), "password": "long enough"}).encode()
    body += b" " * (MAX_BODY - len(body))
    assert len(body) == MAX_BODY
    with connect(server) as sock:
        sock.sendall(head("POST", "/users/", "Content-Type: application/json",
                          f"Content-Length: {len(body)}") + body)
        status, _, answer = read_response(sock)
    assert status == 422, answer  # the name is too long: a validation error, not a 413
    assert error_code(answer) == "validation_error"


@pytest.mark.parametrize("shape", ["one long header", "many headers", "long url"])
def test_an_oversized_request_head_gets_431(server: ServerProcess, shape: str) -> None:
    if shape == "one long header":
        request = head("GET", "/healthz", "X-Big: " + "a" * (1 << 20))
    elif shape == "many headers":
        request = head("GET", "/healthz", *(f"X-{i}: a" for i in range(MAX_HEAD // 4)))
    else:
        request = head("GET", "/healthz?" + "a" * (MAX_HEAD + 1))
    with connect(server) as sock:
        sock.sendall(request)
        status, _, body = read_response(sock)
        assert status == 431, body
        assert error_code(body) == "headers_too_large"
        assert closed_by_server(sock)


def test_a_head_of_ordinary_size_is_served(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(head("GET", "/healthz", "User-Agent: " + "a" * (MAX_HEAD // 2)))
        status, _, body = read_response(sock)
    assert status == 200, body


@pytest.mark.parametrize("sent", [b"", b"GET /healthz HTTP/1.1\r\nHost: service\r\n"],
                         ids=["nothing", "half a head"])
def test_a_client_that_never_finishes_its_head_is_answered_408_and_closed(
    server: ServerProcess, sent: bytes
) -> None:
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(sent)
        status, _, body = read_response(sock)
        waited = time.monotonic() - started
        assert status == 408, body
        assert error_code(body) == "request_timeout"
        assert closed_by_server(sock)
    assert TIMEOUT_S * 0.9 <= waited <= TIMEOUT_S + LATE_S


def test_a_body_that_trickles_in_is_answered_408(server: ServerProcess) -> None:
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(head("POST", "/users/", "Content-Type: application/json",
                          "Content-Length: 100") + b"{")  # 1 byte of 100, then nothing
        status, _, body = read_response(sock)
        waited = time.monotonic() - started
    assert status == 408, body
    assert error_code(body) == "request_timeout"
    assert TIMEOUT_S * 0.9 <= waited <= TIMEOUT_S + LATE_S


def test_an_idle_keep_alive_connection_is_closed(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(head("GET", "/healthz"))
        status, _, _ = read_response(sock)
        assert status == 200
        started = time.monotonic()
        assert closed_by_server(sock)
        assert time.monotonic() - started <= TIMEOUT_S + LATE_S


def test_connections_past_the_concurrency_limit_get_503_at_once(server: ServerProcess) -> None:
    held = [connect(server) for _ in range(LIMIT_CONCURRENCY)]
    try:
        for sock in held:  # each is an open connection mid-head: counted by the server
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        with connect(server) as sock:
            sock.sendall(head("GET", "/healthz"))
            status, headers, body = read_response(sock)
            # Refused by the protocol itself (no task), as JSON, and the connection shed.
            assert status == 503
            assert json.loads(body)["error"]["code"] == "overloaded"
            assert headers["retry-after"]
            assert closed_by_server(sock)
    finally:
        for sock in held:
            sock.close()



# A patient client and a reused connection: the bounds above, met the way a client that
# knows them would try to get past them.

def test_a_body_that_trickles_in_steadily_is_bounded_as_a_whole(server: ServerProcess) -> None:
    """A byte every fifth of the timeout: each read is prompt, the whole body is not. The
    bound is the body's, not each read's, or such a client holds a task for as long as it
    likes (100 bytes at this pace would take 20 s)."""
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(head("POST", "/users/", "Content-Type: application/json",
                          "Content-Length: 100"))
        for _ in range(100):
            sock.sendall(b" ")
            # The pace: a fifth of the timeout, cut short when the server starts answering.
            # The answer's head and body may arrive apart, so it is read whole below.
            readable, _, _ = select.select([sock], [], [], TIMEOUT_S / 5)
            if readable:
                break
        waited = time.monotonic() - started
        status, headers, body = read_response(sock)
        assert status == 408, body
        assert error_code(body) == "request_timeout" and headers.get("connection") == "close"
        assert closed_by_server(sock)
    assert TIMEOUT_S * 0.9 <= waited <= TIMEOUT_S + LATE_S


@pytest.mark.parametrize("second", ["oversized-body", "oversized-head", "unfinished-head"])
def test_the_limits_hold_for_a_second_request_on_a_kept_alive_connection(
        server: ServerProcess, second: str) -> None:
    with connect(server) as sock:
        sock.sendall(head("GET", "/healthz"))
        status, headers, _ = read_response(sock)
        assert status == 200 and headers.get("connection") != "close"
        started = time.monotonic()
        if second == "oversized-body":
            sock.sendall(head("POST", "/users/", "Content-Type: application/json",
                              "Content-Length: 50000000"))
            expected, code = 413, "request_too_large"
        elif second == "oversized-head":
            sock.sendall(head("GET", "/healthz", "X-Big: " + "a" * (1 << 20)))
            expected, code = 431, "headers_too_large"
        else:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: service\r\n")
            expected, code = 408, "request_timeout"
        status, _, body = read_response(sock)
        assert status == expected, body
        assert error_code(body) == code
        assert closed_by_server(sock)
    assert time.monotonic() - started <= TIMEOUT_S + LATE_S


def test_each_request_on_a_connection_has_its_own_body_time(server: ServerProcess) -> None:
    """The body bound starts with each request, not with the connection: a second request
    whose body arrives promptly is read, however long the connection has been open."""
    body = json.dumps({"name": "kept-alive-" + str(time.monotonic_ns()),
                       "password": "long enough"}).encode()
    with connect(server) as sock:
        for _ in range(5):  # a connection older than the body bound by the end
            sock.sendall(head("GET", "/healthz"))
            assert read_response(sock)[0] == 200
            time.sleep(TIMEOUT_S / 4)  # the pace of this client: under the keep-alive bound
        sock.sendall(head("POST", "/users/", "Content-Type: application/json",
                          f"Content-Length: {len(body)}") + body[:10])
        time.sleep(TIMEOUT_S / 4)  # a prompt body, in two parts
        sock.sendall(body[10:])
        status, _, answer = read_response(sock)
    assert status == 201, answer
