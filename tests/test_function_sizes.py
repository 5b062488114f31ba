"""Issue #13's rule, kept: no function in ssmc/ over 60 lines of logic, apart from argparse declarations.

Lines of logic are counted by tools/function_sizes.py (no blanks, comments or docstrings), after
`ruff format` (make test checks the layout first, so the count is of the formatted code).
"""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 60
# argparse declarations: one long list of flags with their help, nothing to split by meaning
EXEMPT = {("ssmc/cli.py", "build_parser")}


def _tool():
    spec = importlib.util.spec_from_file_location("function_sizes", ROOT / "tools" / "function_sizes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_counter_skips_blanks_comments_and_the_docstring(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(
        'def f(a):\n    """Doc.\n\n    More doc.\n    """\n    # why\n\n    b = g(\n        a,\n    )\n    return b\n'
    )
    assert _tool().function_sizes(src) == [(4, "f", 1)]


def test_no_function_in_the_package_is_over_60_lines_of_logic():
    tool = _tool()
    over = [
        f"{path.relative_to(ROOT)}:{line} {name} ({n} lines)"
        for path in sorted((ROOT / "ssmc").rglob("*.py"))
        for n, name, line in tool.function_sizes(path)
        if n > LIMIT and (str(path.relative_to(ROOT)), name) not in EXEMPT
    ]
    assert not over, "split by meaning (a stage, a check, a section): " + "; ".join(over)
