"""Everything the pages share: the caches, the sidebar, the URL state, and tensors turned into tables.

Pages import this module and stay thin: read widgets, call one function here, draw. One cached model
object serves every student; captures are cached by (model, prompt) and never modified after creation.
"""

from __future__ import annotations

import contextlib
import html
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

import pandas as pd
import streamlit as st

import opt_lens
from opt_lens.hub import hub_reachable
from opt_lens.memory import format_bytes, memory_limit, release_freed_memory, return_large_blocks_when_freed

logger = logging.getLogger(__name__)

# Streamlit treats a folder named pages/ as an old-style multipage app until some run calls st.navigation:
# on a fresh server, a shared link to /attention would run that page alone, without streamlit_app.py.
# Opt out once per process and restart that first run through the entry point.
try:
    from streamlit.runtime.pages_manager import PagesManager  # internal: guarded, the app runs without it
except ImportError:  # pragma: no cover - a Streamlit that moved it
    PagesManager = None
if getattr(PagesManager, "uses_pages_directory", False):
    PagesManager.uses_pages_directory = False
    st.rerun()

return_large_blocks_when_freed()

DEMO_MODELS = list(opt_lens.DEMO_MODELS)
GPT2_FAMILY = ["gpt2", "distilgpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"]
OPT_FAMILY = ["facebook/opt-125m", "facebook/opt-350m", "facebook/opt-1.3b", "facebook/opt-2.7b"]
TYPE_YOUR_OWN = "Type a model ID…"
DEFAULT_PROMPT = "Alice went to the park. Bob gave the ball to Alice. Then Alice gave the ball to Bob. The cat sat on the"
MAX_PROMPT_CHARS = 4000
# Share of the memory limit that cached models and captures may hold; the rest is the server and the UI.
MODEL_SHARE, CAPTURE_SHARE = 0.55, 0.15
# The Compare page matches heads on the first tokens only: at 1024 tokens, both models' full attention would
# take 700 MB and the matching 10 s; 128 tokens (8,000 query-key cells per head) are plenty to tell which
# patterns agree, and keep the page's peak memory under 1.8 GB with gpt2 and opt-125m.
HEAD_MATCH_TOKENS = 128


# Every ASCII punctuation character that Markdown might read as syntax (CommonMark lets a backslash escape any).
_MARKDOWN_SYNTAX = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>$:&])")


def plain(text) -> str:
    """Text (a model ID, an error quoting one, a token) made safe for st.error/st.markdown: shown as typed."""
    return _MARKDOWN_SYNTAX.sub(r"\\\1", str(text))


# ------------------------------------------------------------------------------------------ caches


class BudgetCache:
    """A least-recently-used cache bounded by bytes, shared by all sessions; one build per key at a time."""

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self._items: OrderedDict = OrderedDict()
        self._sizes: dict = {}
        self._lock = threading.Lock()
        self._building: dict = {}

    def get(self, key, build, size_of):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            key_lock = self._building.setdefault(key, threading.Lock())
        with key_lock:  # a second student asking for the same thing waits for the first build
            with self._lock:
                if key in self._items:
                    return self._items[key]
            try:
                value = build()
            except BaseException:
                with self._lock:
                    self._building.pop(key, None)
                raise
            size = size_of(value)
            with self._lock:
                self._make_room(size)
                self._items[key], self._sizes[key] = value, size
                self._building.pop(key, None)
            return value

    def make_room(self, size: int) -> None:
        with self._lock:
            self._make_room(size)

    def _make_room(self, size: int) -> None:
        while self._items and sum(self._sizes.values()) + size > self.budget_bytes:
            evicted, _ = self._items.popitem(last=False)
            logger.info("Evicting %s to stay within %s", evicted, format_bytes(self.budget_bytes))
            self._sizes.pop(evicted)

    def keys(self) -> list:
        with self._lock:
            return list(self._items)


@st.cache_resource
def _model_cache() -> BudgetCache:
    return BudgetCache(int(memory_limit()[0] * MODEL_SHARE))


@st.cache_resource
def _capture_cache() -> BudgetCache:
    return BudgetCache(int(memory_limit()[0] * CAPTURE_SHARE))


