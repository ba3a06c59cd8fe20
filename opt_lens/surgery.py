"""Plain functions over dotted module paths, and the exception a hook raises to end a forward pass early."""

from __future__ import annotations

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
