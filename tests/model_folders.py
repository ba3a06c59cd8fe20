"""Model folders that tests damage on purpose: a copy of a tiny model, an edited config, a config alone."""

import json
import shutil
from pathlib import Path


def copy_model(tiny_folder, kind, destination: Path) -> Path:
    shutil.copytree(tiny_folder(kind), destination)
    return destination


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def config_folder(tmp_path: Path, config: dict) -> Path:
    """A folder with nothing but a config.json: enough to describe, or to be refused."""
    folder = tmp_path / "config-only"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder
