"""The mesh: Istio routing, simulated traffic, ingress and metrics, over a view of the cluster."""
