"""The one place that runs a model with hooks: record named points, change values at them, stop early.

Every capture, ablation, sweep, patch, pattern rebuild, readout and generation step is a ``trace``. It takes
the model's lock (``lm.exclusive()``: other students' runs take turns, first come first served), registers
its hooks in one list removed in ``finally``, and ends the forward pass where asked.

Points are named per layer, ``Point(name, layer)``; values are given and recorded with these shapes
(``batch`` is 1 for a run on token ids, the number of variants for a run of blocks):

============  ===============================  =====================================================
name          value                            where
============  ===============================  =====================================================
resid_pre     ``[batch, seq, d_model]``        a block's input (the residual stream before it)
resid_post    ``[batch, seq, d_model]``        a block's output
call          ``BlockCall``                    the rest of a block's call (mask, rotary, ...), record only
z             ``[batch, seq, head, d_head]``   each head's output: the input of the attention output projection
attn_out      ``[batch, seq, d_model]``        the attention module's output (after the projection), record only
pattern       ``[batch, head, query, key]``    eager attention's returned weights (eager models only), record only
qkv           ``LayerStates``                  query, key and value states as the attention function gets
                                               them, after rotary (opt_lens' sdpa models only), record only
mlp_hidden    ``[batch, seq, d_mlp]``          the MLP's activations after the nonlinearity (input of c_proj/fc2)
mlp_out       ``[batch, seq, d_model]``        the MLP's output
============  ===============================  =====================================================

An ``Edit`` at a point maps the value to its replacement (it gets a copy it may change in place); edits run
before recording, so recorded values are the edited ones. Ready-made edits: ``zero_heads``, ``set_heads``,
``set_resid``, ``set_mlp``, ``scale_mlp``, ``set_neuron``.

    from opt_lens.tracing import Point, trace, zero_heads
    run = trace(lm, ids, record=[Point("z", 1), Point("mlp_hidden", 1)], edits=[zero_heads(0, [3])],
                stop=Point("mlp_hidden", 1))
    run[Point("z", 1)]  # [1, seq, head, d_head]: layer 1's heads with head L0.H3 knocked out
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from . import attention
from .blocks import BlockCall, block_output
from .errors import OptLensError
from .surgery import StopForward, get_module


class Point(NamedTuple):
    name: str
    layer: int


POINTS = ("resid_pre", "resid_post", "call", "z", "attn_out", "pattern", "qkv", "mlp_hidden", "mlp_out")
_EDITABLE = ("resid_pre", "resid_post", "z", "mlp_hidden", "mlp_out")


@dataclass(frozen=True)
class Edit:
    """Replace the value at ``point`` by ``change(value)`` (``value`` is a copy ``change`` may modify)."""

    point: Point
    change: Callable[[torch.Tensor], torch.Tensor]


def zero_heads(layer: int, heads: Iterable[int]) -> Edit:
    """Knock heads out: their slices of the output projection's input set to zero."""
    heads = list(heads)

    def change(z):  # [batch, seq, head, d_head]
        z[:, :, heads] = 0.0
        return z

    return Edit(Point("z", layer), change)


def set_heads(layer: int, heads: Sequence[int], values: torch.Tensor, *, per_row: bool = False) -> Edit:
    """Set heads' outputs: ``values`` ``[head, seq, d_head]``, or ``[seq, d_head]`` per head for every position.
    With ``per_row``, batch row ``i`` gets ``values[i]`` in head ``heads[i]`` only (one variant per head)."""

    def change(z):  # [batch, seq, head, d_head]
        for i, head in enumerate(heads):
            if per_row:
                z[i, :, head] = values[i]
            else:
                z[:, :, head] = values[i]
        return z

    return Edit(Point("z", layer), change)


def set_resid(name: str, layer: int, positions: torch.Tensor, values: torch.Tensor) -> Edit:
    """Row ``i`` of the batch gets ``values[i]`` ``[d_model]`` at position ``positions[i]`` of ``Point(name, layer)``."""

    def change(hidden):  # [batch, seq, d_model]
        hidden[torch.arange(len(positions)), positions] = values
        return hidden

    return Edit(Point(name, layer), change)


def set_mlp(layer: int, value: torch.Tensor | float) -> Edit:
    """Replace an MLP's output by ``value`` (``0.0`` knocks it out; a ``[d_model]`` vector goes to every position)."""

    def change(out):  # [batch, seq, d_model]
        return torch.zeros_like(out) if isinstance(value, float) and value == 0.0 else value.expand_as(out).clone()

    return Edit(Point("mlp_out", layer), change)


