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
# Longer than any Hub ID (two parts of at most 96) and any sensible folder path; checked before the name
# reaches the file system, which refuses a name of more than 255 bytes with an OSError.
MAX_NAME_CHARS = 1024


def validate_name(name_or_path: str, *, allow_local: bool = True) -> str:
    """Return the cleaned name or raise ``OptLensError`` saying what a valid name looks like."""
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise OptLensError("Type a model name, for example gpt2 or facebook/opt-125m.")
    name = name_or_path.strip()
    if len(name) > MAX_NAME_CHARS:
        raise OptLensError(f"That name is {len(name):,} characters long; model IDs look like gpt2 or facebook/opt-125m.")
    if name in DEMO_MODELS:
        return name
    if re.match(r"^[a-z]+://", name, flags=re.IGNORECASE):
        raise OptLensError("Paste the model's ID (like facebook/opt-125m), not a web address.")
    if allow_local and is_local_folder(name):
        return name
    if not _HUB_ID.match(name) or ".." in name or "--" in name:
        raise OptLensError(f"'{printable(name)}' is not a model ID. IDs look like gpt2 or facebook/opt-125m.")
    return name


def is_local_folder(name: str) -> bool:
    """Whether ``name`` is an existing folder; False for what no file system accepts as a path."""
    try:
        return Path(name).is_dir()
    except (OSError, ValueError):  # a part longer than 255 bytes; a NUL character
        return False


def printable(value, limit: int = 80) -> str:
    """``value`` as text fit to echo in a message: at most ``limit`` characters, with control characters and
    lone surrogates (which cannot be encoded to send to a browser) shown as U+FFFD."""
    return "".join(c if c.isprintable() else "\ufffd" for c in str(value)[:limit])
