"""One shared harness for the project's tests.

* `run_layer_checks` puts a task-conditioned layer through the checks every
  layer of the project must pass, in the spirit of keras's own
  `run_layer_test`: config round trip, exact output shapes and
  `compute_output_shape`, weight counts, a build by the first call inside a
  subclassed model (the way an RL policy holds a layer) and inside a
  functional model, one `fit` step, `.keras` save/load on random weights,
  compiled prediction equal to the eager call, and mixed_bfloat16 against
  float32 on the same random weights.
* `assert_same_across_backends` runs a snippet in this process and under
  every other backend (in subprocesses: KERAS_BACKEND is fixed when keras is
  first imported) and compares the JSON documents the runs print.
* `run_in_backends` is the subprocess runner underneath, for tests that
  compare something other than one document per backend.
"""

import contextlib
import io
import json
import os
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("tensorflow", "jax", "torch")

# On torch, `compile(jit_compile=True)` makes `predict` use `torch.compile`
# (inductor). Measured on this 2-core CPU (torch 2.13, keras 3.15): the first
# compiled prediction of a process took 26 s, each later layer 3-8.5 s
# (2-5 s with a warm on-disk inductor cache), nearly all of it dynamo
# tracing keras's call path (the "eager" and "aot_eager" backends took
# 3.4-6.9 s too), against 0.05-0.6 s for all the other torch checks of a
# layer together. So by default the torch check is named for what it is:
# `predict()` (a no_grad step outside the eager call path) equals the eager
# call. JAX (jax.jit) and TensorFlow (XLA) compile. Set this to True (the
# slow test `test_layer_checks_with_torch_compile` does) to compile on torch.
TORCH_COMPILE_PREDICT = False


def current_backend():
    return keras.backend.backend()


def other_backends():
    return [b for b in BACKENDS if b != current_backend()]


# -- Cross-backend runs. ------------------------------------------------------
def _subprocess_env(backend):
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=REPO_ROOT)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.pop("XLA_FLAGS", None)
    return env


def _last_json_line(stdout, where):
    lines = stdout.strip().splitlines()
    if not lines:
        raise AssertionError(f"the snippet printed nothing {where}")
    return json.loads(lines[-1])


def run_in_backends(code, backends, timeout=600, **format_kwargs):
    """Runs `code` once per backend in subprocesses (run side by side).

    Args:
        code: Python source; formatted with `str.format(**format_kwargs)`
            (so literal braces are written `{{` and `}}`). It prints one
            JSON document on its last line of stdout.
        backends: the backends to run it under.
        timeout: seconds allowed to each subprocess.
        **format_kwargs: values substituted into `code`.

    Returns:
        A dict backend -> the parsed JSON document.
    """
    return _run_sources(
        textwrap.dedent(code).format(**format_kwargs), backends, timeout
    )


