"""Two models side by side: the Compare page's whole result and its charts (built once per pair of models and
prompt for every student), and the aligned tokens the Tokens page shows."""

from __future__ import annotations

from dataclasses import dataclass

import altair as alt
import pandas as pd

import opt_lens
from app import architecture_facts
from app.caches import comparison_captures, shared_chart, shared_model, shared_result, tokenized_prompt

# Model A and model B keep these colours on every chart of the Compare page.
COLOR_A, COLOR_B = "#1f77b4", "#e8710a"


@dataclass(frozen=True)
class Comparison:
    tokens: pd.DataFrame
    next_a: pd.DataFrame
    next_b: pd.DataFrame
    agreement: dict
    depth: pd.DataFrame
    head_pairs: pd.DataFrame
    head_tokens: int  # aligned tokens the head patterns were compared on
    aligned_tokens: int


@shared_result(max_entries=32, spinner="Comparing the two models…")
def compare_models(name_a: str, name_b: str, prompt: str, k: int = 10) -> Comparison:
    lm_a, lm_b = shared_model(name_a, ui=False), shared_model(name_b, ui=False)
    cap_a, cap_b = comparison_captures(name_a, name_b, prompt, ui=False)
    alignment = opt_lens.compare.align_tokens(cap_a, cap_b)
    nxt = opt_lens.compare.compare_next_tokens(lm_a, cap_a, lm_b, cap_b, k=k)
    curves = [opt_lens.compare.depth_curve(lm, cap) for lm, cap in ((lm_a, cap_a), (lm_b, cap_b))]
    # Each layer also gets a cell on the common depth scale: from half a layer before it to half a layer after.
    depth = pd.DataFrame([
        {"model": curve.model_name, "depth": d, "layer": i, "probability of final guess": p, "guess": g,
         "from": max(0.0, (i - 0.5) / (len(curve.depth) - 1)), "to": min(1.0, (i + 0.5) / (len(curve.depth) - 1))}
        for curve in curves
        for i, (d, p, g) in enumerate(zip(curve.depth, curve.final_token_prob, curve.top_token))
    ])
    depth["middle"] = (depth["from"] + depth["to"]) / 2
    head_pairs, head_tokens = pd.DataFrame(), 0
    if len(alignment.pairs) >= 2:
        matches = opt_lens.compare.match_heads(cap_a, cap_b, alignment)
        head_tokens = matches.n_tokens
        # Closest first by how much more alike the pair is than either head is to attention spread evenly:
        # two near-uniform heads are alike without sharing a job.
        order = sorted(range(len(matches.heads_a)), key=lambda i: (-matches.above_baseline(i), i))[:12]
        head_pairs = pd.DataFrame([
            {f"head in {name_a}": "L{}.H{}".format(*matches.heads_a[i]),
             f"best match in {name_b}": "L{}.H{}".format(*matches.heads_b[matches.best_b[i]]),
             "similarity": matches.best_score[i],
             "A's head vs uniform": matches.uniform_a[i],
             "B's head vs uniform": matches.uniform_b[matches.best_b[i]],
             "above baseline": matches.above_baseline(i)}
            for i in order
        ])
    return Comparison(
        tokens=_alignment_frame(alignment, name_a, name_b),
        next_a=_guesses(nxt.top_a, nxt.in_both_a),
        next_b=_guesses(nxt.top_b, nxt.in_both_b),
        agreement={"KL(A‖B)": nxt.kl_a_b, "KL(B‖A)": nxt.kl_b_a, "Jensen-Shannon": nxt.js,
                   "top-k overlap": nxt.top_k_overlap, "k": k,
                   "shared vocabulary": nxt.shared_vocabulary, "outside A": nxt.mass_outside_a,
                   "outside B": nxt.mass_outside_b,
                   "settled": {c.model_name: c.settled_depth for c in curves},
                   "final": {c.model_name: c.final_token for c in curves}},
        depth=depth,
        head_pairs=head_pairs,
        head_tokens=head_tokens,
        aligned_tokens=len(alignment.pairs),
    )


BY_BOTH, ONLY_HERE = "by both", "only here"


def _guesses(top: list[tuple[str, float]], in_both: list[bool]) -> pd.DataFrame:
    """One model's top guesses and whether the other model's top list has each: the library's own matching,
    the one its overlap figure counts (a display string would miss that OPT's </s> is GPT-2's <|endoftext|>)."""
    return pd.DataFrame({"token": [token for token, _ in top], "probability": [p for _, p in top],
                         "guessed": [BY_BOTH if both else ONLY_HERE for both in in_both]})


@shared_result(max_entries=32)
def settle_table(name_a: str, name_b: str, prompt: str) -> pd.DataFrame:
    """Per model: its final guess and the depth from which the logit lens already shows it on top."""
    result = compare_models(name_a, name_b, prompt)
    layers = result.depth.groupby("model")["layer"].max()
    return pd.DataFrame([
        {"model": name, "layers": int(layers[name]), "final guess": result.agreement["final"][name],
         "top guess from depth": f"{result.agreement['settled'][name]:.0%}"}
        for name in result.agreement["final"]
    ])


@shared_result(ttl=600, max_entries=32)
def architecture_differences(name_a: str, name_b: str) -> tuple[pd.DataFrame, list[str]]:
    """The architecture facts (``architecture_facts.architecture_table``) where the two models differ, and the
    errors met reading them (kept ten minutes, as the table is: a config the Hub would not give is asked again)."""
    table, _, errors = architecture_facts.architecture_table([name_a, name_b])
    return table[table.nunique(axis=1) > 1], errors


