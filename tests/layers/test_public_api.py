"""The public names of `layers` import and are the documented classes."""

import keras

import layers


def test_public_names_resolve_and_layers_are_keras_layers():
    for name in layers.__all__:
        assert hasattr(layers, name), name
    for cls in (layers.SkillLoRADense, layers.SkillLoRAEinsumDense, layers.MintLayer,
                layers.FiLMLayer, layers.SoftModularBlock, layers.HyperDense):
        assert issubclass(cls, keras.layers.Layer)
        assert keras.saving.get_registered_name(cls).startswith("modular_zoo>")
