"""Model names a user may give: the bundled demo models and Hugging Face IDs. Light: no torch import, so
the app can validate a shared link before any model code loads."""

from __future__ import annotations

import re
from pathlib import Path

from .errors import OptLensError

DEMO_DIR = Path(__file__).parent / "demo_models"
DEMO_MODELS = {"demo/tiny-gpt2": DEMO_DIR / "tiny-gpt2", "demo/tiny-opt": DEMO_DIR / "tiny-opt"}

_HUB_PART = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
_HUB_ID = re.compile(rf"^(?:{_HUB_PART}/)?{_HUB_PART}$")


def validate_name(name_or_path: str, *, allow_local: bool = True) -> str:
    """Return the cleaned name or raise ``OptLensError`` saying what a valid name looks like."""
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise OptLensError("Type a model name, for example gpt2 or facebook/opt-125m.")
    name = name_or_path.strip()
    if name in DEMO_MODELS:
        return name
    if re.match(r"^[a-z]+://", name, flags=re.IGNORECASE):
        raise OptLensError("Paste the model's ID (like facebook/opt-125m), not a web address.")
    if allow_local and Path(name).is_dir():
        return name
    if not _HUB_ID.match(name) or ".." in name or "--" in name:
        raise OptLensError(f"'{name[:80]}' is not a model ID. IDs look like gpt2 or facebook/opt-125m.")
    return name
