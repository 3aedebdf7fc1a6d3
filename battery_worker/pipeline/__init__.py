"""The worker's I/O-free core: records in, records out, per-site state; no Kafka client, no event loop."""
