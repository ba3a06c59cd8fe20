"""The shape the codebase keeps (issue 17): short functions, one module that hooks the model, an app that
stays above the library's public surface, and a library that never imports Streamlit."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_FUNCTION_LINES = 60


def python_files(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py"))


def test_no_function_is_longer_than_sixty_lines():
    long = [f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in python_files("opt_lens", "app", "pages")
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []


def test_one_library_module_registers_hooks():
    hooking = {path.relative_to(ROOT).as_posix() for path in python_files("opt_lens")
               if "register_forward_hook" in path.read_text() or "register_forward_pre_hook" in path.read_text()}
    assert len(hooking) == 1, hooking


@pytest.mark.parametrize("folder", ["app", "pages"])
def test_the_app_reads_no_private_name_of_the_library(folder):
    """No ``cap._calls``, ``hub._refusal`` or ``opt_lens.x._y`` from the app: attributes with a leading
    underscore read off anything but ``self`` and Streamlit's own objects are the library's internals."""
    private = []
    for path in python_files(folder):
        tree = ast.parse(path.read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                    and (node.module or "").startswith("opt_lens") for alias in node.names}
        private += [f"{path.relative_to(ROOT)}: {name}" for name in imported if name.startswith("_")]
        private += [f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}" for node in ast.walk(tree)
                    if isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "st", "cls"))]
    assert private == []


def test_the_library_never_imports_streamlit():
    importing = [path.relative_to(ROOT).as_posix() for path in python_files("opt_lens")
                 for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.Import | ast.ImportFrom)
                 and any((name or "").split(".")[0] == "streamlit"
                         for name in ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                                      else [node.module]))]
    assert importing == []