@shared_chart
def next_token_chart(name_a: str, name_b: str, prompt: str, side: str) -> alt.Chart:
    """Model ``side``'s ("A" or "B") top guesses in its colour, faint where the other model's top list lacks them."""
    result = compare_models(name_a, name_b, prompt)
    name, table, color = (name_a, result.next_a, COLOR_A) if side == "A" else (name_b, result.next_b, COLOR_B)
    return (
        alt.Chart(table)
        .mark_bar(color=color)
        .encode(
            x=alt.X("probability:Q", axis=alt.Axis(format="%")),
            y=alt.Y("token:N", sort=None, title=None, axis=alt.Axis(labelOverlap=False)),
            opacity=alt.Opacity("guessed:N", title="in the top 10", scale=alt.Scale(
                domain=[BY_BOTH, ONLY_HERE], range=[1.0, 0.35])),
            tooltip=["token", alt.Tooltip("probability:Q", format=".2%"), alt.Tooltip("guessed:N", title="in the top 10")],
        )
        .properties(title=f"{side}: {name}", height=260)
    )


DEPTH_TITLE = "depth (% of the model's layers passed)"
DEPTH_AXIS = alt.Axis(values=[0, 0.25, 0.5, 0.75, 1], format="%")
DEPTH_TOOLTIP = [alt.Tooltip("model"), alt.Tooltip("depth:Q", format=".0%", title="depth"), "layer", "guess",
                 alt.Tooltip("probability of final guess:Q", format=".2%")]


@shared_chart
def depth_chart(name_a: str, name_b: str, prompt: str) -> alt.Chart:
    """The probability each depth's logit lens gives its model's final guess, one line per model."""
    return (
        alt.Chart(compare_models(name_a, name_b, prompt).depth)
        .mark_line(point=True)
        .encode(
            x=alt.X("depth:Q", title=DEPTH_TITLE, scale=alt.Scale(domain=[0, 1]), axis=DEPTH_AXIS),
            y=alt.Y("probability of final guess:Q", axis=alt.Axis(format="%")),
            color=alt.Color("model:N", scale=alt.Scale(domain=[name_a, name_b], range=[COLOR_A, COLOR_B]),
                            legend=alt.Legend(orient="top", labelLimit=300)),
            tooltip=DEPTH_TOOLTIP,
        )
    )


@shared_chart
def depth_lens_chart(name_a: str, name_b: str, prompt: str) -> alt.Chart:
    """Both logit lenses at the last position as a row of cells per model on the common depth scale: each
    layer's top guess, darker where it gives more probability to the model's final guess."""
    base = alt.Chart(compare_models(name_a, name_b, prompt).depth).encode(
        x=alt.X("from:Q", title=DEPTH_TITLE, scale=alt.Scale(domain=[0, 1]), axis=DEPTH_AXIS),
        x2="to:Q",
        y=alt.Y("model:N", title=None, sort=[name_a, name_b], axis=alt.Axis(
            labelLimit=200, labelFontWeight="bold",
            labelColor=alt.expr(f"datum.label == '{name_a}' ? '{COLOR_A}' : '{COLOR_B}'"))),
        tooltip=DEPTH_TOOLTIP,
    )
    cells = base.mark_rect(stroke="white").encode(
        color=alt.Color("probability of final guess:Q", scale=alt.Scale(scheme="greens", domain=[0, 1]),
                        title="probability of final guess"),
    )
    # A 12-layer model's cells are narrow: Vega cuts each word to its cell, with an ellipsis (the tooltip has it
    # whole).
    words = base.mark_text(fontSize=11, limit=alt.expr("scale('x', datum.to) - scale('x', datum.from) - 4")).encode(
        x=alt.X("middle:Q"), text="guess:N",
        color=alt.condition(alt.datum["probability of final guess"] > 0.5, alt.value("white"), alt.value("black")),
    )
    return (cells + words).properties(height=150)


def _alignment_frame(alignment: opt_lens.compare.TokenAlignment, name_a: str, name_b: str) -> pd.DataFrame:
    """The alignment as a table; a token one model lacks (OPT's </s>) shows an empty cell, not 'None'."""
    table = pd.DataFrame(alignment.table())
    for side in "AB":
        table[f"token {side}"] = table[f"token {side}"].fillna("")
        table[f"id {side}"] = [str(int(i)) if pd.notna(i) else "" for i in table[f"id {side}"]]
    # A token the tokenizer adds (OPT's </s>) covers no characters: say so rather than show a span "0-0".
    added = [row.start == row.end for row in alignment.rows]  # table() gives one line per row, in order
    table.loc[added, "span"] = "added"
    return table.rename(columns={
        "token A": f"A: {name_a}", "token B": f"B: {name_b}", "id A": "id in A", "id B": "id in B",
    })


@shared_result(max_entries=64)
def aligned_tokens(name_a: str, name_b: str, prompt: str) -> pd.DataFrame:
    """Both tokenizations of the prompt, paired by the characters each token covers."""
    alignment = opt_lens.compare.align_tokens(tokenized_prompt(name_a, prompt, ui=False),
                                              tokenized_prompt(name_b, prompt, ui=False))
    return _alignment_frame(alignment, name_a, name_b)
