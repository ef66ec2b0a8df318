"""Every public name is documented, and every docstring example runs."""

import doctest
import importlib
import inspect
import pkgutil

import pytest

import widebnn
from widebnn import kernels

PUBLIC_MODULES = [kernels]


def _public_callables():
    for module in PUBLIC_MODULES:
        for name in dir(module):
            if name.startswith("_"):
                continue
            obj = getattr(module, name)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                yield f"{module.__name__}.{name}", obj


@pytest.mark.parametrize("qualname, obj", list(_public_callables()))
def test_public_names_have_docstrings(qualname, obj):
    doc = inspect.getdoc(obj)
    assert doc and len(doc.splitlines()[0]) > 10, f"{qualname} has no summary line"
    if inspect.isfunction(obj) and inspect.signature(obj).parameters:
        params = [
            p for p in inspect.signature(obj).parameters if p not in ("args", "kwargs")
        ]
        if len(params) > 1:
            assert "Args:" in doc, f"{qualname} documents no arguments"


def _all_modules():
    for package in (widebnn, kernels):
        yield package
        for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
            if info.name.endswith(".cli"):
                continue
            yield importlib.import_module(info.name)


@pytest.mark.parametrize("module", list(_all_modules()), ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
