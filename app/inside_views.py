"""What the pages inside a head, inside an MLP and of information flow show: tables from the library and their
charts, cached.

Each reads the shared cached capture (no new forward pass: the library rebuilds a block's insides from it)
and is cached per setting for every student, so changing a view back and forth reruns nothing, and a second
student's view builds no chart.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

import opt_lens
from app import charts, tables
from app.caches import cached_capture, shared_chart, shared_model, shared_result
from app.causal_views import token_text
from app.tables import token_labels

TOP_TOKENS = 10  # promoted and suppressed tokens listed for a head or a neuron
TOP_NEURONS = 8
FLOW_COLORS = alt.Scale(domain=["attention", "mlp", "residual"], range=["#4c78a8", "#e45756", "#bab0ac"])


def _run(name: str, prompt: str):
    return shared_model(name, ui=False), cached_capture(name, prompt, ui=False)


@shared_result(max_entries=64, spinner=lambda name, prompt, layer, head, query: f"Computing head L{layer}.H{head} of "
               f"{name} step by step at position {query}…")
def steps_table(name: str, prompt: str, layer: int, head: int, query: int) -> tuple[pd.DataFrame, float, float]:
    """One row per key of ``attention_steps``: score, scaled, mask, attention, and the sizes of the value and
    the weighted value; with the scaling and the size of what the head adds to the residual stream."""
    lm, cap = _run(name, prompt)
    steps = opt_lens.attention_steps(lm, cap, layer, head, query)
    table = pd.DataFrame({
        "position": steps.keys.tolist(),
        "token": [cap.tokens[k] for k in steps.keys.tolist()],
        "score q·k": steps.scores.tolist(),
        "scaled": steps.scaled.tolist(),
        "mask": steps.mask.tolist(),
        "attention": steps.probs.tolist(),
        "value size": steps.values.norm(dim=-1).tolist(),
        "weighted value size": steps.weighted.norm(dim=-1).tolist(),
    })
    return table, steps.scaling, float(steps.output.norm())


@shared_chart
def steps_chart(name: str, prompt: str, layer: int, head: int, query: int) -> alt.FacetChart:
    """A bar per key of ``steps_table``: the scaled scores, then the attention softmax makes of them."""
    table = steps_table(name, prompt, layer, head, query)[0]
    long = table.melt(id_vars=["position", "token"], value_vars=["scaled", "attention"], var_name="step")
    # Facets in the order of the steps: the scaled scores (2), then the attention softmax makes of them (4).
    return (alt.Chart(long).mark_bar().encode(
        x=alt.X("position:O", axis=alt.Axis(labelOverlap=True, labelAngle=0)), y=alt.Y("value:Q", title=None),
        color=alt.Color("step:N", legend=None), tooltip=["position", "token", alt.Tooltip("value:Q", format=".3f")],
    ).properties(height=160).facet(row=alt.Row("step:N", title=None, sort=["scaled", "attention"]))
        .resolve_scale(y="independent"))


def query_map_window(seq_len: int, query: int) -> tables.AttentionWindow:
    """The 24 rows around ``query`` that the map inside a head shows; as columns the first token too (where idle
    heads rest: a window without it hid most of a row's attention)."""
    first = max(0, min(query - 11, seq_len - 24))
    return tables.attention_window(first, min(seq_len, first + 24) - 1, [])


@shared_chart
def query_map_chart(name: str, prompt: str, layer: int, head: int, window: tables.AttentionWindow) -> charts.ChartSpec:
    """Head L.H's map in ``window``, with each row's rest, so that every row sums to 1 as the steps do; a click
    on a row selects its query (selection ``row``)."""
    cap = cached_capture(name, prompt, ui=False)
    pattern = tables.attention_window_frame(cap, layer, head, window)
    return charts.attention_heatmap(pattern, token_labels(cap)[window.first : window.last + 1],
                                    f"{name} · L{layer}.H{head}: click a row to pick the query",
                                    tables.window_columns(cap, window), charts.point_selection("row", ["query"]))


def refusal(lm, name: str, error: Exception, why: str) -> str:
    """What a page says where the library refuses a view. On a post-LN model the library's reason speaks of
    direct logit attribution, which the pages never named: there, why this view has no read-out, in its words."""
    if lm.arch.norm == "post":
        return f"{name} normalises the residual stream after every block (post-LN): {why}"
    return f"{name}: {error}"


def _top_tokens(tokenizer, logits, k: int = TOP_TOKENS) -> tuple[list[str], list[float], list[str], list[float]]:
    up, down = logits.topk(k), (-logits).topk(k)
    return ([token_text(tokenizer, i) for i in up.indices.tolist()], up.values.tolist(),
            [token_text(tokenizer, i) for i in down.indices.tolist()], (-down.values).tolist())


def _written_frame(tokenizer, logits) -> pd.DataFrame:
    promoted, up, suppressed, down = _top_tokens(tokenizer, logits)
    return pd.DataFrame({"token": promoted + suppressed, "effect on the logit": up + down,
                         "direction": ["promoted"] * len(up) + ["suppressed"] * len(down)})


@shared_result(max_entries=64, spinner=lambda name, prompt, layer, head, position: f"Reading what head L{layer}.H{head} "
               f"of {name} writes, through the output head…")
def head_writes(name: str, prompt: str, layer: int, head: int, position: int) -> pd.DataFrame:
    """The tokens head L.H pushes up and down most at ``position`` (``head_logits``)."""
    lm, cap = _run(name, prompt)
    return _written_frame(lm.tokenizer, opt_lens.head_logits(lm, cap, layer, head, position))


@shared_chart
def written_chart(name: str, prompt: str, layer: int, head: int, position: int) -> alt.Chart:
    """``head_writes`` as bars, promoted in blue, suppressed in red."""
    written = head_writes(name, prompt, layer, head, position)
    return alt.Chart(written).mark_bar().encode(
        # Every bar's token named: Vega hid every other label as overlapping.
        y=alt.Y("token:N", sort="-x", title=None, axis=alt.Axis(labelOverlap=False)), x=alt.X("effect on the logit:Q"),
        color=alt.Color("direction:N", scale=alt.Scale(domain=["promoted", "suppressed"], range=["#4c78a8", "#e45756"])),
        tooltip=["token", alt.Tooltip("effect on the logit:Q", format=".3f")],
    ).properties(height=22 * len(written))


@shared_result(max_entries=64, spinner=lambda name, prompt, layer, position: f"Rebuilding the MLP of layer {layer} of "
               f"{name} and reading its most active neurons…")
def top_neurons(name: str, prompt: str, layer: int, position: int) -> pd.DataFrame:
    """The most active neurons of an MLP layer at ``position``, each with the tokens it pushes up and down (None
    where the model has no linear read-out of a neuron: a post-LN model)."""
    lm, cap = _run(name, prompt)
    acts = opt_lens.neurons(lm, cap, layer, position)
    top = acts.topk(min(TOP_NEURONS, acts.numel()))
    rows = {"neuron": top.indices.tolist(), "activation": top.values.tolist()}
    try:
        logits = opt_lens.neuron_logits(lm, cap, layer, top.indices.tolist(), position)  # [neuron, vocab]
    except opt_lens.OptLensError:
        return pd.DataFrame(rows)
    tops = [_top_tokens(lm.tokenizer, row, 5) for row in logits]
    rows["promotes"] = [" ".join(t[0]) for t in tops]
    rows["suppresses"] = [" ".join(t[2]) for t in tops]
    return pd.DataFrame(rows)


@shared_chart
def top_neurons_chart(name: str, prompt: str, layer: int, position: int) -> alt.Chart:
    """``top_neurons`` as bars, a click on one selecting its neuron (selection ``cell``)."""
    top = top_neurons(name, prompt, layer, position)
    picked = alt.selection_point(name="cell", fields=["neuron"], on="click")
    return alt.Chart(top).mark_bar(color="#4c78a8").encode(
        y=alt.Y("neuron:N", sort="-x"), x="activation:Q", tooltip=list(top.columns)).add_params(picked)


@shared_result(max_entries=64, spinner=lambda name, prompt, layer, neuron: f"Following neuron {neuron} of layer {layer} "
               f"of {name} across the prompt…")
def neuron_trace(name: str, prompt: str, layer: int, neuron: int) -> pd.DataFrame:
    lm, cap = _run(name, prompt)
    acts = opt_lens.inside.neuron_activations(lm, cap, layer, neuron)
    return pd.DataFrame({"position": range(cap.seq_len), "token": token_labels(cap), "activation": acts.tolist()})


@shared_chart
def neuron_trace_chart(name: str, prompt: str, layer: int, neuron: int) -> alt.Chart:
    """``neuron_trace`` as a bar per token, in prompt order."""
    trace = neuron_trace(name, prompt, layer, neuron)
    return alt.Chart(trace).mark_bar(color="#e45756").encode(
        x=alt.X("token:N", sort=token_labels(cached_capture(name, prompt, ui=False)),
                axis=alt.Axis(labelAngle=-60, labelOverlap=True)),
        y="activation:Q", tooltip=["token", alt.Tooltip("activation:Q", format=".3f")],
    ).properties(title=f"Neuron {neuron} of layer {layer} across the prompt")


@shared_result(max_entries=64, spinner=lambda name, prompt, threshold: f"Following the information in {name} back from "
               "its prediction, layer by layer…")
def flow_frames(name: str, prompt: str, threshold: float) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The flow graph of the last position's prediction as (nodes, edges) for a chart, and the predicted token."""
    lm, cap = _run(name, prompt)
    graph = opt_lens.flow_graph(lm, cap, threshold=threshold)
    labels = token_labels(cap)
    nodes = pd.DataFrame([{"depth": n.depth, "position": n.position, "token": labels[n.position],
                           "state": n.stage if n.stage != "block" else f"after block {n.layer}"} for n in graph.nodes])
    edges = pd.DataFrame([{
        "x": e.source.depth, "x2": e.target.depth, "from": labels[e.source.position], "to": labels[e.target.position],
        "kind": e.kind, "layer": e.target.layer, "head": -1 if e.head is None else e.head, "weight": e.weight,
        "what": f"L{e.target.layer}.H{e.head}" if e.kind == "attention" else e.kind,
    } for e in graph.edges])
    return nodes, edges, token_text(lm.tokenizer, graph.token_id)


DEPTH_LABEL = ("datum.value == 0 ? 'embeddings' : datum.value % 2 == 1 ? 'L' + (datum.value - 1) / 2 + ' attention' "
               ": 'after L' + (datum.value - 2) / 2")


def flow_chart(nodes: pd.DataFrame, edges: pd.DataFrame, order: list[str], title: str, subtitle: str) -> alt.LayerChart:
    """Left to right by depth (embeddings, then each block after attention and after the MLP), tokens down in
    prompt order; an MLP's contribution is a red square between the two states it joins (its edge would hide
    the residual's). Fits half a laptop's width: legend on top, depths named on the ticks, title on two lines."""
    depths = list(range(int(nodes.depth.max()) + 1))
    x = alt.X("x:Q", title=None, scale=alt.Scale(domain=[0, depths[-1]]),
              axis=alt.Axis(values=depths, labelExpr=DEPTH_LABEL, labelAngle=-45, labelOverlap=False))
    # The tokens as an explicit domain: a sort list per layer (from, token) was dropped when Vega merged the
    # layers' scales, which put "26 ␣lamp" above "3 na" (string order).
    shown = [label for label in order if label in set(nodes.token)]
    y = alt.Y("from:N", scale=alt.Scale(domain=shown), title=None, axis=alt.Axis(labelOverlap=False))
    tooltip = ["what", "from", "to", alt.Tooltip("weight:Q", format=".3f")]
    picked = alt.selection_point(name="picked", fields=["layer", "head"], on="click")
    lines = (
        alt.Chart(edges).transform_filter(alt.datum.kind != "mlp").mark_rule(opacity=0.7)
        .encode(x=x, x2="x2:Q", y=y, y2="to:N",
                # Two columns: in a row the three kinds were cut to "residua" in half a laptop's width.
                color=alt.Color("kind:N", scale=FLOW_COLORS, title=None, legend=alt.Legend(orient="top", columns=2)),
                strokeWidth=alt.StrokeWidth("weight:Q", scale=alt.Scale(domain=[0, 1], range=[1, 10]), legend=None),
                tooltip=tooltip)
        .add_params(picked)
    )
    mlps = (
        alt.Chart(edges).transform_filter(alt.datum.kind == "mlp").transform_calculate(middle="(datum.x + datum.x2) / 2")
        .mark_square(color="#e45756", opacity=0.8)
        .encode(x="middle:Q", y=y, size=alt.Size("weight:Q", scale=alt.Scale(domain=[0, 1], range=[10, 300]),
                                                  legend=None), tooltip=tooltip)
    )
    dots = (
        alt.Chart(nodes).mark_circle(size=50, color="#333")
        .encode(x=alt.X("depth:Q"), y=alt.Y("token:N", scale=alt.Scale(domain=shown)), tooltip=["token", "state"])
    )
    return (lines + mlps + dots).properties(title=alt.Title(title, subtitle=subtitle),
                                            height=max(260, 140 + 26 * len(shown)))


@shared_chart
def routes_chart(name: str, prompt: str, threshold: float) -> alt.LayerChart:
    """``flow_frames`` as a ``flow_chart``, a click on an attention edge selecting its head (selection
    ``picked``)."""
    nodes, edges, predicted = flow_frames(name, prompt, threshold)
    return flow_chart(nodes, edges, token_labels(cached_capture(name, prompt, ui=False)), name,
                      f"routes to the prediction “{predicted}”")
