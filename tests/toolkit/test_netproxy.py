"""The fault proxy: each network fault does what its model says, on real sockets.

Margins are wide (a loaded CI machine): added delays are asserted as lower bounds, upper
bounds only where a fault must not be (a blocked forward would take the client's timeout).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from sqlite_faults.netproxy import INJECTED_BODY, NetworkFaults

pytestmark = pytest.mark.timeout(60)


class Upstream:
    """A small HTTP server that counts the requests it saw; GET /big answers `size` bytes."""

    def __init__(self) -> None:
        self.seen = 0
        self.arrived = threading.Event()  # set by each request as it reaches the server
        self.delay_s = 0.0  # how long each answer waits
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                upstream.seen += 1
                upstream.arrived.set()
                time.sleep(upstream.delay_s)  # the service's own time
                big = self.path.startswith("/big")
                body = b"x" * int(self.path.rpartition("/")[2]) if big else b"ok"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


@pytest.fixture
def proxy(upstream: Upstream) -> Iterator[NetworkFaults]:
    with NetworkFaults(("127.0.0.1", upstream.port), seed=7) as faults:
        yield faults


def timed_get(proxy: NetworkFaults, path: str = "/",
              timeout: float = 10.0) -> tuple[float, httpx.Response]:
    started = time.monotonic()
    with httpx.Client(base_url=proxy.base_url, timeout=timeout) as client:
        response = client.get(path)
    return time.monotonic() - started, response


def test_bytes_are_forwarded_intact(proxy: NetworkFaults) -> None:
    _, response = timed_get(proxy, "/big/1048576")
    assert response.status_code == 200 and response.content == b"x" * 1048576


def test_latency_is_added_to_each_direction(proxy: NetworkFaults) -> None:
    proxy.set("latency", ms=150)
    seconds, response = timed_get(proxy)
    assert response.status_code == 200
    assert seconds >= 0.3  # 150 ms on the request, 150 ms on the answer
    proxy.clear()
    assert timed_get(proxy)[0] < 0.3


def test_a_lost_packet_waits_one_retransmission_timeout(proxy: NetworkFaults) -> None:
    proxy.set("packet-loss", probability=1.0, rto_ms=300)
    seconds, response = timed_get(proxy)
    assert response.status_code == 200, "a lost packet under TCP is late, never missing"
    assert seconds >= 0.3


def test_bandwidth_is_capped_per_connection(proxy: NetworkFaults) -> None:
    proxy.set("bandwidth", kib_per_s=40)
    seconds, response = timed_get(proxy, "/big/40960")
    assert len(response.content) == 40960
    assert seconds >= 0.8


def test_a_blackhole_answers_nothing_and_the_path_works_after_it(
        proxy: NetworkFaults, upstream: Upstream) -> None:
    proxy.set("blackhole")
    with pytest.raises(httpx.ReadTimeout):
        timed_get(proxy, timeout=0.5)
    assert upstream.seen == 0
    proxy.clear()
    assert timed_get(proxy)[1].status_code == 200


def test_an_injected_500_never_reaches_the_service(
        proxy: NetworkFaults, upstream: Upstream) -> None:
    proxy.set("http-500", probability=1.0)
    _, response = timed_get(proxy)
    assert response.status_code == 500 and response.content == INJECTED_BODY
    assert upstream.seen == 0
    assert proxy.stats()["http_500_injected"] == 1


def test_the_same_seed_injects_the_same_500s(upstream: Upstream) -> None:
    runs = []
    for _ in range(2):
        with NetworkFaults(("127.0.0.1", upstream.port), seed=3) as faults:
            faults.set("http-500", probability=0.5)
            runs.append([timed_get(faults)[1].status_code for _ in range(20)])
    assert runs[0] == runs[1] and 500 in runs[0] and 200 in runs[0]


def test_an_upstream_that_is_down_resets_the_client_and_the_proxy_stays_up(
        upstream: Upstream) -> None:
    with NetworkFaults(("127.0.0.1", upstream.port), seed=1) as faults:
        upstream.close()
        with pytest.raises(httpx.TransportError):
            timed_get(faults, timeout=5)
        assert faults.stats()["upstream_connect_failures"] >= 1


def test_an_unknown_fault_or_parameter_is_refused(proxy: NetworkFaults) -> None:
    with pytest.raises(ValueError, match="no-such"):
        proxy.set("no-such-fault")
    with pytest.raises(ValueError):
        proxy.set("latency", furlongs=3)


def _get_with_id(proxy: NetworkFaults, request_id: str, timeout: float = 10.0) -> float:
    started = time.monotonic()
    with httpx.Client(base_url=proxy.base_url, timeout=timeout) as client:
        client.get("/", headers={"X-Request-Id": request_id})
    return time.monotonic() - started


def test_the_request_log_holds_the_services_time_without_the_injected_delay(
        proxy: NetworkFaults) -> None:
    proxy.set("latency", ms=200)
    seconds = _get_with_id(proxy, "a1")
    log = proxy.requests()
    assert seconds >= 0.4  # the client saw both delays
    forwarded = log["a1"]
    assert forwarded.status == 200 and forwarded.service_s is not None
    # What the service took is what the client saw less what the proxy added, not all of it.
    assert forwarded.service_s < seconds - 0.3
    assert proxy.requests() == {}, "the log empties when read"


def test_a_request_the_network_swallowed_never_appears_in_the_log(
        proxy: NetworkFaults) -> None:
    proxy.set("blackhole")
    with pytest.raises(httpx.ReadTimeout):
        _get_with_id(proxy, "lost", timeout=0.3)
    proxy.set("http-500", probability=1.0)
    _get_with_id(proxy, "injected")
    proxy.clear()
    _get_with_id(proxy, "plain")
    assert set(proxy.requests()) == {"plain"}


def test_a_request_the_hole_cut_off_before_its_answer_leaves_the_log(
        proxy: NetworkFaults, upstream: Upstream) -> None:
    # The service got it, then the hole fell before its answer came back: the network's.
    upstream.delay_s = 0.5
    client = threading.Thread(target=lambda: _quiet_get(proxy, "cut"))
    client.start()
    assert upstream.arrived.wait(10)
    proxy.set("blackhole")
    client.join(timeout=10)
    proxy.clear()
    assert upstream.seen == 1
    assert "cut" not in proxy.requests()


def _quiet_get(proxy: NetworkFaults, request_id: str) -> None:
    with contextlib.suppress(httpx.HTTPError):
        _get_with_id(proxy, request_id, timeout=1.5)
