"""Installs tests/fakes/intercept.py at interpreter start-up when ROUTER_TEST_REDIRECT is set.

A test puts this folder first on PYTHONPATH of a subprocess (``intercept.subprocess_env``);
Python imports ``sitecustomize`` by itself at start-up. Without the variable it does nothing.
"""

import importlib.util
import os
import sys
from pathlib import Path

if os.environ.get("ROUTER_TEST_REDIRECT", "").strip():
    _path = Path(__file__).resolve().parent.parent / "intercept.py"
    _spec = importlib.util.spec_from_file_location("router_test_intercept", _path)
    if _spec is not None and _spec.loader is not None:
        _module = importlib.util.module_from_spec(_spec)
        sys.modules["router_test_intercept"] = _module
        _spec.loader.exec_module(_module)
        _module.install_from_env()
