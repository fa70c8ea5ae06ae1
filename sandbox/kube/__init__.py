"""The emulated Kubernetes API: server, object store, patches, validation, controller."""
