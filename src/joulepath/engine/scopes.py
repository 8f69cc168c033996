"""Named scopes that cost nothing unless a profile is being taken.

The engine marks its phases (`scope("sampling+detokenize")`, `scope("kv_cache.write")`, ...). While
the hot-path profiler (`joulepath.profile`) records, each scope is timed by a light recorder
(exclusive seconds per name, nested scopes subtracted), and, inside a `torch.profiler` window, also
marked with `record_function` so operators can be attributed to it. Ordinary serving pays one global
check per scope.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch


class ScopeTimer:
    """Exclusive wall seconds per scope name. On CUDA, each boundary synchronizes (so the time is the
    device's, at the cost of serialising the stream while profiling)."""

    def __init__(self, sync_cuda: bool = False) -> None:
        self.exclusive: dict[str, float] = {}
        self._stack: list[list[Any]] = []  # [name, start, time of nested scopes, record_function or None]
        self._sync = sync_cuda
        self.torch_marks = False  # also emit record_function (inside a torch.profiler window)

    def enter(self, name: str) -> None:
        if self._sync:
            torch.cuda.synchronize()
        mark = None
        if self.torch_marks:
            mark = torch.profiler.record_function(name)
            mark.__enter__()
        self._stack.append([name, time.perf_counter(), 0.0, mark])

    def exit(self) -> None:
        if self._sync:
            torch.cuda.synchronize()
        name, start, nested, mark = self._stack.pop()
        spent = time.perf_counter() - start
        self.exclusive[name] = self.exclusive.get(name, 0.0) + spent - nested
        if self._stack:
            self._stack[-1][2] += spent
        if mark is not None:
            mark.__exit__(None, None, None)


STEP = "engine.step"  # one serving step (the frontend's: engine step, detokenizing, output guard); the profile's root

_active: ScopeTimer | None = None


class _Timed:
    """A scope on the active timer (a plain class: cheaper to enter than a generator context)."""

    __slots__ = ("name", "timer")

    def __init__(self, timer: ScopeTimer, name: str) -> None:
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.timer.enter(self.name)

    def __exit__(self, *exc: object) -> None:
        self.timer.exit()


_NULL = nullcontext()


def scope(name: str) -> AbstractContextManager[None]:
    return _Timed(_active, name) if _active is not None else _NULL


@contextmanager
def recording(timer: ScopeTimer) -> Iterator[ScopeTimer]:
    global _active
    previous, _active = _active, timer
    try:
        yield timer
    finally:
        _active = previous
