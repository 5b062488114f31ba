"""The code in docs/extending.md runs: its Python blocks execute (or, when they
start with '# <file in the repository>', are verbatim excerpts of that file,
which other tests exercise) and its console commands succeed."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import types

import pytest

from ssmc.frontend import handlers
from tests.conftest import ROOT

DOC = ROOT / "docs" / "extending.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(DOC.read_text()) if lang == language]


def excerpt_file(block: str):
    first = block.splitlines()[0]
    if first.startswith("# "):
        path = ROOT / first[2:].strip()
        if path.is_file():
            return path
    return None


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch):
    monkeypatch.setattr(handlers, "_REGISTRY", {})
    monkeypatch.setattr(handlers, "_loaded_files", {})


def test_the_doc_has_python_and_console_blocks():
    assert len(blocks("python")) >= 4 and blocks("console")


def test_python_blocks_naming_a_file_are_verbatim_excerpts_of_it():
    named = [(excerpt_file(b), b) for b in blocks("python") if excerpt_file(b)]
    assert {p.name for p, _ in named} >= {"s4d_handler.py", "export_fused_s4d.py"}
    for path, block in named:
        body = block.split("\n", 1)[1]
        assert body in path.read_text(), f"docs/extending.md shows code that is not in {path}"


def test_the_other_python_blocks_run_in_order(monkeypatch):
    monkeypatch.chdir(ROOT)
    module = types.ModuleType("docs_extending")  # dataclasses look their module up in sys.modules
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for block in blocks("python"):
        if excerpt_file(block) is None:
            exec(compile(block, str(DOC), "exec"), module.__dict__)


def test_the_handler_block_registers_the_handler_it_shows():
    block = next(b for b in blocks("python") if b.startswith("# examples/custom_op/s4d_handler.py"))
    exec(compile(block, str(DOC), "exec"), {"__name__": "docs_handler"})
    assert handlers.find_handler("S4D", "com.example").func.__name__ == "fused_s4d"


def test_the_console_commands_succeed(tmp_path):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    for block in blocks("console"):
        for line in block.splitlines():
            if not line.startswith("$ "):
                continue
            argv = shlex.split(line[2:])
            argv = (
                [sys.executable] + argv[1:]
                if argv[0] == "python"
                else [sys.executable, "-m", "ssmc.cli"] + argv[1:]
                if argv[0] == "ssmc"
                else argv
            )
            proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, f"{line}: {proc.stderr}"