@st.cache_resource(ttl=600, show_spinner=False)
def hub_online() -> bool:
    return hub_reachable()


@st.cache_data(ttl=3600, show_spinner=False)
def describe(name: str) -> dict:
    """Architecture facts from the config alone (no weights), for any model name."""
    return opt_lens.describe_pretrained(name, allow_local=False).to_dict()


def model(name: str, *, ui: bool = True) -> opt_lens.LoadedModel:
    """The shared loaded model, loaded within the memory budget (with a progress bar while downloading).

    Cached view functions pass ``ui=False``: the page has already loaded the model, and Streamlit would
    otherwise replay the progress elements on every cache hit.
    """
    cache = _model_cache()

    def build() -> opt_lens.LoadedModel:
        needed = describe(name)["n_params"] * opt_lens.loading.BYTES_PER_PARAM
        if needed > cache.budget_bytes:
            raise opt_lens.OptLensError(
                f"{name} needs about {format_bytes(needed)} for its weights, more than this server keeps for "
                f"models ({format_bytes(cache.budget_bytes)}). Try a smaller model."
            )
        cache.make_room(needed)  # evict before loading, not after
        if not ui:
            return released(opt_lens.load(name, allow_local=False))
        bar = st.progress(0.0, text=f"Preparing {name}…")

        def progress(done: int, total: int, file_name: str) -> None:
            bar.progress(min(done / max(total, 1), 1.0),
                         text=f"Downloading {name}: {file_name} ({format_bytes(done)} of {format_bytes(total)})")

        try:
            with st.spinner(f"Loading {name} into memory…"):
                return released(opt_lens.load(name, progress=progress, allow_local=False))
        finally:
            bar.empty()

    return cache.get(name, build, lambda lm: lm.weights_bytes)


def released(value):
    """``value``, after handing the memory freed while building it back to the system (models, captures)."""
    release_freed_memory()
    return value


def capture(name: str, prompt: str, *, ui: bool = True, attention_prefix: int | None = None) -> opt_lens.Capture:
    """The capture of ``prompt`` on model ``name``, shared read-only by everyone who asks for the same pair.

    ``attention_prefix`` keeps the attention of the first tokens only (see ``opt_lens.capture``).
    """
    lm = model(name, ui=ui)
    spinner = st.spinner(f"Running {name} on the prompt…") if ui else contextlib.nullcontext()
    with spinner:
        return _capture_cache().get(
            (name, prompt, attention_prefix),
            lambda: released(opt_lens.capture(lm, prompt, attention_prefix=attention_prefix)),
            lambda cap: cap.nbytes(),
        )


def comparison_captures(name_a: str, name_b: str, prompt: str, *, ui: bool = True) -> tuple:
    """What the Compare page runs: both models on the prompt, attention kept for head matching only."""
    captures = tuple(capture(name, prompt, ui=ui, attention_prefix=HEAD_MATCH_TOKENS) for name in (name_a, name_b))
    if ui:
        for name, cap in zip((name_a, name_b), captures):
            warn_if_truncated(name, cap)
    return captures


def current() -> tuple[str, str, opt_lens.LoadedModel, opt_lens.Capture]:
    """The sidebar's model and prompt, the loaded model, and its capture of the prompt (saying if it was cut)."""
    name, prompt = st.session_state.model, st.session_state.prompt
    cap = capture(name, prompt)
    warn_if_truncated(name, cap)
    return name, prompt, model(name), cap


def warn_if_truncated(name: str, cap: opt_lens.Capture) -> None:
    """Every view of a capture says so when the prompt was longer than the model's context."""
    if cap.truncated:
        st.warning(f"The prompt has {cap.n_prompt_tokens} tokens, but {plain(name)} reads at most {cap.seq_len}: "
                   "what you see here is computed on the first ones only.", icon=":material/content_cut:")


# ------------------------------------------------------------------------------------ URL and state


def _int_param(value, low: int, high: int) -> int | None:
    try:
        number = int(str(value))
    except (TypeError, ValueError):
        return None
    return number if low <= number <= high else None


def _model_param(value) -> str | None:
    try:
        return opt_lens.validate_name(str(value), allow_local=False) if value else None
    except opt_lens.OptLensError:
        return None


