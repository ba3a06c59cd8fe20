"""Plain functions over dotted module paths, and one place that owns every hook handle."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


def get_module(model: nn.Module, path: str) -> nn.Module:
    """Resolve a dotted path such as ``"model.decoder.layers.3"``; raises ``AttributeError`` if a part is missing."""
    module = model
    for part in path.split("."):
        module = module[int(part)] if part.isdigit() else getattr(module, part)
    if not isinstance(module, nn.Module):
        raise AttributeError(f"{path!r} is {type(module).__name__}, not a module")
    return module


def find_module(model: nn.Module, path: str | None) -> nn.Module | None:
    """Like ``get_module`` but returns None where the path is absent or set to None (OPT's optional projections)."""
    if path is None:
        return None
    try:
        return get_module(model, path)
    except (AttributeError, IndexError):
        return None


def path_of(model: nn.Module, target: nn.Module) -> str | None:
    """The dotted path of ``target`` inside ``model``, or None."""
    for name, module in model.named_modules():
        if module is target:
            return name
    return None


class StopForward(Exception):
    """Raised by a hook to end a forward pass once it has given what was needed (the caller catches it)."""


class HookSet:
    """Every handle registered goes into one list and is removed when the ``with`` block exits, whatever fails."""

    def __init__(self) -> None:
        self._handles: list = []

    def forward(self, module: nn.Module, hook) -> None:
        self._handles.append(module.register_forward_hook(hook))

    def forward_pre(self, module: nn.Module, hook) -> None:
        self._handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))

    def remove_all(self) -> None:
        while self._handles:
            self._handles.pop().remove()


@contextlib.contextmanager
def hooks() -> Iterator[HookSet]:
    hook_set = HookSet()
    try:
        yield hook_set
    finally:
        hook_set.remove_all()
