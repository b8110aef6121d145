"""Every docstring example in the package runs and prints what it claims."""
import doctest
import importlib
import os
import pkgutil

import pytest

import gmcore

_SKIP = {"gmcore.__main__", "gmcore.cli", "gmcore.demo"}  # entry points, not API examples


def _modules():
    names = ["gmcore"]
    # the package's own folder only: an editable install adds the repository root to
    # gmcore.__path__ (to map kernels/ in as gmcore.kernels)
    for info in pkgutil.walk_packages([os.path.dirname(gmcore.__file__)], prefix="gmcore."):
        if info.name not in _SKIP and not info.name.startswith("gmcore._C") \
                and ".kernels" not in info.name:
            names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