def default_models() -> tuple[str, str]:
    return ("gpt2", "facebook/opt-125m") if hub_online() else ("demo/tiny-gpt2", "demo/tiny-opt")


def init_state() -> None:
    """Fill the session from the URL once (validated: it is untrusted), falling back to defaults."""
    if st.session_state.get("_initialised"):
        return
    params = st.query_params
    first, second = default_models()
    prompt = params.get("prompt")
    st.session_state.model = _model_param(params.get("model")) or first
    st.session_state.model_b = _model_param(params.get("model_b")) or second
    st.session_state.prompt = prompt[:MAX_PROMPT_CHARS] if isinstance(prompt, str) and prompt.strip() else DEFAULT_PROMPT
    st.session_state.layer = _int_param(params.get("layer"), 0, 200) or 0
    st.session_state.head = _int_param(params.get("head"), 0, 200) or 0
    st.session_state._initialised = True


def sync_url() -> None:
    """Write the view into the URL so that a shared link reproduces it."""
    state = st.session_state
    wanted = {
        "model": state.model, "model_b": state.model_b, "prompt": state.prompt,
        "layer": str(state.layer), "head": str(state.head),
    }
    for key, value in wanted.items():
        if st.query_params.get(key) != value:
            st.query_params[key] = value


def _model_options(current: str) -> list[str]:
    options = DEMO_MODELS + GPT2_FAMILY + (OPT_FAMILY if hub_online() else [])
    return options + ([current] if current not in options else []) + [TYPE_YOUR_OWN]


def model_label(name: str) -> str:
    """How a model shows in a dropdown: offline, Hub models say that they cannot load here."""
    if name in DEMO_MODELS or name == TYPE_YOUR_OWN or hub_online():
        return name
    return f"{name} (needs the Hugging Face Hub)"


def model_picker(label: str, key: str, help_text: str) -> None:
    """A dropdown of known models plus a box for any Hugging Face ID, bound to ``st.session_state[key]``.

    The widgets carry no key of their own: their position follows the session state, so pickers on
    different pages (and the URL) always agree.
    """
    typing = f"_{key}_typing"
    current = st.session_state[key]
    options = _model_options(current)
    index = len(options) - 1 if st.session_state.get(typing) else options.index(current)
    choice = st.selectbox(label, options, index=index, help=help_text, format_func=model_label)
    st.session_state[typing] = choice == TYPE_YOUR_OWN
    if choice != TYPE_YOUR_OWN:
        st.session_state[key] = choice
        return
    typed = st.text_input(f"{label}: Hugging Face model ID", placeholder="facebook/opt-125m", max_chars=100).strip()
    if typed:
        try:
            st.session_state[key] = opt_lens.validate_name(typed, allow_local=False)
            st.session_state[typing] = False
            st.rerun()
        except opt_lens.OptLensError as error:
            st.error(plain(error))


def typed_model_id(text: str) -> str | None:
    """A model ID typed by a user, checked; a bad one shows a short warning and gives None."""
    text = text.strip()
    if not text:
        return None
    try:
        return opt_lens.validate_name(text, allow_local=False)
    except opt_lens.OptLensError as error:
        st.warning(plain(error), icon=":material/warning:")
        return None


def sidebar():
    """The shared controls, identical on every page."""
    init_state()
    with st.sidebar:
        if not hub_online():
            st.info("The Hugging Face Hub can't be reached from this server, so the app runs on the two bundled "
                    "demo models (tiny toys trained on simple sentences).", icon=":material/cloud_off:")
        model_picker("Model", "model", "GPT-2 models and the demo models; choose 'Type a model ID' for others, "
                     "such as facebook/opt-125m or facebook/opt-350m.")
        st.session_state.prompt = st.text_area(
            "Prompt", value=st.session_state.prompt, max_chars=MAX_PROMPT_CHARS, height=140,
            help="Every page shows what the model computes on this text. Press Ctrl+Enter to apply.",
        ) or st.session_state.prompt
        return st.empty()  # filled after the page has run, when its models are loaded