def scale_mlp(layer: int, factor: float) -> Edit:
    """Multiply an MLP's output by ``factor``."""
    return Edit(Point("mlp_out", layer), lambda out: out.mul_(factor))


def set_neuron(layer: int, neuron: int, value: float | torch.Tensor = 0.0) -> Edit:
    """Set one MLP neuron's activation (after the nonlinearity) at every position."""

    def change(hidden):  # [batch, seq, d_mlp]
        hidden[..., neuron] = value
        return hidden

    return Edit(Point("mlp_hidden", layer), change)


@dataclass
class Trace:
    """What one traced run gave: the recorded values by point, and the model's own output where it got that far."""

    values: dict[Point, Any] = field(default_factory=dict)
    output: Any = None  # the model's output (``.logits``, ``.cache``) of a run that was not stopped
    logits: torch.Tensor | None = None  # [batch, vocab] (``read`` an int) or [batch, position, vocab]: a run of blocks
    final: torch.Tensor | None = None  # [batch, seq, d_model]: a run of blocks' last hidden state

    def __getitem__(self, point: Point) -> Any:
        return self.values[point]


Sink = Callable[[Point, Any], None]


def trace(
    lm,
    input_ids: torch.Tensor,
    *,
    record: Iterable[Point] = (),
    edits: Iterable[Edit] = (),
    stop: Point | None = None,
    sink: Sink | None = None,
    use_cache: bool = False,
    cache=None,
    last_logits_only: bool = True,
) -> Trace:
    """Run ``lm`` on ``input_ids`` ``[seq]`` (a batch of one), recording ``record`` and applying ``edits``.

    ``stop`` ends the run right after that point (recorded and edited first). ``sink(point, value)`` receives
    each recorded value instead of ``Trace.values`` (to copy it into a buffer). ``use_cache`` runs one step of
    a generation on ``cache`` (the model's key/value cache of the steps before; the output's ``.cache`` is
    the next one). The model computes the last position's logits only unless ``last_logits_only`` is false
    or it cannot.
    """
    result = Trace()
    hooks_for = _Hooks(lm, record, edits, stop, sink or result.values.__setitem__, (1, input_ids.shape[-1]))
    kwargs = {"cache": cache, "use_cache": True} if use_cache else {"use_cache": False}
    if last_logits_only:
        kwargs.update(_last_logits_only(lm.model))
    with exclusive(lm), hooks_for.installed():
        try:
            result.output = lm.model(input_ids=input_ids.reshape(1, -1), **kwargs)
        except StopForward:
            pass
    hooks_for.check(stopped=result.output is None)
    return result


def trace_blocks(
    lm,
    hidden: torch.Tensor,
    calls: Sequence[BlockCall],
    start: int,
    *,
    record: Iterable[Point] = (),
    edits: Iterable[Edit] = (),
    stop: Point | None = None,
    sink: Sink | None = None,
    read: slice | int | None = None,
    checkpoint: Callable[[], None] | None = None,
) -> Trace:
    """Run blocks ``start..L-1`` on ``hidden`` ``[batch, seq, d_model]`` with each block's recorded ``calls`` (a
    batch-of-one mask broadcasts), recording and editing as ``trace``; then the model's readout (final norm,
    project_out, unembedding) at positions ``read`` into ``Trace.logits``. ``start = n_layers`` runs the
    readout alone. A variant that changes block ``l`` shares the blocks before it: the sweeps' saving.

    ``checkpoint()`` is called after each block; whatever it raises ends the run (hooks removed, lock
    released): a sweep's student who left is stopped within a block's time, not a batch's."""
    result = Trace()
    hooks_for = _Hooks(lm, record, edits, stop, sink or result.values.__setitem__, tuple(hidden.shape[:2]))
    model, paths = lm.model, lm.arch.paths
    with exclusive(lm), hooks_for.installed():
        try:
            for layer in range(start, lm.arch.n_layers):
                hidden = calls[layer].run(get_module(model, paths.block(layer)), hidden)
                if checkpoint is not None:
                    checkpoint()
            result.final = hidden
            if read is not None:
                result.logits = _readout(lm, hidden[:, read])
        except StopForward:
            pass
    hooks_for.check(stopped=result.final is None)
    return result


