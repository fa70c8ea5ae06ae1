#!/usr/bin/env bash
# A real Kubernetes control plane on 127.0.0.1 (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok with one fake Node), built through the Go module proxy and cached in
# ~/.cache/canary-real-cluster. See scripts/real_cluster/.
#   scripts/real-cluster.sh build        build the binaries if they are not cached
#   scripts/real-cluster.sh up DIR       start it; DIR gets admin.kubeconfig, release.kubeconfig,
#                                        the pid files and logs/ (CRDS="file ..." to apply CRDs)
#   scripts/real-cluster.sh down DIR     stop what `up DIR` started
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="$repo/.venv/bin/python"
if [ ! -x "$python" ]; then
  echo "real-cluster.sh: no .venv: run scripts/bootstrap.sh first" >&2
  exit 1
fi
PYTHONPATH="$repo/scripts${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m real_cluster "$@"