def memory_note(placeholder) -> None:
    cache = _model_cache()
    loaded = ", ".join(cache.keys()) or "none yet"
    placeholder.caption(f"Models in memory: {loaded} (up to {format_bytes(cache.budget_bytes)} for models; "
                        "the least recently used is dropped first).")


def run_frame(run_page) -> None:
    """What every rerun does around the current page: the shared sidebar, friendly errors, the URL."""
    note = sidebar()
    try:
        with friendly_errors():
            run_page()
    finally:  # also after st.stop() or st.rerun() in a page: the URL always matches the view
        memory_note(note)
        sync_url()


@contextlib.contextmanager
def friendly_errors():
    """An OptLensError becomes a short message; anything else a generic one (details go to the log)."""
    try:
        yield
    except opt_lens.OptLensError as error:
        st.error(plain(error), icon=":material/error:")
    except Exception:  # noqa: BLE001 - no student ever sees a traceback; the server log keeps it
        logger.exception("Page failed")
        st.error("Something went wrong while drawing this view. Try another prompt or model.", icon=":material/error:")


# --------------------------------------------------------------------------------------- view data


def clamp(value: int, upper: int) -> int:
    return min(max(int(value), 0), max(upper - 1, 0))


def clicked_head(event, n_layers: int, n_heads: int) -> tuple[int, int] | None:
    """The (layer, head) of a click on the head map, or None; the event comes from the browser, so check it."""
    try:
        point = event["selection"]["picked"][0]
        layer, head = int(point["layer"]), int(point["head"])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return (layer, head) if 0 <= layer < n_layers and 0 <= head < n_heads else None


def token_labels(cap: opt_lens.Capture) -> list[str]:
    """Unique axis labels: position and readable token ("3 ␣cat")."""
    return [f"{i} {token}" for i, token in enumerate(cap.tokens)]


def token_table(cap: opt_lens.Capture) -> pd.DataFrame:
    return pd.DataFrame({
        "position": range(cap.seq_len),
        "token": cap.tokens,
        "id": cap.input_ids.tolist(),
        "characters": [f"{start}–{end}" for start, end in cap.offsets],
        "text": [cap.text[start:end] for start, end in cap.offsets],
    })


def attention_frame(cap: opt_lens.Capture, layer: int, heads_: list[int], window: tuple[int, int]) -> pd.DataFrame:
    """Long table of one layer's attention for the given heads, restricted to a window of positions."""
    start, end = window
    labels = token_labels(cap)
    block = cap.attention[layer, heads_, start:end, start:end].float()  # [head, query, key]
    frames = []
    for index, head in enumerate(heads_):
        weights = block[index].numpy()
        query, key = weights.nonzero()  # causal: the zeros above the diagonal are not drawn
        frames.append(pd.DataFrame({
            "head": head,
            "query": [labels[start + q] for q in query],
            "key": [labels[start + k] for k in key],
            "weight": weights[query, key],
        }))
    return pd.concat(frames, ignore_index=True)


def attention_row(cap: opt_lens.Capture, layer: int, head: int, query: int) -> pd.DataFrame:
    """How much one query token attends to each key up to itself."""
    weights = cap.attention[layer, head, query, : query + 1].float().numpy()
    return pd.DataFrame({"position": range(query + 1), "token": cap.tokens[: query + 1], "weight": weights})


@st.cache_data(ttl=3600, max_entries=64, show_spinner="Scoring every head…")
def head_score_table(name: str, prompt: str) -> pd.DataFrame:
    lm, cap = model(name, ui=False), capture(name, prompt, ui=False)
    scores = opt_lens.heads.head_scores(lm, cap)
    rows = []
    for metric, values in scores.as_dict().items():
        for layer in range(values.shape[0]):
            for head in range(values.shape[1]):
                rows.append({"metric": metric, "layer": layer, "head": head, "score": float(values[layer, head])})
    return pd.DataFrame(rows)


@st.cache_data(ttl=3600, max_entries=64, show_spinner=False)
def predictions_table(name: str, prompt: str, k: int, position: int = -1) -> pd.DataFrame:
    rows = opt_lens.top_k_next(model(name, ui=False), capture(name, prompt, ui=False), k=k, position=position)
    return pd.DataFrame([{"rank": p.rank, "token": p.token, "id": p.token_id, "probability": p.probability,
                          "logit": p.logit} for p in rows])


