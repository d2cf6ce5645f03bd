"""One error tree: every error freight raises is a class of ``freight._errors``.

Each class derives from ``FreightError``, is drawn in the module's docstring tree and
exported from ``freight``; the subpackages re-export the very same classes.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import freight
from freight import _errors
from tests.test_public_api import PUBLIC

ERRORS = [getattr(_errors, name) for name in _errors.__all__]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: e.__name__)
def test_each_error_is_in_the_tree_drawn_and_exported(error: type[Exception]) -> None:
    assert issubclass(error, freight.FreightError)
    assert error.__module__ == "freight._errors"
    assert error.__doc__
    tree = _errors.__doc__ or ""
    name = error.__name__
    drawn = f"\n    {name}\n" if error is freight.FreightError else f"── {name} "
    assert drawn in tree, f"draw {name} in the tree"
    assert getattr(freight, error.__name__) is error
    assert error.__name__ in freight.__all__


def test_the_tree_draws_each_class_under_its_parent() -> None:
    tree = [line for line in (_errors.__doc__ or "").splitlines() if "── " in line]
    parents: dict[int, str] = {}
    for line in tree:
        depth = line.index("── ")
        name = line[depth + 3 :].split()[0]
        parents[depth] = name
        above = max((d for d in parents if d < depth), default=None)
        parent = getattr(_errors, parents[above]) if above is not None else freight.FreightError
        assert getattr(_errors, name).__bases__[0] is parent, line


def test_the_builtins_a_caller_may_catch_are_kept() -> None:
    assert issubclass(freight.ConfigError, ValueError)
    assert issubclass(freight.RecordError, ValueError)
    assert issubclass(freight.StoreError, freight.ConfigError)
    assert issubclass(freight.BatcherClosed, RuntimeError)
    assert issubclass(freight.HandlerContractError, TypeError)


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_no_public_module_exports_an_error_of_its_own(module: str) -> None:
    imported = importlib.import_module(module)
    for name in getattr(imported, "__all__", []):
        value = getattr(imported, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert value.__module__ == "freight._errors", f"{module}.{name}"


def test_no_error_class_is_defined_outside_the_tree() -> None:
    src = Path(freight.__file__).parent
    elsewhere = []
    for path in sorted(src.rglob("*.py")):
        if path.name == "_errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(base, ast.Name) and base.id.endswith(("Error", "Exception"))
                for base in node.bases
            ):
                elsewhere.append(f"{path.relative_to(src)}:{node.lineno} {node.name}")
    assert elsewhere == []
