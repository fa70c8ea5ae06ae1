"""Release metrics: scraped over HTTP from the process running releases, and pushed."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client.parser import text_string_to_metric_families

from canary.notify.metrics import metrics_notifier_from_env
from flows.canary_release import ReleaseRolledBack, canary_release
from sandbox.prometheus import free_port

pytestmark = pytest.mark.usefixtures("prefect_api_url")

SERVICE = {"namespace": "default", "service": "reviews"}


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """Every sample of the exposition, keyed by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return samples(text)


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset((SERVICE | labels).items())))


def decisions_counted(decision: str) -> float:
    """The process's count of `decision` so far: its counters outlive each release, and
    other tests' releases in this process may have added to them."""
    metrics = metrics_notifier_from_env()
    assert metrics is not None, "set CANARY_METRICS_PORT or CANARY_PUSHGATEWAY_URL first"
    labels = SERVICE | {"decision": decision}
    return metrics.registry.get_sample_value("canary_release_decisions_total", labels) or 0.0


class Pushgateway:
    """Records what is PUT to it, as a Pushgateway would store it (the last push wins)."""

    def __init__(self) -> None:
        pushes: list[tuple[str, str]] = []
        self.pushes = pushes

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                pushes.append((self.path, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pushgateway() -> Iterator[Pushgateway]:
    gateway = Pushgateway()
    yield gateway
    gateway.stop()


def test_a_release_is_served_and_pushed_as_metrics(
    monkeypatch, start_sandbox, fast_plan, pushgateway
):
    port = free_port()
    monkeypatch.setenv("CANARY_METRICS_PORT", str(port))
    monkeypatch.setenv("CANARY_PUSHGATEWAY_URL", pushgateway.url)
    passed, failed = decisions_counted("pass"), decisions_counted("fail")
    promoted, faulty = start_sandbox("healthy"), start_sandbox("faulty")

    result = canary_release(fast_plan(), target=promoted.target)

    found = scrape(port)
    assert value(found, "canary_release_status") == 1  # promoted
    assert value(found, "canary_release_weight") == 100
    phases = {dict(labels).get("phase") for name, labels in found if name.endswith("phase_info")}
    assert phases == {"cleanup"}
    assert value(found, "canary_release_phase_info", phase="cleanup") == 1
    # From the first event to the last: within the flow's own span, and more than a moment.
    assert 0 < value(found, "canary_release_duration_seconds") <= result.duration
    assert value(found, "canary_release_decisions_total", decision="pass") == passed + 4
    path, body = pushgateway.pushes[-1]
    assert path == "/metrics/job/canary-release/namespace/default/service/reviews"
    assert value(samples(body), "canary_release_status") == 1

    with pytest.raises(ReleaseRolledBack):
        canary_release(fast_plan(), target=faulty.target)

    found = scrape(port)
    assert value(found, "canary_release_status") == 2  # rolled back
    assert value(found, "canary_release_weight") == 0
    assert value(found, "canary_release_phase_info", phase="test") == 1
    assert value(found, "canary_release_phase_info", phase="cleanup") is None
    assert value(found, "canary_release_decisions_total", decision="fail") == failed + 1
    assert value(samples(pushgateway.pushes[-1][1]), "canary_release_status") == 2
