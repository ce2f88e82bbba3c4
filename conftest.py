"""Pytest configuration shared by the tests and the docstring examples.

`./test.sh` runs the suite once per backend (tensorflow, jax, torch), each
in its own process, since the backend is fixed when keras is first
imported. The docstring examples of `layers/`, `training/` and `zoo/` run as
doctests (`--doctest-modules`) with `np`, `keras` and `ops` in scope.
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

if keras.backend.backend() == "torch":
    import torch

    # Small eager ops on a shared 2-core CI machine: with 2 intra-op threads
    # the meta-learning tests ran 3x slower (69 s vs 22 s) than with one.
    torch.set_num_threads(1)


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend: {keras.backend.backend()}"


@pytest.fixture(autouse=True)
def _seed_and_policy():
    keras.utils.set_random_seed(0)
    np.random.seed(0)
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    doctest_namespace.update(np=np, keras=keras, ops=keras.ops)
