"""Multi-task SAC on Meta-World: actor and critic families (Soft
Modularization, MINT, MT-SAC, MT-MH-SAC and other baselines), their paper
sizes, the MT10 / MT50 vector environments, evaluation by success rate, and
the `mt10` / `mt50` experiments.

    from zoo.metaworld import make_env, build_actor_critic
    env = make_env("mt10")
    actor, critic = build_actor_critic("mt10/soft-modular", 10, 4)

Names are imported lazily so that importing the family (the runner does,
to list its experiments) does not import keras before the backend is set.
"""

from zoo.lazy import lazy_attributes

# The actor/critic families of networks.py, here so that the runner can
# list them without importing keras.
NETWORKS = ("mt-sac", "mt-mh-sac", "mint", "film", "concat-all-fc",
            "soft-modular", "independent", "moe", "hard-routing")
# Names `python -m zoo run mt10 --network` accepts: the networks (at the
# benchmark's paper size) and the Soft Modularization sizes by name.
NETWORK_PRESETS = NETWORKS + ("soft-modular-shallow", "soft-modular-deep")

_LAZY = {
    "make_env": "zoo.metaworld.envs",
    "task_names": "zoo.metaworld.envs",
    "evaluate_success": "zoo.metaworld.envs",
    "BENCHMARKS": "zoo.metaworld.envs",
    "FakeMultiTaskVectorEnv": "zoo.metaworld.fake_env",
    "MultiTaskActor": "zoo.metaworld.networks",
    "MultiTaskCritic": "zoo.metaworld.networks",
    "build_actor_critic": "zoo.metaworld.networks",
    "PRESETS": "zoo.metaworld.networks",
}

__getattr__, __dir__, __all__ = lazy_attributes(
    "zoo.metaworld", _LAZY, eager=("NETWORKS", "NETWORK_PRESETS"))
