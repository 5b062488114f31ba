"""The error vocabulary: every error class lives in ssmc/errors.py, each says what went wrong, and none is raised
as the bare base class (docs/architecture.md, "Errors")."""

import ast
import inspect
import re
from pathlib import Path

import pytest

import ssmc.errors as errors
from ssmc.errors import SsmcError

PACKAGE = Path(errors.__file__).parent
ERRORS_PY = PACKAGE / "errors.py"
ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"
ERROR_CLASSES = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, SsmcError)]


def _trees():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE.parent), ast.parse(path.read_text(), str(path))


def _name(node: ast.expr) -> str:
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def test_no_code_raises_the_bare_base_class():
    bare = [
        f"{path}:{node.lineno}"
        for path, tree in _trees()
        for node in ast.walk(tree)
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and _name(node.exc.func) == "SsmcError"
    ]
    assert bare == [], f"raise a subclass from ssmc/errors.py that says what went wrong, not SsmcError: {bare}"


def test_every_error_class_is_defined_in_errors_py():
    def is_error(base: ast.expr) -> bool:
        return re.search(r"(Error|Exception)$", _name(base)) is not None

    elsewhere = [
        f"{path}:{node.lineno} {node.name}"
        for path, tree in _trees()
        if path != Path("ssmc/errors.py")
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef) and any(map(is_error, node.bases))
    ]
    assert elsewhere == [], f"define error classes in ssmc/errors.py (re-export them where they were): {elsewhere}"


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_each_error_class_says_what_it_means_here_and_in_the_architecture_table(cls):
    assert cls.__doc__ and cls.__doc__.strip()
    assert re.search(rf"^\| `{cls.__name__}` +\|", ARCHITECTURE.read_text(), re.M), (
        f"{cls.__name__} is missing from the error table in docs/architecture.md"
    )


def test_the_classes_first_defined_elsewhere_still_import_from_there():
    from ssmc.frontend.handlers import HandlerError
    from ssmc.passes.base import PassError
    from ssmc.targets import TargetError

    assert (PassError, HandlerError, TargetError) == (errors.PassError, errors.HandlerError, errors.TargetError)
