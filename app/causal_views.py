"""What the Cause and effect page draws: interventions' results (tensors) turned into tables and charts.

Pure functions: tensors in, pandas frames and Altair charts out. The page's cached runs call opt_lens; these
only reshape what it returned, so every number drawn is one the library computed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import altair as alt
import pandas as pd
import torch

from opt_lens.tokens import display_tokens

from app.charts import layer_head_axes
from app.text import escape_markdown, head_label, mlp_label

_HEAD_LABEL = re.compile(r"L(\d{1,3})\.H(\d{1,3})")
_MLP_LABEL = re.compile(r"MLP ([1-9]\d{0,2}|0)")
_NEURON_LABEL = re.compile(r"L([1-9]\d{0,2}|0)\.N([1-9]\d{0,5}|0)")
MAX_NEURONS = 32  # a box of neuron labels knocks out at most this many (a link may name any number)
# Diverging maps: red where an intervention lowers the measure, blue where it raises it, white at 0.
DIVERGING = "redblue"


# ----------------------------------------------------------------------------------------------- heads


def head_options(n_layers: int, n_heads: int) -> list[str]:
    return [head_label(layer, head) for layer in range(n_layers) for head in range(n_heads)]


def parse_heads(labels, n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    """The (layer, head) pairs of labels such as ``["L1.H1"]``; anything else (it may come from a URL) is dropped."""
    heads = []
    for label in labels or ():
        match = _HEAD_LABEL.fullmatch(str(label))
        if match and int(match[1]) < n_layers and int(match[2]) < n_heads:
            heads.append((int(match[1]), int(match[2])))
    return sorted(set(heads))


def mlp_options(n_layers: int) -> list[str]:
    return [mlp_label(layer) for layer in range(n_layers)]


def parse_mlps(labels, n_layers: int) -> list[int]:
    """The MLP layers of labels such as ``["MLP 1"]``; anything else (it may come from a URL) is dropped."""
    return sorted({int(match[1]) for label in labels or () if (match := _MLP_LABEL.fullmatch(str(label)))
                   and int(match[1]) < n_layers})


def parse_neurons(text: str, n_layers: int, d_mlp: int) -> tuple[tuple[tuple[int, int], ...], str | None]:
    """The (layer, neuron) pairs of a box of labels such as ``"L1.N37, L0.N5"``, and a note naming what was
    ignored (it may come from a URL): anything not a label of this model, and labels beyond ``MAX_NEURONS``."""
    words = [word for word in re.split(r"[\s,;]+", str(text or "")) if word]
    neurons, ignored = [], []
    for word in words:
        match = _NEURON_LABEL.fullmatch(word)
        if match and int(match[1]) < n_layers and int(match[2]) < d_mlp and len(set(neurons)) < MAX_NEURONS:
            neurons.append((int(match[1]), int(match[2])))
        else:
            ignored.append(word)
    if not ignored:
        return tuple(sorted(set(neurons))), None
    shown = ", ".join(f"“{escape_markdown(word[:20])}”" for word in ignored[:3]) + (" …" if len(ignored) > 3 else "")
    return tuple(sorted(set(neurons))), (
        f"Ignored {shown}: this model has layers 0-{n_layers - 1} and neurons 0-{d_mlp - 1} (L1.N37: neuron 37 "
        f"of layer 1), at most {MAX_NEURONS} at once.")


def grid_frame(values: torch.Tensor, value: str) -> pd.DataFrame:
    """A ``[n_layers, n_heads]`` map as one row per head: layer, head, its label and the value."""
    n_layers, n_heads = values.shape
    return pd.DataFrame([
        {"layer": layer, "head": head, "name": head_label(layer, head), value: float(values[layer, head])}
        for layer in range(n_layers) for head in range(n_heads)
    ])


# ----------------------------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class Answer:
    """An answer typed as text, mapped through one model's tokenizer: its id, or why it has none."""

    text: str
    token_id: int | None
    pieces: list[str]  # how the tokenizer cuts the text, readable

    @property
    def problem(self) -> str | None:
        if self.token_id is not None:
            return None
        if not self.pieces:
            return "The answer is empty: type the token, usually with its leading space, such as “ Mary”."
        return (f"“{self.text}” is {len(self.pieces)} tokens for this model ({' + '.join(self.pieces)}), "
                "not one: the views measure a single next token.")


