"""The lazy public names of ``deltalm`` and ``deltalm.generation`` (deltalm/lazy_exports.py)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from deltalm.lazy_exports import lazy_exports
from tests.conftest import REPO, subprocess_environment

PACKAGES = ("deltalm", "deltalm.generation")


def test_a_name_is_imported_on_first_access_and_cached():
    namespace: dict = {}
    getattr_ = lazy_exports("pkg", {"sqrt": "math"}, namespace)
    import math

    assert getattr_("sqrt") is math.sqrt and namespace == {"sqrt": math.sqrt}
    with pytest.raises(AttributeError, match=r"^module 'pkg' has no attribute 'cos'$"):
        getattr_("cos")


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_resolves_to_its_module(package: str):
    module = importlib.import_module(package)
    for name in module.__all__:
        source = importlib.import_module(module._EXPORTS[name])
        assert getattr(module, name) is getattr(source, name), name
    assert sorted(module.__all__) == sorted(module._EXPORTS)
    with pytest.raises(AttributeError, match=rf"^module '{package}' has no attribute 'no_such_name'$"):
        module.no_such_name  # noqa: B018


@pytest.mark.parametrize("package", PACKAGES)
def test_importing_the_package_does_not_import_torch(package: str):
    code = f"import sys, {package}; sys.exit('torch' in sys.modules)"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=subprocess_environment(), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:] or f"importing {package} imported torch"
