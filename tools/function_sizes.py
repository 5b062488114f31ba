"""List functions longer than N lines of logic (default 60): body lines that are not blank, comment-only or
the docstring; a nested function counts with its parent too. Issue #13 asks for none over ~60 apart from
argparse declarations.

    .venv/bin/python tools/function_sizes.py [N] [PACKAGE_DIR]
"""

import ast
import io
import sys
import tokenize
from pathlib import Path


def code_lines(src: str) -> set[int]:
    lines: set[int] = set()
    skip = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type not in skip:
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return lines


def function_sizes(path: Path) -> list[tuple[int, str, int]]:
    """(lines of logic, qualified name, first line) of every function in `path`."""
    src = path.read_text()
    code, rows = code_lines(src), []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = child.body[0]
                doc = set()
                if (
                    isinstance(first, ast.Expr)
                    and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)
                ):
                    doc = set(range(first.lineno, first.end_lineno + 1))
                n = sum(1 for line in range(first.lineno, child.end_lineno + 1) if line in code and line not in doc)
                rows.append((n, prefix + child.name, child.lineno))
                visit(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")

    visit(ast.parse(src), "")
    return rows


def main(argv: list[str]) -> int:
    limit = int(argv[0]) if argv else 60
    root = Path(argv[1] if len(argv) > 1 else "ssmc")
    big = sorted(
        (
            (n, name, f"{path}:{line}")
            for path in sorted(root.rglob("*.py"))
            for n, name, line in function_sizes(path)
            if n > limit
        ),
        reverse=True,
    )
    for n, name, where in big:
        print(f"{n:4d}  {name:40s} {where}")
    print(f"{len(big)} functions over {limit} lines of logic")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