def answer_token(tokenizer, text: str) -> Answer:
    """``text`` as one token of this tokenizer (added specials such as OPT's ``</s>`` excluded)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
    pieces = display_tokens(tokenizer, ids)
    return Answer(text, ids[0] if len(ids) == 1 else None, pieces)


def token_text(tokenizer, token_id: int) -> str:
    return display_tokens(tokenizer, [int(token_id)])[0]


# ------------------------------------------------------------------------------------------- knock-out


def predictions_frame(tokenizer, before: torch.Tensor, after: torch.Tensor, k: int) -> pd.DataFrame:
    """Next-token guesses before and after the knock-out, side by side: each run's own top k.

    ``before`` and ``after`` are the ``[vocab]`` logits at the last position; the change column gives how much
    the knock-out moved the probability of each of the original guesses.
    """
    p_before, p_after = torch.softmax(before.double(), -1), torch.softmax(after.double(), -1)  # [vocab]
    top_before, top_after = torch.topk(p_before, k).indices.tolist(), torch.topk(p_after, k).indices.tolist()
    shown_before, shown_after = display_tokens(tokenizer, top_before), display_tokens(tokenizer, top_after)
    return pd.DataFrame({
        "rank": range(1, k + 1),
        "before": shown_before,
        "p before": [float(p_before[i]) for i in top_before],
        "same token after": [float(p_after[i]) for i in top_before],
        "after": shown_after,
        "p after": [float(p_after[i]) for i in top_after],
    })


def loss_frame(labels: list[str], before: torch.Tensor, after: torch.Tensor | None) -> pd.DataFrame:
    """Per-token loss (nats), long format: one row per predicted token and run.

    ``labels`` name the prompt's tokens; ``before``/``after`` are ``[seq - 1]``: entry t is the loss of
    predicting token t + 1 from tokens 0..t.
    """
    labels = labels[1:]
    runs = [("before", before)] + ([("after", after)] if after is not None else [])
    return pd.DataFrame([
        {"position": t + 1, "token": labels[t], "run": run, "loss": float(loss[t])}
        for run, loss in runs for t in range(len(labels))
    ])


def half_means(loss: torch.Tensor) -> tuple[float, float]:
    """Mean loss over the first and the second half of the predicted tokens (for a text written twice,
    the second half is the second copy)."""
    half = loss.shape[0] // 2
    return float(loss[:half].mean()), float(loss[half:].mean())


# Up to this many predicted tokens the loss chart names each on its axis; beyond, the labels would overlap into
# a grey smear (a thousand in a 564-px column), so the axis counts positions and the tooltip names the token.
LABELLED_LOSSES = 40


def loss_chart(frame: pd.DataFrame, title: str) -> alt.Chart:
    order = list(dict.fromkeys(frame["token"]))
    if len(order) <= LABELLED_LOSSES:
        x = alt.X("token:N", sort=order, title="token being predicted (position, token)",
                  axis=alt.Axis(labelAngle=-60, labelOverlap=False))
    else:
        x = alt.X("position:Q", title="position of the token being predicted (hover for the token)",
                  scale=alt.Scale(domain=[1, int(frame["position"].max())], nice=False),
                  axis=alt.Axis(format="d", tickMinStep=1, labelAngle=0))
    return (
        alt.Chart(frame)
        # A thousand full-size dots would hide the line: small ones still carry the tooltip.
        .mark_line(point=True if len(order) <= LABELLED_LOSSES else alt.OverlayMarkDef(size=8))
        .encode(
            x=x,
            y=alt.Y("loss:Q", title="loss (nats)"),
            color=alt.Color("run:N", title="run", scale=alt.Scale(domain=["before", "after"],
                                                                    range=["#4c78a8", "#e45756"])),
            tooltip=["token", "run", alt.Tooltip("loss:Q", format=".3f")],
        )
        .properties(title=title, height=260)
    )


# -------------------------------------------------------------------------------------------- maps


def symmetric_limit(*frames_and_columns) -> float:
    """The largest |value| over (frame, column) pairs: a diverging scale from -limit to +limit, 0 in the middle."""
    values = [frame[column].abs().max() for frame, column in frames_and_columns if not frame.empty]
    return max([float(v) for v in values if pd.notna(v)] + [1e-6])


def head_map(frame: pd.DataFrame, value: str, title: str, limit: float, *, clickable: bool = False,
             marked: list[tuple[int, int]] = ()) -> alt.Chart:
    """Layers x heads, coloured on a diverging scale centred on 0 (shared ``limit`` for comparable maps)."""
    is_marked = alt.datum.layer < 0  # always false: no head marked
    for layer, head in marked:
        is_marked = is_marked | ((alt.datum.layer == layer) & (alt.datum.head == head))
    chart = (
        alt.Chart(frame)
        .mark_rect()
        .encode(
            **layer_head_axes(),
            color=alt.Color(f"{value}:Q", title=value,
                            scale=alt.Scale(scheme=DIVERGING, domain=[-limit, limit], domainMid=0, clamp=True)),
            stroke=alt.condition(is_marked, alt.value("black"), alt.value("white")),
            strokeWidth=alt.condition(is_marked, alt.value(3), alt.value(1)),
            tooltip=["name", "layer", "head", alt.Tooltip(f"{value}:Q", format=".3f")],
        )
        .properties(title=title, height=max(200, 30 * _rows(frame) + 80))
    )
    if clickable:
        chart = chart.add_params(alt.selection_point(name="picked", fields=["layer", "head"], on="click"))
    return chart


def _rows(frame: pd.DataFrame) -> int:
    """How many layers a map draws (its height grows with them; the axes and legend need ~80 px besides)."""
    return int(frame["layer"].max()) + 1 if not frame.empty else 1


def resid_patch_frame(values: torch.Tensor, labels: list[str]) -> pd.DataFrame:
    """``[n_layers + 1, seq]`` patching results as rows: row 0 is the embeddings, row i after block i;
    ``labels`` name the positions."""
    rows, seq = values.shape
    return pd.DataFrame([
        {"layer": layer, "stream": "embeddings" if layer == 0 else f"after block {layer - 1}",
         "position": labels[p], "restored": float(values[layer, p])}
        for layer in range(rows) for p in range(seq)
    ])


def resid_patch_chart(frame: pd.DataFrame, order: list[str], title: str, limit: float = 1.0) -> alt.Chart:
    return (
        alt.Chart(frame)
        .mark_rect()
        .encode(
            x=alt.X("position:N", sort=order, title="position patched (corrupted prompt's token)",
                    axis=alt.Axis(labelAngle=-60, labelOverlap=False)),
            y=alt.Y("layer:O", sort="descending", title="stream (0 = embeddings)"),
            color=alt.Color("restored:Q", title="fraction of the clean effect",
                            scale=alt.Scale(scheme=DIVERGING, domain=[-limit, limit], domainMid=0, clamp=True)),
            tooltip=["stream", "position", alt.Tooltip("restored:Q", format=".3f")],
        )
        .properties(title=title, height=30 * _rows(frame) + 230)  # the slanted token labels take ~120 px
    )


# ------------------------------------------------------------------------------------------ attribution


def attribution_parts(attribution) -> pd.DataFrame:
    """Everything but the heads, as bars: embeddings, each MLP, and the biases (``rest``)."""
    rows = [{"part": "embeddings", "order": 0, "logit": float(attribution.embed)}]
    rows += [{"part": mlp_label(layer), "order": layer + 1, "logit": float(value)}
             for layer, value in enumerate(attribution.mlps.tolist())]
    rows.append({"part": "biases (rest)", "order": len(rows), "logit": float(attribution.rest)})
    return pd.DataFrame(rows)


def attribution_sum(attribution) -> float:
    """embed + every head + every MLP + rest: what the page shows equals ``attribution.logit``."""
    return (float(attribution.embed) + float(attribution.heads.double().sum()) + float(attribution.mlps.double().sum())
            + float(attribution.rest))


def parts_chart(frame: pd.DataFrame, title: str, limit: float, value: str = "logit",
                axis_title: str = "writes toward the token's logit") -> alt.Chart:
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            # Every bar named: Vega drops labels it finds crowded, and the projector's larger type left
            # the MLP bars unnamed; rows tall enough for that type keep the names apart.
            y=alt.Y("part:N", sort=alt.EncodingSortField("order"), title=None, axis=alt.Axis(labelOverlap=False)),
            x=alt.X(f"{value}:Q", title=axis_title, scale=alt.Scale(domain=[-limit, limit], clamp=True)),
            color=alt.condition(alt.datum[value] >= 0, alt.value("#4c78a8"), alt.value("#e45756")),
            tooltip=["part", alt.Tooltip(f"{value}:Q", format=".3f")],
        )
        .properties(title=title, height=40 * len(frame) + 80)
    )


def attribution_difference(for_answer, for_wrong, clean_effect: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What each part writes toward logit(answer) - logit(wrong), as a fraction of the clean effect: the heads
    as a map's rows, the embeddings, MLPs and biases as bars (both with a ``fraction`` column)."""
    heads = grid_frame(fraction_of_clean(for_answer.heads - for_wrong.heads, clean_effect), "fraction")
    parts = attribution_parts(for_answer)
    parts["fraction"] = (parts["logit"] - attribution_parts(for_wrong)["logit"]) / clean_effect
    return heads, parts.drop(columns="logit")


