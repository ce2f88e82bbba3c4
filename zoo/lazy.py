"""Lazy package attributes: the zoo's packages import keras only on use.

`python -m zoo` chooses the Keras backend before keras is first imported,
so a package of the zoo names its public objects here and imports their
module on first access.
"""

import importlib


def lazy_attributes(package, names, eager=()):
    """`(__getattr__, __dir__, __all__)` for `package`.

    Args:
        package: the package's name (for error messages).
        names: dict, public name -> the module that defines it.
        eager: names the package defines itself (listed in `__all__`).

    Example:

    >>> getattr_, dir_, all_ = lazy_attributes("demo", {"sqrt": "math"})
    >>> getattr_("sqrt")(4.0), all_
    (2.0, ['sqrt'])
    """
    public = sorted([*names, *eager])

    def __getattr__(name):
        if name in names:
            return getattr(importlib.import_module(names[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return public

    return __getattr__, __dir__, public
