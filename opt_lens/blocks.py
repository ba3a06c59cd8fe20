"""A transformer block's call, recorded during one forward pass and replayed on other hidden states.

A block receives its input hidden state and whatever else the model computed once for all blocks: the
attention mask, rotary position embeddings, cache positions. Keeping those arguments lets a block run
again on its own, which the causal sweeps (rerun blocks ``l..L-1`` on changed hidden states) and the
attention patterns (rerun block ``l`` up to its attention call, to see its query and key states) need.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class BlockCall:
    """The arguments one block was called with, other than its input hidden state."""

    args: tuple  # positional arguments after the hidden state
    kwargs: dict  # keyword arguments, without hidden_states
    positional: bool  # whether the hidden state was passed positionally

    @classmethod
    def split(cls, args: tuple, kwargs: dict) -> tuple[torch.Tensor, BlockCall]:
        """A forward pre-hook's ``(args, kwargs)`` as (the input hidden state, the rest of the call)."""
        positional = bool(args)
        hidden = args[0] if positional else kwargs["hidden_states"]
        rest = {key: value for key, value in kwargs.items() if key != "hidden_states"}
        return hidden, cls(tuple(args[1:]), rest, positional)

    def run(self, block: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """``block`` on ``hidden`` ``[batch, seq, d_model]`` with the recorded arguments (a batch-of-one mask
        broadcasts over the batch); returns its output hidden state."""
        if self.positional:
            output = block(hidden, *self.args, **self.kwargs)
        else:
            output = block(*self.args, hidden_states=hidden, **self.kwargs)
        return block_output(output)

    def tensors(self) -> list[torch.Tensor]:
        """The tensors the call holds (a mask, position embeddings, ...), to count the memory they keep."""
        found = []
        for value in (*self.args, *self.kwargs.values()):
            values = value if isinstance(value, (tuple, list)) else (value,)
            found.extend(v for v in values if isinstance(v, torch.Tensor))
        return found


def block_output(output) -> torch.Tensor:
    """A block's output hidden state (blocks return it alone or first in a tuple)."""
    return output[0] if isinstance(output, tuple) else output
