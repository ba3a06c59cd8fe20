"""Information flow routes (Ferrando & Voita, 2024, "Information flow routes: automatically interpreting
language models at scale"): the graph of the contributions that matter to one prediction.

The residual stream at each position is a chain of states: the embeddings, then after each block's
attention and after each block. Each state is a sum of parts: after attention, the previous state, one
part per (head, key token) ``probs[head, query, key] * W_O[head] v[head, key]`` and the output
projection's bias; after the MLP, the state after attention and the MLP's output. A part's contribution to
the state ``y`` it adds up to is its proximity to ``y`` (the measure of Ferrando & Voita, after ALTI):

    contribution(part) = max(0, -||y - part||_1 + ||y||_1),  normalised to sum to 1 over y's parts.

The graph starts at the predicted position's last state and walks back layer by layer, keeping an edge
only where its contribution exceeds ``threshold``; the nodes it reaches are expanded in turn. Everything is
computed from the capture (``inside.layer_inside``), with no new forward pass; post-LN models are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .capturing import Capture
from .attribution import require_pre_ln
from .errors import OptLensError
from .inside import LayerInside, checked, head_values, layer_inside
from .lens import checked_position

EDGE_KINDS = ("attention", "residual", "mlp")


@dataclass(frozen=True, order=True)
class FlowNode:
    """A state of the residual stream: ``depth`` 0 is the embeddings, ``2 * l + 1`` block ``l`` after its
    attention, ``2 * l + 2`` after the whole block (``Capture.resid[l + 1]``)."""

    depth: int
    position: int

    @property
    def layer(self) -> int:
        """The block the state belongs to (-1 for the embeddings)."""
        return (self.depth - 1) // 2

    @property
    def stage(self) -> str:
        return "embeddings" if self.depth == 0 else "attention" if self.depth % 2 else "block"


@dataclass(frozen=True)
class FlowEdge:
    source: FlowNode
    target: FlowNode
    kind: str  # one of EDGE_KINDS
    head: int | None  # the head of an attention edge
    weight: float  # the normalised contribution of the source's part to the target


@dataclass(frozen=True)
class Contributions:
    """The parts one node's state is the sum of, and each part's normalised contribution."""

    node: FlowNode
    kinds: list[str]  # "residual", "attention", "mlp" or "bias"
    positions: torch.Tensor  # [part]: the token each part comes from (-1: the bias, which comes from none)
    heads: torch.Tensor  # [part]: an attention part's head (-1 for the others)
    vectors: torch.Tensor  # [part, d_model]: they sum to the node's state
    weights: torch.Tensor  # [part]: proximity to the state, normalised to sum to 1

    def source(self, part: int) -> FlowNode | None:
        """The node part ``part`` comes from (the state one step shallower), or None for the bias."""
        position = int(self.positions[part])
        return FlowNode(self.node.depth - 1, position) if position >= 0 else None


@dataclass(frozen=True)
class FlowGraph:
    position: int
    token_id: int  # the model's prediction at ``position``
    threshold: float
    nodes: list[FlowNode]
    edges: list[FlowEdge]  # the kept edges
    # For every node expanded: the total contribution of its kept edges and of the parts pruned (the bias
    # included); the two add up to 1.
    kept: dict[FlowNode, float] = field(default_factory=dict)
    pruned: dict[FlowNode, float] = field(default_factory=dict)


def proximity(parts: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """``[part]``: the normalised contributions of ``parts`` ``[part, d_model]`` to ``total`` ``[d_model]``."""
    raw = (total.abs().sum() - (total - parts).abs().sum(-1)).clamp(min=0)  # [part]
    return raw / raw.sum().clamp(min=torch.finfo(raw.dtype).tiny)


def _attention_parts(lm, cap: Capture, inside: LayerInside, row: int, moved: torch.Tensor) -> Contributions:
    """The parts of the state after attention at ``inside.positions[row]``; ``moved`` ``[head, seq, d_model]``
    is what each head writes from each key (its value through its slice of the output projection)."""
    layer, query = inside.layer, int(inside.positions[row])
    n_heads, keys = moved.shape[0], query + 1
    per_key = inside.probs[:, row, :keys, None] * moved[:, :keys]  # [head, key, d_model]
    x = cap.resid[layer, query]  # [d_model]
    vectors = torch.cat([x[None], per_key.reshape(-1, x.shape[0]), inside.attn_bias[None]])  # [part, d_model]
    none = torch.tensor([-1])
    positions = torch.cat([torch.tensor([query]), torch.arange(keys).repeat(n_heads), none])  # [part]
    heads = torch.cat([none, torch.arange(n_heads).repeat_interleave(keys), none])  # [part]
    kinds = ["residual"] + ["attention"] * (n_heads * keys) + ["bias"]
    node = FlowNode(2 * layer + 1, query)
    return Contributions(node, kinds, positions, heads, vectors, proximity(vectors, inside.mid[row]))


def _mlp_parts(lm, cap: Capture, inside: LayerInside, row: int) -> Contributions:
    """The parts of the state after the block at ``inside.positions[row]``: the state after attention, the MLP."""
    layer, position = inside.layer, int(inside.positions[row])
    vectors = torch.stack([inside.mid[row], inside.mlp[row]])  # [2, d_model]
    return Contributions(FlowNode(2 * layer + 2, position), ["residual", "mlp"], torch.tensor([position, position]),
                         torch.tensor([-1, -1]), vectors, proximity(vectors, vectors.sum(0)))


def node_contributions(lm, cap: Capture, node: FlowNode) -> Contributions:
    """The parts of one node's state and their contributions (what ``flow_graph`` prunes)."""
    require_pre_ln(lm.arch)
    if not 1 <= node.depth <= 2 * lm.arch.n_layers:
        raise OptLensError(f"Node depths run from 1 to {2 * lm.arch.n_layers} in this model (0 has no parts).")
    inside = layer_inside(lm, cap, node.layer, [node.position])
    if node.stage == "block":
        return _mlp_parts(lm, cap, inside, 0)
    return _attention_parts(lm, cap, inside, 0, _moved(lm, inside, node.position + 1))


