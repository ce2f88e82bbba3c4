"""One shared harness for the project's tests.

* `run_layer_checks` puts a task-conditioned layer through the checks every
  layer of the project must pass: config round trip, `.keras` save/load with
  identical outputs, compiled (jit) prediction equal to eager, and
  mixed_bfloat16.
* `run_in_backends` runs a Python snippet under other backends in
  subprocesses (KERAS_BACKEND must be set before keras is imported), for
  cross-backend checks.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("tensorflow", "jax", "torch")


def current_backend():
    return keras.backend.backend()


def other_backends():
    return [b for b in BACKENDS if b != current_backend()]


def run_in_backends(code, backends, timeout=600, **kwargs):
    """Runs `code` (formatted with `kwargs`) once per backend in a subprocess.

    The snippet prints one JSON document on its last line of stdout; the
    parsed documents are returned as a dict backend -> value.
    """
    code = textwrap.dedent(code).format(**kwargs)
    results = {}
    for backend in backends:
        env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=REPO_ROOT)
        env.pop("XLA_FLAGS", None)
        proc = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise AssertionError(
                f"subprocess under {backend} failed:\n{proc.stderr[-4000:]}"
            )
        results[backend] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


def _task_model(layer, input_shape, task_spec):
    """A functional model `(x, task) -> layer(x, task)` around a layer."""
    features = keras.Input(input_shape[1:], name="features")
    if task_spec == "ids":
        task = keras.Input((), dtype="int32", name="task")
    else:
        task = keras.Input((task_spec,), name="task")
    outputs = layer(features, task)
    return keras.Model([features, task], outputs)


def _flat_outputs(outputs):
    return [keras.ops.convert_to_numpy(t) for t in keras.tree.flatten(outputs)]


def assert_allclose_structure(actual, expected, atol=1e-5, rtol=1e-5):
    actual, expected = _flat_outputs(actual), _flat_outputs(expected)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, atol=atol, rtol=rtol)


def run_layer_checks(
    layer_cls,
    init_kwargs,
    features,
    task,
    tmp_path,
    custom_objects=None,
    mixed_precision=True,
    atol=1e-5,
):
    """The checks every task-conditioned layer passes.

    Args:
        layer_cls: the layer class, called as `layer(features, task)`.
        init_kwargs: constructor arguments.
        features: a NumPy batch of inputs.
        task: a NumPy batch of int task ids (batch,) or float descriptors
            (batch, task_dim).
        tmp_path: a directory for saved files.
    Returns the layer built on `features` (for further checks).
    """
    task_spec = "ids" if np.issubdtype(task.dtype, np.integer) else task.shape[-1]

    # get_config is complete: a layer rebuilt from it has the same config.
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    rebuilt = layer_cls.from_config(config)
    assert rebuilt.get_config() == config

    # .keras round trip with identical outputs (inference mode), on random
    # trainable weights: at init many layers equal their base, which would let
    # a round trip that loses the adapted weights pass.
    model = _task_model(layer, features.shape, task_spec)
    rng = np.random.default_rng(0)
    for variable in layer.trainable_weights:
        if "float" in str(variable.dtype):
            variable.assign(0.3 * rng.normal(size=variable.shape))
    expected = model.predict([features, task], verbose=0)
    path = os.path.join(str(tmp_path), "layer.keras")
    model.save(path)
    loaded = keras.saving.load_model(
        path, custom_objects=custom_objects or {layer_cls.__name__: layer_cls}
    )
    assert_allclose_structure(
        loaded.predict([features, task], verbose=0), expected, atol=atol
    )

    # Compiled prediction (jit on JAX, XLA on TF) equals the eager call.
    eager = model([features, task], training=False)
    model.compile(jit_compile=current_backend() != "torch")
    compiled = model.predict([features, task], verbose=0)
    assert_allclose_structure(compiled, eager, atol=atol)

    # mixed_bfloat16: variables stay float32, compute and outputs bfloat16.
    if mixed_precision:
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy("mixed_bfloat16")
        try:
            mp_layer = layer_cls(**init_kwargs)
            outputs = mp_layer(features, task)
            for variable in mp_layer.weights:
                if "float" in str(variable.dtype):
                    assert variable.dtype == "float32", variable.path
            for output in keras.tree.flatten(outputs):
                dtype = keras.backend.standardize_dtype(output.dtype)
                assert dtype in ("bfloat16", "float32"), dtype
                assert np.all(np.isfinite(keras.ops.convert_to_numpy(
                    keras.ops.cast(output, "float32"))))
        finally:
            keras.config.set_dtype_policy(previous)
    return layer
