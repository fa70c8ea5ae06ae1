"""The demo's Prefect server: one migrated database in the cache, a fresh copy per demo."""

from __future__ import annotations

import httpx
import pytest

from sandbox.demo_prefect import DATABASE, cache_dir, demo_prefect
from tests.support.deployments import RETRIED
from tests.support.waiting import wait_until


def post(url: str, body: dict) -> httpx.Response:
    """A POST retried as Prefect's own client retries it (a busy SQLite answers 503)."""

    def answered() -> httpx.Response | None:
        response = httpx.post(url, json=body, timeout=30)
        return None if response.status_code in RETRIED else response

    response = wait_until(answered, 60, interval=1.0, message=f"POST {url} to be answered")
    response.raise_for_status()
    return response


def flow_runs(api_url: str) -> list[dict]:
    return post(f"{api_url}/flow_runs/filter", {"limit": 10}).json()


def make_a_flow_run(api_url: str) -> None:
    flow = post(f"{api_url}/flows/", {"name": "a-demo"}).json()
    post(f"{api_url}/flow_runs/", {"flow_id": flow["id"], "name": "first"})


def test_each_demo_starts_on_a_fresh_copy_of_the_migrated_database(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with demo_prefect() as first:
        first.wait_ready()
        assert (cache_dir() / DATABASE).is_file()  # migrated once, kept
        make_a_flow_run(first.api_url)
        assert [run["name"] for run in flow_runs(first.api_url)] == ["first"]
        home = first.home
    assert not home.exists()  # the demo's copy goes with it

    with demo_prefect() as second:
        second.wait_ready()
        assert flow_runs(second.api_url) == []  # the first demo's run is not there


def test_a_database_that_cannot_be_prepared_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr("sandbox.demo_prefect.sys.executable", "/bin/false")  # fails, silent
    with pytest.raises(OSError) as failed, demo_prefect():
        pass
    assert str(failed.value) == "cannot prepare the demo's Prefect database: no output"
    assert not (cache_dir() / DATABASE).exists()  # nothing half-made is kept
