"""Two models side by side: the Compare page's whole result, and the aligned tokens the Tokens page shows."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

import opt_lens
from app.caches import comparison_captures, shared_model, shared_result, tokenized_prompt


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


def settle_table(result: Comparison) -> pd.DataFrame:
    """Per model: its final guess and the depth from which the logit lens already shows it on top."""
    layers = result.depth.groupby("model")["layer"].max()
    return pd.DataFrame([
        {"model": name, "layers": int(layers[name]), "final guess": result.agreement["final"][name],
         "top guess from depth": f"{result.agreement['settled'][name]:.0%}"}
        for name in result.agreement["final"]
    ])


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
