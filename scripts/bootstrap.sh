#!/usr/bin/env bash
# Installs what the demo and the tests need: Prometheus and Chromium (Debian's packages) and
# a virtualenv in .venv with the project and its development tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v prometheus >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  echo "bootstrap: installing Debian's prometheus package"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# The package starts a system-wide Prometheus on :9090; the project starts its own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus || true
fi

# The browser tests drive Debian's Chromium through Playwright (executable_path
# /usr/bin/chromium); Playwright never downloads a browser of its own.
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  echo "bootstrap: installing Debian's chromium package"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"

# The real-cluster test lane's control plane (scripts/real-cluster.sh): etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok, built through the Go module proxy into
# ~/.cache/canary-real-cluster once (see README), reused after. CANARY_REAL_CLUSTER=skip
# leaves it out on a developer's machine (the lane is then skipped); CI always builds it.
if [ "${CANARY_REAL_CLUSTER:-build}" != skip ] || [ -n "${CI:-}" ]; then
  bash scripts/real-cluster.sh build
fi
echo "bootstrap: ready ($(.venv/bin/python --version), $(prometheus --version 2>&1 | head -1))"
