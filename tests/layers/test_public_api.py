"""The public names of `layers` import and are the documented classes."""

import keras

import layers


def test_public_names_resolve_and_layers_are_keras_layers():
    for name in layers.__all__:
        assert hasattr(layers, name), name
    for cls in (layers.SkillLoRADense, layers.SkillLoRAEinsumDense, layers.MintLayer,
                layers.FiLMLayer, layers.SoftModularBlock, layers.HyperDense,
                layers.TaskDense, layers.CrossStitch, layers.SkillConv2D):
        assert issubclass(cls, keras.layers.Layer)
        assert keras.saving.get_registered_name(cls).startswith("modular_zoo>")


def test_layers_import_and_infer_under_the_numpy_backend():
    """Layers import nothing from training/ and run inference on any backend."""
    import os
    import subprocess
    import sys

    from tests.harness import REPO_ROOT

    code = """
import numpy as np
import layers
x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
ids = np.array([0, 1, 1, 0])
outputs = [
    layers.MintLayer(num_tasks=2)(x, ids),
    layers.FiLMLayer(num_tasks=2)(x, ids),
    layers.SkillLoRADense(3, num_tasks=2, num_skills=2, rank=1)(x, ids),
    layers.HyperDense(3, embedding_dim=4, num_tasks=2)(x, ids),
    layers.SoftModularBlock(2, 2, 8, num_tasks=2, routing_units=8,
                            observation_embedding_units=8)(x, ids),
    layers.TaskDense(3, num_tasks=2)(x, ids),
    layers.TaskDense(3, num_tasks=2)(x),
    layers.CrossStitch(num_tasks=2)(x.reshape(4, 2, 3)),
    layers.SkillConv2D(3, 3, num_tasks=2, num_skills=2, padding="same")(
        x.reshape(4, 1, 6, 1), ids),
]
import sys
assert not any(m.split(".")[0] in ("training", "zoo") for m in sys.modules)
print([tuple(o.shape) for o in outputs])
"""
    env = dict(os.environ, KERAS_BACKEND="numpy", PYTHONPATH=REPO_ROOT)
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == (
        "[(4, 6), (4, 6), (4, 3), (4, 3), (4, 8), (4, 3), (4, 2, 3), (4, 2, 3), (4, 1, 6, 3)]")
