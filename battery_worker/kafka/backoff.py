"""Exponential back-off between retries, so a down broker never causes a busy spin."""

from __future__ import annotations


class Backoff:
    def __init__(self, initial_s: float, max_s: float) -> None:
        self._initial, self._max, self._next = initial_s, max_s, initial_s

    def next_delay(self) -> float:
        delay, self._next = self._next, min(self._next * 2, self._max)
        return delay

    def reset(self) -> None:
        self._next = self._initial