# ---------------------------------------------------------------------------------------------- patching

@dataclass(frozen=True)
class PatchingPreset:
    """Two prompts that differ in one place, the token the clean one calls for and the one the corrupted one does."""

    clean: str
    corrupted: str
    answer: str
    wrong: str


PATCHING_PRESETS = {
    "Copying (works on the demo models)": PatchingPreset(
        "one red cat cake seven green hat, one red cat", "one red cat milk seven green hat, one red cat",
        " cake", " milk"),
    "Indirect object (GPT-2, OPT)": PatchingPreset(
        "When Mary and John went to the store, John gave a drink to",
        "When Mary and John went to the store, Mary gave a drink to", " Mary", " John"),
    "Fact recall (GPT-2, OPT)": PatchingPreset(
        "The capital of France is", "The capital of Italy is", " Paris", " Rome"),
}
# A clean and corrupted logit difference closer than this leave nothing to restore: fractions would be noise.
MIN_CLEAN_EFFECT = 0.1


def pair_labels(clean_tokens: list[str], corrupted_tokens: list[str]) -> list[str]:
    """Position labels for two prompts of equal length: "5 ␣John" where they agree, "5 ␣John / ␣Mary" where not."""
    return [f"{i} {a}" if a == b else f"{i} {a} / {b}" for i, (a, b) in enumerate(zip(clean_tokens, corrupted_tokens))]


