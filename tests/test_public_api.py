"""Every public name is documented, and every docstring example runs.

The docstring check covers every public module (the names a user reaches as
``widebnn.<module>.<name>``); the doctest sweep covers every module of the three
packages ``widebnn``, ``widebnn.kernels`` and ``widebnn.samplers`` (private ones too:
their examples are documentation as well), except the command-line entry point.
"""

import doctest
import importlib
import inspect
import pkgutil

import pytest

import widebnn
from widebnn import compare, data, diagnostics, gp, kernels, plots, samplers

PUBLIC_MODULES = [widebnn, kernels, samplers, gp, compare, diagnostics, data, plots]
PACKAGES = [widebnn, kernels, samplers]


def _public_callables():
    for module in PUBLIC_MODULES:
        for name in dir(module):
            if name.startswith("_"):
                continue
            obj = getattr(module, name)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            if getattr(obj, "__module__", "").startswith("widebnn"):  # not imports
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


def test_every_package_and_public_module_is_swept():
    names = {m.__name__ for m in _all_modules()}
    assert {p.__name__ for p in PACKAGES + PUBLIC_MODULES} <= names
    assert len(list(_public_callables())) > 100


def _all_modules():
    for package in PACKAGES:
        yield package
        for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
            if info.name.endswith(".cli"):
                continue
            yield importlib.import_module(info.name)


@pytest.mark.parametrize("module", list(_all_modules()), ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
