"""A real Kubernetes control plane on 127.0.0.1 for the real-cluster test lane.

`scripts/real-cluster.sh up DIR` builds (once, cached) and starts etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok with one fake Node; `down DIR` stops them.
"""