@st.cache_data(ttl=3600, max_entries=64, show_spinner="Reading every layer through the output head…")
def logit_lens_table(name: str, prompt: str, start: int, end: int) -> pd.DataFrame:
    lm, cap = model(name, ui=False), capture(name, prompt, ui=False)
    lens = opt_lens.logit_lens_map(lm, cap, positions=list(range(start, end)))
    labels = token_labels(cap)
    rows = []
    for layer in range(lens.top_ids.shape[0]):
        for column, position in enumerate(lens.positions):
            rows.append({
                "layer": layer, "position": labels[position], "guess": lens.top_tokens[layer][column],
                "probability": float(lens.top_probs[layer, column]),
                "final guess": lens.top_tokens[-1][column],
                "probability of final guess": float(lens.final_token_probs[layer, column]),
            })
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Experiment:
    """A guided first look from the start page: a prompt, the page that shows it, and what to notice."""

    title: str
    notice: str
    page: str
    prompt: str
    head_metric: str | None = None  # open the head that scores highest on this metric, in the current model


EXPERIMENTS = [
    Experiment(
        "A head that looks one token back",
        "Its map has a bright diagonal just below the main one: every token reads the token before it.",
        "pages/attention.py", "The cat sat on the mat, and the dog sat on the rug by the door.", "previous token",
    ),
    Experiment(
        "A head that copies",
        "The words come twice. In the second copy each token looks at the token that followed it the first "
        "time: a stripe parallel to the diagonal. That is how a model continues a pattern it has just seen.",
        "pages/attention.py", "banana violin castle purple seven river lamp, banana violin castle purple seven river lamp",
        "induction",
    ),
    Experiment(
        "A guess forming layer by layer",
        "In the logit lens, find the layer where the final guess first shows up, and how sure each layer is.",
        "pages/predictions.py", "Alice went to the park. Bob gave the ball to",
    ),
    Experiment(
        "Words cut into pieces",
        "Rare words, emoji and other scripts take several tokens; common words take one, space included.",
        "pages/tokens.py", "Tokenizers split unbelievably long words, emoji 😀 and 日本語 into pieces.",
    ),
]


def start_experiment(experiment: Experiment) -> None:
    """Put the experiment's prompt (and its best head) into the session and open its page."""
    st.session_state.prompt = experiment.prompt
    if experiment.head_metric:
        scores = head_score_table(st.session_state.model, experiment.prompt)
        best = scores[scores.metric == experiment.head_metric].sort_values("score").iloc[-1]
        st.session_state.layer, st.session_state.head = int(best["layer"]), int(best["head"])
        st.session_state.head_metric = experiment.head_metric  # the Attention page's score map shows that score
    st.switch_page(experiment.page)


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


@st.cache_data(ttl=3600, max_entries=32, show_spinner="Comparing the two models…")
def comparison(name_a: str, name_b: str, prompt: str, k: int = 10) -> Comparison:
    lm_a, lm_b = model(name_a, ui=False), model(name_b, ui=False)
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
        head_pairs = pd.DataFrame([
            {f"head in {name_a}": f"L{a[0]}.H{a[1]}", f"best match in {name_b}": f"L{b[0]}.H{b[1]}", "similarity": s}
            for a, b, s in matches.top_pairs(12)
        ])
    return Comparison(
        tokens=_alignment_frame(alignment, name_a, name_b),
        next_a=pd.DataFrame(nxt.top_a, columns=["token", "probability"]),
        next_b=pd.DataFrame(nxt.top_b, columns=["token", "probability"]),
        agreement={"KL(A‖B)": nxt.kl_a_b, "KL(B‖A)": nxt.kl_b_a, "Jensen-Shannon": nxt.js,
                   "top-k overlap": nxt.top_k_overlap, "shared": nxt.shared_top, "k": k,
                   "shared vocabulary": nxt.shared_vocabulary, "outside A": nxt.mass_outside_a,
                   "outside B": nxt.mass_outside_b,
                   "settled": {c.model_name: c.settled_depth for c in curves},
                   "final": {c.model_name: c.final_token for c in curves}},
        depth=depth,
        head_pairs=head_pairs,
        head_tokens=head_tokens,
        aligned_tokens=len(alignment.pairs),
    )