def readout(lm, resid: torch.Tensor) -> torch.Tensor:
    """Logits the model would produce if ``resid`` (``[..., d_model]``) were its last residual stream: the model's
    own modules after its last block (final norm, OPT-350m's project_out, unembedding), in order."""
    with exclusive(lm):
        return _readout(lm, resid)


def readout_with_gradients(lm, resid: torch.Tensor) -> torch.Tensor:
    """``readout`` with autograd on, for training a lens on the residual stream (tuned.py): gradients reach
    ``resid`` and whatever made it; the model's own weights are frozen at load."""
    with lm.exclusive():
        return _readout(lm, resid)


def apply_module(lm, path: str, x: torch.Tensor) -> torch.Tensor:
    """One of the model's modules on ``x`` (the attention output projection on chosen heads, for attribution)."""
    with exclusive(lm):
        return get_module(lm.model, path)(x)


@contextlib.contextmanager
def exclusive(lm) -> Iterator[None]:
    """The model to this thread, without gradients, for code that calls its modules directly (no hooks)."""
    with lm.exclusive(), torch.inference_mode():
        yield


def _readout(lm, resid: torch.Tensor) -> torch.Tensor:
    x = resid
    for path in lm.arch.paths.readout():
        x = get_module(lm.model, path)(x)
    return x  # [..., vocab]


def _last_logits_only(model) -> dict:
    """Ask for the last position's logits only where the model supports it: the rest are computed on demand."""
    supported = "logits_to_keep" in inspect.signature(model.forward).parameters
    return {"logits_to_keep": 1} if supported else {}


class _Hooks:
    """The hooks of one traced run: per module, the edits then the recordings at the points it hosts."""

    def __init__(self, lm, record, edits, stop, sink: Sink, shape: tuple[int, int]) -> None:
        self.lm, self.stop, self.sink, self.shape = lm, stop, sink, shape
        self.record = set(record) | ({stop} if stop is not None else set())
        self.edits: dict[Point, list[Edit]] = defaultdict(list)
        for edit in edits:
            self.edits[edit.point].append(edit)
        self.seen: set[Point] = set()
        self.owner = threading.get_ident()
        self._check_points()

    def _check_points(self) -> None:
        arch = self.lm.arch
        for point in self.record | set(self.edits):
            if point.name not in POINTS or not 0 <= point.layer < arch.n_layers:
                raise OptLensError(f"There is no point {point.name!r} at layer {point.layer} in this model.")
        for point in self.edits:
            if point.name not in _EDITABLE:
                raise OptLensError(f"The point {point.name!r} can be recorded but not changed.")
        wanted = {p.name for p in self.record | set(self.edits)}
        if "mlp_hidden" in wanted and arch.paths.mlp_down is None:
            raise OptLensError("opt_lens does not know this model's MLP output projection, so it cannot read its neurons.")
        recorded_path = attention.capture_path(self.lm.model) == attention.RECORDED
        if "qkv" in wanted and not recorded_path:
            raise OptLensError("This model's attention bypasses transformers' interface, so its query, key and value states cannot be read.")

    def at(self, point: Point, value):
        """Apply the edits at ``point`` to ``value``, record it if asked, stop if asked; the (new) value."""
        edits = self.edits.get(point)
        if edits:
            value = value.clone()
            for edit in edits:
                value = edit.change(value)
        if point in self.record:
            self.sink(point, value)
            self.seen.add(point)
        if point == self.stop:
            raise StopForward
        return value

    def wanted(self, name: str, layer: int) -> bool:
        point = Point(name, layer)
        return point in self.record or point in self.edits

    def mine(self) -> bool:
        # Defensive: only the tracing thread's own forward pass is recorded or changed.
        return threading.get_ident() == self.owner

    def installed(self):
        return _installed(self)

    def check(self, *, stopped: bool) -> None:
        missed = self.record - self.seen
        assert not missed or stopped, f"hooks missed {sorted(missed)}"
        assert stopped == (self.stop is not None), "the run stopped where it was not asked to, or ran past its stop"


