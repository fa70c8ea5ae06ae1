"""The test phase's checks: HTTP requests and shell commands aimed at the canary.

HTTP checks carry `Host: <plan host>` and the per-run test header, so the test route
(and only it) sends them to the canary while users still reach stable.
"""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import httpx
from pydantic import BaseModel

from canary.plan import CommandCheck, HttpCheck, ReleasePlan

MESH_URL_ENV = "CANARY_MESH_URL"
PARALLEL_REQUESTS = 8


class CheckResult(BaseModel):
    name: str
    kind: Literal["http", "command"]
    attempts: int
    failures: int
    max_failures: int
    passed: bool
    detail: str = ""

    def line(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        counts = f"{self.attempts - self.failures}/{self.attempts} ok"
        return f"{self.name}: {verdict} ({counts}" + (f"; {self.detail})" if self.detail else ")")


class CheckReport(BaseModel):
    results: list[CheckResult]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def reason(self) -> str:
        """One line: the failed checks, or every check's counts."""
        failed = [r for r in self.results if not r.passed]
        if failed:
            return "checks failed: " + "; ".join(r.line() for r in failed)
        return "; ".join(r.line() for r in self.results) or "no checks"


def base_url(plan: ReleasePlan, mesh_url: str | None = None) -> str:
    """Where checks go: the plan's base URL, the mesh URL, or the in-cluster service."""
    url = plan.tests.base_url or mesh_url or os.environ.get(MESH_URL_ENV)
    if not url:
        url = f"http://{plan.host}.{plan.namespace}.svc.cluster.local:{plan.tests.port}"
    return url.rstrip("/")


def check_headers(plan: ReleasePlan, release_id: str) -> dict[str, str]:
    return {"host": plan.host, plan.tests.header: release_id}


def run_checks(plan: ReleasePlan, release_id: str, url: str) -> CheckReport:
    headers = check_headers(plan, release_id)
    results = [run_http_check(check, url, headers) for check in plan.tests.checks]
    results += [run_command_check(c, url, plan, release_id) for c in plan.tests.commands]
    return CheckReport(results=results)


def run_http_check(check: HttpCheck, url: str, headers: dict[str, str]) -> CheckResult:
    with httpx.Client(timeout=check.timeout, headers=headers) as client:
        workers = min(PARALLEL_REQUESTS, check.count)
        with ThreadPoolExecutor(workers, thread_name_prefix=f"check-{check.name}") as pool:
            problems = list(pool.map(lambda _: _request(client, check, url), range(check.count)))
    failed = [p for p in problems if p]
    return CheckResult(
        name=check.name,
        kind="http",
        attempts=check.count,
        failures=len(failed),
        max_failures=check.max_failures,
        passed=len(failed) <= check.max_failures,
        detail=_most_common(failed),
    )


def _request(client: httpx.Client, check: HttpCheck, url: str) -> str:
    """An empty string when the answer is as expected, else what was wrong."""
    try:
        response = client.request(
            check.method, url + check.path, headers=check.headers, content=check.body
        )
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}"
    if response.status_code != check.expect_status:
        return f"status {response.status_code}, expected {check.expect_status}"
    if check.body_contains is not None and check.body_contains not in response.text:
        return f"body lacks {check.body_contains!r}"
    return ""


def _most_common(problems: list[str]) -> str:
    if not problems:
        return ""
    top = max(set(problems), key=problems.count)
    return f"{problems.count(top)}x {top}"


def run_command_check(
    check: CommandCheck, url: str, plan: ReleasePlan, release_id: str
) -> CheckResult:
    env = {
        **os.environ,
        "CANARY_TEST_URL": url,
        "CANARY_TEST_HOST": plan.host,
        "CANARY_TEST_HEADER": f"{plan.tests.header}: {release_id}",
        "CANARY_RELEASE_ID": release_id,
    }
    try:
        done = subprocess.run(
            check.run, shell=True, env=env, capture_output=True, text=True, timeout=check.timeout
        )
    except subprocess.TimeoutExpired:
        return _command_result(check, False, f"timed out after {check.timeout:g}s")
    if done.returncode == 0:
        return _command_result(check, True, "")
    output = (done.stderr or done.stdout).strip().splitlines()
    detail = f"exit {done.returncode}" + (f": {output[-1][:200]}" if output else "")
    return _command_result(check, False, detail)


def _command_result(check: CommandCheck, passed: bool, detail: str) -> CheckResult:
    return CheckResult(
        name=check.name,
        kind="command",
        attempts=1,
        failures=0 if passed else 1,
        max_failures=0,
        passed=passed,
        detail=detail,
    )
