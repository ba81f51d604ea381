"""Names that moved: a module ``__getattr__`` (PEP 562) that still hands them on, warning once.

Scripts written against shopsearch 0.1 imported ``from rerank import SearchPipeline``; the names
now come from the front door (``from shopsearch import ...``). For one release the old paths
keep working with a ``DeprecationWarning`` that names the new one.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def moved_names(module: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A ``__getattr__`` for ``module`` that hands on each moved name from where it lives now.

    Args:
        module: The old module's ``__name__``.
        names: Old name -> the module that defines it now.

    Returns:
        The function to assign to the old module's ``__getattr__``. It warns once per name
        (``from X import Y`` looks a name up twice; the value is then cached on the module).
    """

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(
            f"'from {module} import {name}' is deprecated: use 'from shopsearch import {name}'",
            DeprecationWarning,
            stacklevel=2,
        )
        value = getattr(importlib.import_module(names[name]), name)
        setattr(sys.modules[module], name, value)
        return value

    return __getattr__