class _HookSet:
    """Every handle registered goes into one list, removed when the run ends, whatever fails: the only place in
    opt_lens that registers a hook."""

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
def _installed(spec: _Hooks) -> Iterator[None]:
    """Register the hooks of ``spec`` (and its attention listener) for the ``with`` block; remove them on exit."""
    hook_set = _HookSet()
    arch, model = spec.lm.arch, spec.lm.model
    layer_of = {}
    try:
        for layer in range(arch.n_layers):
            _register_layer(spec, hook_set, model, arch, layer)
            if spec.wanted("qkv", layer):
                layer_of[get_module(model, arch.paths.attn_of(layer))] = layer
        with attention.recording(_QkvRecorder(spec, layer_of)) if layer_of else contextlib.nullcontext():
            yield
    finally:
        hook_set.remove_all()


def _register_layer(spec: _Hooks, hook_set, model, arch, layer: int) -> None:
    """Hooks for the points of one layer, each on the module that hosts it, only where a point is wanted."""
    paths = arch.paths
    block = get_module(model, paths.block(layer))
    if spec.wanted("resid_pre", layer) or spec.wanted("call", layer):
        hook_set.forward_pre(block, _before_block(spec, layer))
    if spec.wanted("resid_post", layer):
        hook_set.forward(block, _after(spec, "resid_post", layer, block_output))
    if spec.wanted("z", layer):
        hook_set.forward_pre(get_module(model, paths.attn_out_proj_of(layer)), _before(spec, "z", layer, arch.n_heads))
    if spec.wanted("attn_out", layer) or spec.wanted("pattern", layer):
        hook_set.forward(get_module(model, paths.attn_of(layer)), _after_attention(spec, layer))
    if spec.wanted("mlp_hidden", layer):
        hook_set.forward_pre(get_module(model, paths.mlp_down_of(layer)), _before(spec, "mlp_hidden", layer, None))
    if spec.wanted("mlp_out", layer):
        hook_set.forward(get_module(model, paths.mlp_out_of(layer)), _after(spec, "mlp_out", layer, None))


def _before_block(spec: _Hooks, layer: int):
    def hook(module, args, kwargs):
        if not spec.mine():
            return None
        hidden, call = BlockCall.split(args, kwargs)
        if spec.wanted("call", layer):
            spec.at(Point("call", layer), call)
        if not spec.wanted("resid_pre", layer):
            return None
        changed = spec.at(Point("resid_pre", layer), hidden)
        if changed is hidden:
            return None
        if call.positional:
            return (changed, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": changed}

    return hook


def _before(spec: _Hooks, name: str, layer: int, n_heads: int | None):
    """A pre-hook on a linear map whose input is the point (``z``: split into heads; ``mlp_hidden``)."""
    batch, seq = spec.shape

    def hook(module, args, kwargs):
        if not spec.mine():
            return None
        x = args[0]  # [batch, seq, width], or [batch * seq, width] (OPT's fc2)
        value = x.view(batch, seq, n_heads, -1) if n_heads else x.view(batch, seq, -1)
        changed = spec.at(Point(name, layer), value)
        if changed is value:
            return None
        return (changed.reshape(x.shape), *args[1:]), kwargs

    return hook


def _after(spec: _Hooks, name: str, layer: int, unwrap):
    batch, seq = spec.shape

    def hook(module, args, output):
        if not spec.mine():
            return None
        raw = unwrap(output) if unwrap else output
        value = raw.view(batch, seq, -1)  # OPT's fc2 gives [batch * seq, d_model]
        changed = spec.at(Point(name, layer), value)
        if changed is value:
            return None
        changed = changed.reshape(raw.shape)
        return (changed, *output[1:]) if isinstance(output, tuple) else changed

    return hook


def _after_attention(spec: _Hooks, layer: int):
    def hook(module, args, output):
        if not spec.mine():
            return
        if spec.wanted("pattern", layer):
            if output[1] is None:
                raise OptLensError("This model was loaded with neither opt_lens' attention nor eager attention, so it gives no patterns.")
            spec.at(Point("pattern", layer), output[1])
        if spec.wanted("attn_out", layer):
            spec.at(Point("attn_out", layer), output[0])

    return hook


class _QkvRecorder:
    """Receives each attention call of the traced thread (attention.recording) and records its states."""

    def __init__(self, spec: _Hooks, layer_of: dict) -> None:
        self.spec, self.layer_of = spec, layer_of

    def __call__(self, module, states: attention.LayerStates) -> None:
        layer = self.layer_of.get(module)
        if layer is not None:
            self.spec.at(Point("qkv", layer), states)
