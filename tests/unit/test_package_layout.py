"""The operator package lives under operator/ without making `operator` a package of its own."""

import functools
import importlib
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_import_operator_is_the_stdlib_module():
    import operator

    assert operator.add(2, 3) == 5
    assert operator.itemgetter is not None
    assert "site-packages" not in (operator.__file__ or "") or operator.__file__.endswith("operator.py")
    assert pathlib.Path(operator.__file__).parent != ROOT
    assert functools.reduce(operator.mul, [2, 3, 4]) == 24


def test_no_operator_package_marker():
    assert not (ROOT / "operator" / "__init__.py").exists()


def test_both_packages_import():
    assert importlib.import_module("neuron_operator")
    assert importlib.import_module("neuron_runtime")
