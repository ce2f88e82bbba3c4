"""Optional dependencies: one clear error naming the extra to install.

The core needs only keras and numpy plus one backend. Everything else is an
extra of the `modular-zoo` package (see pyproject.toml). Code that needs an
optional package calls `require` before importing it, so that a user who
lacks it reads one line saying what to install instead of a traceback from
deep inside an import.
"""

import importlib.util

# Backend name -> (module that must import, extra that installs it).
BACKEND_EXTRAS = {
    "jax": ("jax", "jax"),
    "tensorflow": ("tensorflow", "tensorflow"),
    "torch": ("torch", "torch"),
}

_INSTALL_HINTS = {
    "torch": " (CPU-only: `pip install torch==2.13.0` first, then the extra)",
}


class MissingExtraError(ImportError):
    """An optional dependency is missing; the message names the extra."""


class UsageError(ValueError):
    """A bad combination of command-line values, or an output directory that
    holds another run; the runner prints it as one line (exit status 2)."""


class MissingDataError(FileNotFoundError):
    """A dataset is not where it was looked for; the message says how to get
    it. The runner prints it as one line (exit status 2)."""


def require(module, extra, feature):
    """Raises `MissingExtraError` unless `module` can be imported.

    Args:
        module: str, the top-level module to look for (e.g. "gymnasium").
        extra: str, the extra of modular-zoo that installs it (e.g. "rl").
        feature: str, what needs it, for the message.

    Example:

    >>> require("numpy", "core", "arrays")
    >>> require("no_such_module_xyz", "rl", "Meta-World environments")
    Traceback (most recent call last):
    ...
    zoo.extras.MissingExtraError: Meta-World environments: the package 'no_such_module_xyz' is not installed; pip install 'modular-zoo[rl]'
    """
    if importlib.util.find_spec(module) is None:
        raise MissingExtraError(
            f"{feature}: the package '{module}' is not installed; pip install "
            f"'modular-zoo[{extra}]'{_INSTALL_HINTS.get(extra, '')}"
        )


def require_backend(backend):
    """`require` for the package behind a Keras backend name."""
    if backend not in BACKEND_EXTRAS:
        raise ValueError(
            f"Unknown backend {backend!r}; expected one of "
            f"{', '.join(BACKEND_EXTRAS)}."
        )
    module, extra = BACKEND_EXTRAS[backend]
    require(module, extra, f"The {backend} backend")


def checked_int(value, name, minimum=1):
    """`value` as an int, or a ValueError naming `name` when it is not an
    integer (bools refused) of at least `minimum`. Keras-free, for the
    families' environment and data builders."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        bound = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {bound}; got {value!r}.")
    return int(value)