def _moved(lm, inside: LayerInside, keys: int) -> torch.Tensor:
    """``[head, key, d_model]``: each head's value at keys ``0..keys-1`` through its slice of the output projection."""
    with torch.inference_mode():
        return torch.matmul(head_values(lm, inside)[:, :keys], inside.w_o)


def flow_graph(lm, cap: Capture, position: int = -1, threshold: float = 0.04) -> FlowGraph:
    """The information flow graph of the prediction at ``position``: the edges whose contribution to the node
    they enter exceeds ``threshold``, found from the last state at ``position`` back to the embeddings."""
    require_pre_ln(lm.arch)
    checked(lm, cap)
    if not 0.0 <= threshold < 1.0:
        raise OptLensError(f"The threshold is a share of a node's update, between 0 and 1, not {threshold}.")
    position = checked_position(position, cap.seq_len)
    walk = _Walk(threshold, {2 * lm.arch.n_layers: {position}})
    for layer in reversed(range(lm.arch.n_layers)):
        # A state after attention is only reached from the state after its own block, at the same position: one
        # rebuild of the block at the positions reached after it serves both.
        positions = sorted(walk.frontier.get(2 * layer + 2, ()))
        if not positions:
            break
        inside = layer_inside(lm, cap, layer, positions)
        for row in range(len(positions)):
            walk.expand(_mlp_parts(lm, cap, inside, row))
        reached = walk.frontier.get(2 * layer + 1, set())
        moved = _moved(lm, inside, max(reached) + 1) if reached else None
        for row in (row for row, p in enumerate(positions) if p in reached):
            walk.expand(_attention_parts(lm, cap, inside, row, moved))
    nodes = sorted({FlowNode(2 * lm.arch.n_layers, position)} | {e.source for e in walk.edges} | {e.target for e in walk.edges})
    token_id = int(cap.next_logits.argmax()) if position == cap.seq_len - 1 else int(cap.logits[position].argmax())
    return FlowGraph(position, token_id, threshold, nodes, walk.edges, walk.kept, walk.pruned)


@dataclass
class _Walk:
    """The graph as the walk back from the prediction builds it: the positions reached at each depth."""

    threshold: float
    frontier: dict[int, set[int]]
    edges: list[FlowEdge] = field(default_factory=list)
    kept: dict[FlowNode, float] = field(default_factory=dict)
    pruned: dict[FlowNode, float] = field(default_factory=dict)

    def expand(self, parts: Contributions) -> None:
        node_edges = _kept_edges(parts, self.threshold)
        self.edges += node_edges
        self.kept[parts.node] = sum(edge.weight for edge in node_edges)
        self.pruned[parts.node] = float(parts.weights.sum()) - self.kept[parts.node]
        self.frontier.setdefault(parts.node.depth - 1, set()).update(edge.source.position for edge in node_edges)


def _kept_edges(parts: Contributions, threshold: float) -> list[FlowEdge]:
    keep = (parts.weights > threshold).nonzero()[:, 0].tolist()
    return [
        FlowEdge(parts.source(i), parts.node, parts.kinds[i], int(parts.heads[i]) if parts.heads[i] >= 0 else None,
                 float(parts.weights[i]))
        for i in keep
        if parts.kinds[i] != "bias"
    ]
