"""What operators see of a running worker: logs, Prometheus metrics and the health/metrics server."""