def _run_sources(code, backends, timeout=600):
    procs = {}
    for backend in backends:
        procs[backend] = subprocess.Popen(
            [sys.executable, "-c", code],
            env=_subprocess_env(backend),
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    results, failures = {}, []
    for backend, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            failures.append(f"{backend}: timed out after {timeout} s")
            continue
        if proc.returncode != 0:
            failures.append(
                f"subprocess under {backend} failed:\n{stderr[-4000:]}"
            )
            continue
        results[backend] = _last_json_line(stdout, f"under {backend}")
    if failures:
        raise AssertionError("\n".join(failures))
    return results


def _assert_documents_close(actual, expected, atol, rtol, path="document"):
    """Compares two JSON documents: same structure, numbers within tolerance."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: {type(actual).__name__}"
        assert sorted(actual) == sorted(expected), (
            f"{path}: keys {sorted(actual)} != {sorted(expected)}"
        )
        for key in expected:
            _assert_documents_close(
                actual[key], expected[key], atol, rtol, f"{path}[{key!r}]"
            )
        return
    if isinstance(expected, list):
        assert isinstance(actual, list), f"{path}: {type(actual).__name__}"
        assert len(actual) == len(expected), (
            f"{path}: length {len(actual)} != {len(expected)}"
        )
        try:  # A rectangular array of numbers: one vectorised comparison.
            expected_array = np.asarray(expected, dtype="float64")
            actual_array = np.asarray(actual, dtype="float64")
        except (TypeError, ValueError):
            expected_array = actual_array = None
        if expected_array is not None and expected_array.shape == actual_array.shape:
            np.testing.assert_allclose(
                actual_array, expected_array, atol=atol, rtol=rtol, err_msg=path
            )
            return
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _assert_documents_close(a, e, atol, rtol, f"{path}[{index}]")
        return
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        assert isinstance(actual, (int, float)) and not isinstance(actual, bool), (
            f"{path}: {actual!r} is not a number"
        )
        np.testing.assert_allclose(actual, expected, atol=atol, rtol=rtol,
                                   err_msg=path)
        return
    assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def assert_same_across_backends(code, atol=1e-5, rtol=1e-5, **format_kwargs):
    """Runs a snippet here and under every other backend; compares the output.

    The snippet (formatted with `str.format(**format_kwargs)`: write literal
    braces as `{{` and `}}`) prints one JSON document on its last line of
    stdout. It runs in this process (the active backend) and in one
    subprocess per other backend. The documents must have the same structure
    (dict keys, list lengths, strings, booleans) and numbers equal within
    `atol` + `rtol` * |expected|.

    Returns:
        The document of this process, for further checks (e.g. that the
        snippet computes something non-trivial).
    """
    source = textwrap.dedent(code).format(**format_kwargs)
    namespace = {"__name__": "__cross_backend_snippet__"}
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(compile(source, "<cross-backend snippet>", "exec"), namespace)
    here = _last_json_line(printed.getvalue(), f"under {current_backend()}")
    others = _run_sources(source, other_backends())
    assert sorted(others) == sorted(other_backends())
    for backend, document in others.items():
        _assert_documents_close(
            document, here, atol, rtol,
            path=f"{backend} vs {current_backend()}",
        )
    return here


# -- Output structures. -------------------------------------------------------
def _is_shape(value):
    return isinstance(value, tuple) and all(
        isinstance(d, (int, type(None))) for d in value
    )


def _flatten_shapes(structure):
    """Leaves of a nested structure of shape tuples, in keras.tree order."""
    if _is_shape(structure):
        return [tuple(structure)]
    if isinstance(structure, dict):
        return [s for key in sorted(structure)
                for s in _flatten_shapes(structure[key])]
    if isinstance(structure, (list, tuple)):
        return [s for item in structure for s in _flatten_shapes(item)]
    raise TypeError(
        f"expected_output_shape must be a shape tuple or a nested structure "
        f"of shape tuples; got {structure!r}."
    )


def _flat_outputs(outputs):
    return [keras.ops.convert_to_numpy(t) for t in keras.tree.flatten(outputs)]


def assert_allclose_structure(actual, expected, atol=1e-5, rtol=1e-5,
                              what="outputs"):
    actual, expected = _flat_outputs(actual), _flat_outputs(expected)
    assert len(actual) == len(expected), (
        f"{what}: {len(actual)} outputs != {len(expected)}"
    )
    for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
        np.testing.assert_allclose(
            np.asarray(a, "float32"), np.asarray(e, "float32"),
            atol=atol, rtol=rtol, err_msg=f"{what}, output {index}",
        )


def _assert_output_shapes(outputs, expected_shapes, what):
    shapes = [tuple(t.shape) for t in keras.tree.flatten(outputs)]
    assert shapes == expected_shapes, (
        f"{what}: output shapes {shapes}, expected {expected_shapes}"
    )


def _is_float(tensor):
    return "float" in keras.backend.standardize_dtype(tensor.dtype)


def _as_one_tensor(outputs):
    """The layer's output, or its float outputs flattened and concatenated."""
    leaves = keras.tree.flatten(outputs)
    if len(leaves) == 1:
        return leaves[0]
    ops = keras.ops
    return ops.concatenate(
        [
            ops.reshape(ops.cast(t, "float32"), (ops.shape(t)[0], -1))
            for t in leaves
            if _is_float(t)
        ],
        axis=-1,
    )


# -- Models around a layer. ---------------------------------------------------
class _PolicyModel(keras.Model):
    """A subclassed model holding a layer, as an RL policy network does.

    Its first call builds the layer from inside the model's own build (on
    TensorFlow, Keras first traces `call` symbolically): layers that create
    state or draw random numbers at build time must survive that.
    """

    def __init__(self, layer, call_kwargs, name="policy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.layer = layer
        self.call_kwargs = dict(call_kwargs)

    def call(self, inputs):
        outputs = self.layer(inputs["features"], inputs["task"],
                             **self.call_kwargs)
        return _as_one_tensor(outputs)


def _functional_model(layer, features, task, call_kwargs):
    """A functional model `(features, task) -> layer(features, task)`."""
    features_input = keras.Input(
        features.shape[1:], dtype=str(features.dtype), name="features"
    )
    task_input = keras.Input(task.shape[1:], dtype=str(task.dtype), name="task")
    outputs = layer(features_input, task_input, **call_kwargs)
    return keras.Model([features_input, task_input], outputs)


def _with_dtype_policy(config, name):
    """A layer config whose float32 dtype policies (nested too) are `name`."""
    if isinstance(config, dict):
        if (
            config.get("class_name") == "DTypePolicy"
            and config.get("config", {}).get("name") == "float32"
        ):
            return dict(config, config=dict(config["config"], name=name))
        return {
            key: (
                name if key == "dtype" and value == "float32"
                else _with_dtype_policy(value, name)
            )
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [_with_dtype_policy(value, name) for value in config]
    return config


@contextlib.contextmanager
def _dtype_policy(name):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


# Seconds spent in each check of the last `run_layer_checks` call (for
# measuring the harness's cost; nothing asserts on it).
LAST_TIMINGS = {}


class _Laps:
    def __init__(self):
        LAST_TIMINGS.clear()
        self.last = time.perf_counter()

    def lap(self, name):
        now = time.perf_counter()
        LAST_TIMINGS[name] = now - self.last
        self.last = now


def _names(variables):
    return [v.path for v in variables]


# -- The layer checks. --------------------------------------------------------
def run_layer_checks(
    layer_cls,
    init_kwargs,
    features,
    task,
    tmp_path,
    *,
    expected_output_shape,
    expected_num_trainable_weights,
    expected_num_non_trainable_weights=0,
    call_kwargs=None,
    custom_objects=None,
    mixed_precision=True,
    atol=1e-5,
    bf16_atol=5e-2,
):
    """The checks every task-conditioned layer of the project passes.

    1. Config round trip: `from_config(get_config())` has the same config.
    2. Built by its first call inside a subclassed `keras.Model` whose
       `call(inputs)` takes a dict {"features", "task"} (an RL policy).
    3. Output shapes equal `expected_output_shape` exactly (a tuple, or a
       nested structure of tuples for several outputs); `compute_output_shape`
       is implemented and, through `compute_output_spec`, agrees.
    4. Weight counts: trainable and non-trainable.
    5. One `fit` step (SGD, mse against a random target), on random
       trainable weights, changes every trainable weight and the outputs.
    6. A second layer, from the config, built inside a functional model:
       symbolic output shapes, weight counts, and on the same random weights
       the eager call equals the first layer's outputs.
    7. `.keras` save/load of the functional model keeps the outputs.
    8. Compiled prediction equals the eager call: `jit_compile=True` on JAX
       and TensorFlow; on torch `predict()` equals the eager call
       (`TORCH_COMPILE_PREDICT`).
    9. mixed_bfloat16: variables stay float32, float outputs are bfloat16
       and, on the same random float32 weights, within
       `bf16_atol * max(1, max|float32 output|)` of the float32 outputs.

    Args:
        layer_cls: the layer class, called as `layer(features, task,
            **call_kwargs)`.
        init_kwargs: constructor arguments.
        features: a NumPy batch of float inputs.
        task: a NumPy batch of integer task ids (batch,) or float task
            descriptors (batch, ...).
        tmp_path: a directory for saved files.
        expected_output_shape: the exact output shape for `features`, or a
            nested structure of shapes (keras.tree order) for several
            outputs.
        expected_num_trainable_weights: `len(layer.trainable_weights)`.
        expected_num_non_trainable_weights: `len(layer.non_trainable_weights)`.
        call_kwargs: extra call options (e.g. `{"return_routing": True}`);
            not `training` (each check sets the mode).
        custom_objects: for loading; default `{layer_cls.__name__: layer_cls}`.
        mixed_precision: whether to run the mixed_bfloat16 check.
        atol: tolerance of float32 comparisons.
        bf16_atol: tolerance of bfloat16 against float32, relative to the
            output scale (at least 1).

    Returns:
        The layer built inside the functional model, holding the random
        weights.
    """
    call_kwargs = dict(call_kwargs or {})
    assert "training" not in call_kwargs, "the harness sets `training` itself"
    expected_shapes = _flatten_shapes(expected_output_shape)
    custom_objects = custom_objects or {layer_cls.__name__: layer_cls}
    inputs = {"features": features, "task": task}
    rng = np.random.default_rng(0)
    laps = _Laps()

    # 1. get_config is complete: a layer rebuilt from it has the same config.
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    assert layer_cls.from_config(config).get_config() == config

    laps.lap("config")

    # 2. Built by the first call inside a subclassed model.
    policy = _PolicyModel(layer, call_kwargs)
    try:
        policy(inputs)
    except Exception as error:
        raise AssertionError(
            f"{layer_cls.__name__} fails when built by the first call of a "
            f"subclassed keras.Model on {current_backend()}: "
            f"{type(error).__name__}: {error}"
        ) from error
    assert layer.built

    laps.lap("subclassed build")

    # 3. Output shapes and compute_output_shape.
    outputs = layer(features, task, training=False, **call_kwargs)
    _assert_output_shapes(outputs, expected_shapes, "eager call")
    # Keras marks its base-class placeholder `_is_default` (keras.src
    # utils.default); an overriding method has no such mark.
    assert not getattr(layer.compute_output_shape, "_is_default", False), (
        f"{layer_cls.__name__} does not implement compute_output_shape"
    )
    spec = layer.compute_output_spec(
        keras.KerasTensor(features.shape, dtype=str(features.dtype)),
        keras.KerasTensor(task.shape, dtype=str(task.dtype)),
        **call_kwargs,
    )
    _assert_output_shapes(spec, expected_shapes, "compute_output_shape")

    # 4. Weight counts.
    assert len(layer.trainable_weights) == expected_num_trainable_weights, (
        _names(layer.trainable_weights)
    )
    assert len(layer.non_trainable_weights) == (
        expected_num_non_trainable_weights
    ), _names(layer.non_trainable_weights)

    # Random trainable weights: at init many layers equal their base (Mint
    # is the identity, LoRA its frozen layer), and zero-initialised parts
    # receive no gradient.
    for variable in layer.trainable_weights:
        if _is_float(variable):
            variable.assign(
                0.3 * rng.normal(size=variable.shape).astype("float32")
            )
    weights = layer.get_weights()
    reference = layer(features, task, training=False, **call_kwargs)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(policy(inputs, training=False)),
        keras.ops.convert_to_numpy(_as_one_tensor(reference)),
        atol=atol, rtol=atol,
    )

    laps.lap("shapes, weights, random weights")

    # 5. One fit step changes every trainable weight and the outputs.
    policy_outputs = keras.ops.convert_to_numpy(policy(inputs, training=False))
    policy.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse",
                   jit_compile="auto")
    target = rng.normal(size=policy_outputs.shape).astype("float32")
    before = [keras.ops.convert_to_numpy(v) for v in layer.trainable_weights]
    policy.fit(inputs, target, batch_size=len(features), epochs=1,
               shuffle=False, verbose=0)
    unchanged = [
        variable.path
        for variable, value in zip(layer.trainable_weights, before, strict=True)
        if np.array_equal(keras.ops.convert_to_numpy(variable), value)
    ]
    assert not unchanged, f"one fit step left unchanged: {unchanged}"
    assert not np.allclose(
        keras.ops.convert_to_numpy(policy(inputs, training=False)),
        policy_outputs,
    ), "one fit step left the outputs unchanged"

    laps.lap("fit step")

    # 6. A layer from the config, built inside a functional model.
    functional_layer = layer_cls.from_config(config)
    model = _functional_model(functional_layer, features, task, call_kwargs)
    symbolic = [tuple(t.shape) for t in keras.tree.flatten(model.outputs)]
    assert len(symbolic) == len(expected_shapes), symbolic
    for got, want in zip(symbolic, expected_shapes, strict=True):
        assert len(got) == len(want) and got[1:] == want[1:] and (
            got[0] in (None, want[0])
        ), f"functional model: symbolic shapes {symbolic}, expected {expected_shapes}"
    assert len(functional_layer.trainable_weights) == (
        expected_num_trainable_weights
    )
    assert len(functional_layer.non_trainable_weights) == (
        expected_num_non_trainable_weights
    )
    functional_layer.set_weights(weights)
    eager = model([features, task], training=False)
    assert_allclose_structure(eager, reference, atol=atol, rtol=atol,
                              what="functional model vs the layer")

    laps.lap("functional build")

    # 7. .keras round trip on the random weights.
    path = os.path.join(str(tmp_path), f"{layer_cls.__name__}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, custom_objects=custom_objects)
    assert_allclose_structure(
        loaded([features, task], training=False), eager, atol=atol, rtol=atol,
        what="loaded .keras model",
    )

    laps.lap("save/load")

    # 8. Compiled prediction equals the eager call (named for what it is
    # on torch, see TORCH_COMPILE_PREDICT).
    jit = current_backend() != "torch" or TORCH_COMPILE_PREDICT
    model.compile(jit_compile=jit)
    predicted = model.predict([features, task], batch_size=len(features),
                              verbose=0)
    assert_allclose_structure(
        predicted, eager, atol=atol, rtol=atol,
        what="compiled predict()" if jit else "predict()",
    )

    laps.lap("compiled predict")

    # 9. mixed_bfloat16 on the same random weights.
    if mixed_precision:
        with _dtype_policy("mixed_bfloat16"):
            mp_layer = layer_cls.from_config(
                _with_dtype_policy(config, "mixed_bfloat16")
            )
            mp_layer(features, task, training=False, **call_kwargs)
            for variable in mp_layer.weights:
                if _is_float(variable):
                    assert keras.backend.standardize_dtype(
                        variable.dtype
                    ) == "float32", variable.path
            mp_layer.set_weights(weights)
            mp_outputs = mp_layer(features, task, training=False, **call_kwargs)
        _assert_output_shapes(mp_outputs, expected_shapes, "mixed_bfloat16")
        mp_leaves = keras.tree.flatten(mp_outputs)
        ref_leaves = keras.tree.flatten(reference)
        for index, (mp, ref) in enumerate(
            zip(mp_leaves, ref_leaves, strict=True)
        ):
            if not _is_float(ref):
                continue
            dtype = keras.backend.standardize_dtype(mp.dtype)
            assert dtype == "bfloat16", (
                f"mixed_bfloat16 output {index} has dtype {dtype}"
            )
            mp = keras.ops.convert_to_numpy(keras.ops.cast(mp, "float32"))
            ref = keras.ops.convert_to_numpy(ref)
            scale = max(1.0, float(np.max(np.abs(ref))))
            np.testing.assert_allclose(
                mp, ref, rtol=0, atol=bf16_atol * scale,
                err_msg=f"mixed_bfloat16 vs float32, output {index}",
            )
        laps.lap("mixed_bfloat16")
    return functional_layer