MISMATCH_TOKENS_SHOWN = 6


def length_mismatch(model_name: str, clean_tokens: list[str], corrupted_tokens: list[str]) -> str | None:
    """The plain message for prompts that tokenize to different lengths, or None."""
    if len(clean_tokens) == len(corrupted_tokens):
        return None
    pairs = zip(clean_tokens, corrupted_tokens)
    first = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(clean_tokens), len(corrupted_tokens)))

    def from_first(tokens: list[str]) -> str:  # where they part, not the whole prompt (it may be 2,000 tokens)
        shown = " ".join(tokens[first : first + MISMATCH_TOKENS_SHOWN])
        return (shown or "(the end)") + (" …" if len(tokens) > first + MISMATCH_TOKENS_SHOWN else "")

    return (f"For {model_name} the clean prompt is {len(clean_tokens)} tokens and the corrupted one "
            f"{len(corrupted_tokens)}. They part at token {first}: “{from_first(clean_tokens)}” against "
            f"“{from_first(corrupted_tokens)}”. Patching copies activations position by position, so both prompts "
            "must have the same number of tokens: change a word for one that this model also cuts into the same "
            "number of tokens.")


def fraction_of_clean(values: torch.Tensor, clean_effect: float) -> torch.Tensor:
    """Changes of the logit difference expressed as a fraction of the clean effect (clean minus corrupted)."""
    return values.double() / clean_effect
