"""The ``battery-worker`` command: one module per command family, ``main`` dispatches."""

from battery_worker.cli.main import main

__all__ = ["main"]
