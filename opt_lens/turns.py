"""A lock that serves waiting threads in the order they asked (first in, first out).

A plain ``threading.Lock`` lets whichever thread the scheduler wakes first take it: a long sweep that releases
and retakes the model's lock after every batch could then take it again ahead of a student's capture that has
been waiting all along. With turns, the capture runs after at most one more batch.
"""

from __future__ import annotations

import threading
from collections import deque


class FairLock:
    """Non-reentrant mutual exclusion; on release the lock passes to the longest-waiting thread."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._waiting: deque[threading.Event] = deque()

    def acquire(self) -> None:
        with self._mutex:
            if not self._held and not self._waiting:
                self._held = True
                return
            turn = threading.Event()
            self._waiting.append(turn)
        try:
            turn.wait()
        except BaseException:  # interrupted while waiting: give up the place, or the lock if it was handed over
            with self._mutex:
                handed = turn.is_set()
                if not handed:
                    self._waiting.remove(turn)
            if handed:
                self.release()
            raise
        # The releasing thread kept ``_held`` set and handed the lock to this one.

    def release(self) -> None:
        with self._mutex:
            assert self._held, "release of a lock that is not held"
            if self._waiting:
                self._waiting.popleft().set()  # stays held: ownership passes to the next in line
            else:
                self._held = False

    def locked(self) -> bool:
        with self._mutex:
            return self._held

    def __enter__(self) -> FairLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
