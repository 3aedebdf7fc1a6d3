"""Kafka tools behind the CLI's other commands (feed, inspect, status, replay), apart from the worker loop."""
