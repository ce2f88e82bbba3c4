"""Presets of the BabyAI family: the paper's network and training, and the
tiny CPU one.

    from zoo.babyai.presets import from_preset
    policy = from_preset("tiny", variant="polytropon")        # CPU levels
    policy = from_preset("paper", variant="expert", levels=LEVELS)
    policy = from_preset("runs/babyai/polytropon/seed_0/preset")  # saved

A preset gives the `BabyAIPolicy` arguments ("network") and the PPO
defaults ("training"). A directory written by `save_to_preset`
(config.json + policy.weights.h5, the variant and levels included) is a
preset too.

NOTE 1 (the tiny preset): one FiLM block, width 32, no memory, no batch
  norm; image values < 11 (networks.py NOTE 1). Its training settings
  (learning rate 1e-3, minibatches of 320) are ours, chosen for a budget
  of ~200K frames; the paper gives Adam 1e-4 with BabyAI's batch of 1280.
NOTE 2 (the allocation learning rate): the paper gives no value for
  BabyAI ("dual-speed": the allocation logits learn faster); CrossFit's
  is 100x the skills' (0.1 vs 1e-3). We use 10x by default.
"""

import json
import os

from zoo.babyai.envs import CPU_LEVELS, LEVELS, MissionTokenizer
from zoo.runs import lookup_preset


PRESETS = {
    "tiny": {
        "description": "one FiLM block of width 32, no memory (CPU runs, NOTE 1)",
        "network": {"max_value": 11, "image_embedding": 32, "width": 32,
                    "film_blocks": 1, "instruction_units": 32, "memory_units": 0,
                    "head_units": 64, "batch_norm": False},
        "training": {"levels": list(CPU_LEVELS), "frames": 200_000, "num_envs": 16,
                     "rollout_steps": 40, "minibatch_size": 320, "update_epochs": 4,
                     "recurrence": 1, "learning_rate": 1e-3,
                     "allocation_learning_rate": 1e-2, "gamma": 0.99, "lam": 0.99},
    },
    "paper": {
        "description": "BabyAI's bow_endpool_res: 2 FiLM blocks of 128, LSTM 128 "
                       "(GPU-sized)",
        "network": {"max_value": 147, "image_embedding": 128, "width": 128,
                    "film_blocks": 2, "instruction_units": 128, "memory_units": 128,
                    "head_units": 64, "batch_norm": True},
        "training": {"levels": list(LEVELS), "frames": 50_000_000, "num_envs": 64,
                     "rollout_steps": 40, "minibatch_size": 1280, "update_epochs": 4,
                     "recurrence": 20, "learning_rate": 1e-4,
                     "allocation_learning_rate": 1e-3, "gamma": 0.99, "lam": 0.99},
    },
}

_CONFIG_FILE = "config.json"
_WEIGHTS_FILE = "policy.weights.h5"


def get_preset(preset):
    """The preset's dict (a copy): a name of `PRESETS` or a saved directory."""
    return lookup_preset(preset, PRESETS, _CONFIG_FILE)


def from_preset(preset, variant=None, levels=None, num_skills=None, seed=0,
                **network_overrides):
    """A built `BabyAIPolicy` from a preset name or a saved directory.

    Args:
        preset: a key of `PRESETS` or a directory from `save_to_preset`
            (whose weights are loaded; its variant and levels are used).
        variant: one of `networks.VARIANTS` (required for a named preset).
        levels: the levels (tasks); default: the preset's.
        num_skills: skill inventory of the learned variants (default:
            `networks.default_num_skills(levels)`).
        seed: seed of the allocation noise.
        **network_overrides: other `BabyAIPolicy` arguments.

    Example:

    >>> policy = from_preset("tiny", variant="expert")
    >>> policy.num_tasks, policy.num_skills, policy.recurrent
    (4, 4, False)
    """
    import numpy as np

    from zoo.babyai.networks import BabyAIPolicy, skill_arguments

    config = get_preset(preset)
    saved = "policy" in config
    if saved:
        if variant not in (None, config["policy"]["variant"]) or levels not in (
                None, config["policy"]["levels"]):
            raise ValueError(f"The preset at {preset!r} holds a "
                             f"{config['policy']['variant']!r} policy of levels "
                             f"{config['policy']['levels']}; got variant={variant!r}, "
                             f"levels={levels!r}.")
        variant, levels = config["policy"]["variant"], config["policy"]["levels"]
        num_skills = config["policy"]["num_skills"]
    if variant is None:
        raise ValueError("from_preset needs variant= for a named preset.")
    levels = list(levels or config["training"]["levels"])
    arguments = skill_arguments(variant, levels, num_skills=num_skills, seed=seed)
    network = dict(config["network"], **network_overrides)
    network.setdefault("vocabulary_size", MissionTokenizer().vocabulary_size)
    policy = BabyAIPolicy(**arguments, **network)
    policy.variant, policy.levels = variant, levels
    observations = {"image": np.zeros((1, 7, 7, 3), "int32"),
                    "mission": np.zeros((1, 9), "int32")}
    memory = (np.zeros((1, policy.memory_size), "float32"),) if policy.recurrent else ()
    policy((observations, np.zeros(1, "int32"), *memory))
    if saved:
        policy.load_weights(os.path.join(preset, _WEIGHTS_FILE))
    return policy


def save_to_preset(policy, directory, training=None):
    """Writes a policy built by `from_preset` (network, variant, levels,
    weights) and optional training settings as a preset directory."""
    if not hasattr(policy, "variant"):
        raise ValueError("save_to_preset needs a policy built by from_preset "
                         "(it records the variant and the levels).")
    os.makedirs(directory, exist_ok=True)
    network = {key: value for key, value in policy.get_config().items()
               if key in ("max_value", "image_embedding", "width", "film_blocks",
                          "instruction_units", "memory_units", "head_units",
                          "batch_norm", "vocabulary_size", "num_actions")}
    config = {"network": network,
              "policy": {"variant": policy.variant, "levels": list(policy.levels),
                         "num_skills": policy.num_skills},
              "training": dict(training or {})}
    with open(os.path.join(directory, _CONFIG_FILE), "w") as file:
        json.dump(config, file, indent=2)
    policy.save_weights(os.path.join(directory, _WEIGHTS_FILE))