def settle_table(result: Comparison) -> pd.DataFrame:
    """Per model: its final guess and the depth from which the logit lens already shows it on top."""
    layers = result.depth.groupby("model")["layer"].max()
    return pd.DataFrame([
        {"model": name, "layers": int(layers[name]), "final guess": result.agreement["final"][name],
         "top guess from depth": round(result.agreement["settled"][name], 2)}
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


def file_safe(name: str) -> str:
    """A model name usable in a download's file name ("facebook/opt-125m" -> "facebook_opt-125m")."""
    return "".join(c if c.isalnum() or c in "-." else "_" for c in name)


def csv_button(table: pd.DataFrame, label: str, file_name: str, *, index: bool = False) -> None:
    """A download button for one table, as CSV (UTF-8, so token pieces like ␣ survive)."""
    st.download_button(label, table.to_csv(index=index).encode("utf-8"), file_name, "text/csv",
                       icon=":material/download:")


@st.cache_data(ttl=3600, max_entries=64, show_spinner=False)
def aligned_tokens(name_a: str, name_b: str, prompt: str) -> pd.DataFrame:
    """Both tokenizations of the prompt, paired by the characters each token covers."""
    alignment = opt_lens.compare.align_tokens(capture(name_a, prompt, ui=False), capture(name_b, prompt, ui=False))
    return _alignment_frame(alignment, name_a, name_b)


FACT_LABELS = {
    "family": "Family", "n_params": "Parameters", "n_layers": "Layers", "n_heads": "Attention heads",
    "n_kv_heads": "Key/value heads", "d_model": "Hidden size (d_model)", "d_head": "Head size",
    "d_mlp": "MLP width", "embed_dim": "Word-embedding width", "vocab_size": "Vocabulary",
    "max_positions": "Context length", "positional": "Positions", "position_offset": "Position offset",
    "norm": "LayerNorm placement", "activation": "Activation", "tied_embeddings": "Tied embeddings",
    "model_class": "transformers class", "detection": "Structure found by", "layers_path": "Layer list",
    "attn_path": "Attention", "attn_out_proj_path": "Heads mixed by", "mlp_path": "MLP", "final_norm_path": "Final norm", "project_in_path": "Projection in",
    "project_out_path": "Projection out", "unembed_path": "Unembedding", "embed_path": "Token embedding",
    "positions_path": "Position embedding",
}


def architecture_table(names: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Facts side by side (rows = facts, columns = models), the parameter breakdown, and errors met."""
    columns, parts, errors = {}, [], []
    for name in names:
        try:
            facts = describe(name)
        except opt_lens.OptLensError as error:
            errors.append(plain(f"{name}: {error}"))
            continue
        columns[name] = [_show_fact(key, facts.get(key)) for key in FACT_LABELS]
        parts += [{"model": name, "where": where, "parameters": count}
                  for where, count in facts["param_breakdown"].items() if count]
    table = pd.DataFrame(columns, index=list(FACT_LABELS.values()))
    return table, pd.DataFrame(parts), errors


def _show_fact(key: str, value) -> str:
    if value is None:
        return "—"
    if key == "n_params":
        return f"{value:,}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key == "norm":
        return {"pre": "pre-LN (before each sublayer)", "post": "post-LN (after the residual add)"}.get(value, value)
    return str(value)


def token_chips(cap: opt_lens.Capture) -> str:
    """Token chips as HTML; every piece of user text is escaped, so a prompt can never inject markup."""
    tokens, ids = cap.tokens, cap.input_ids.tolist()
    chips = "".join(
        f'<span title="id {token_id}" style="display:inline-block;margin:2px;padding:2px 6px;border-radius:6px;'
        f'background:{"#e8eefc" if i % 2 else "#fdf0e0"};font-family:monospace;white-space:pre">'
        f'{html.escape(token)}<sub style="color:#888;margin-left:3px">{token_id}</sub></span>'
        for i, (token, token_id) in enumerate(zip(tokens, ids))
    )
    return f'<div style="line-height:2.2">{chips}</div>'
