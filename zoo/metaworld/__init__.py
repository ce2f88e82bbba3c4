"""Multi-task SAC on Meta-World: actor and critic families (Soft
Modularization, MINT, MT-SAC, MT-MH-SAC and other baselines), their paper
sizes, the MT10 / MT50 vector environments (random or fixed goals),
evaluation by success rate, MINT's goal-conditioned pushing (a push-v3
vector environment over a table of goals, goal-conditioned networks), and
the `mt10` / `mt50` / `mint-push` experiments.

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
# The goal-conditioned networks of MINT's pushing experiment (networks.py
# NOTE 9), the names `python -m zoo run mint-push --network` accepts.
GOAL_NETWORKS = ("mint-goal", "sac-goal", "concat-all-fc")

_LAZY = {
    "make_env": "zoo.metaworld.envs",
    "task_names": "zoo.metaworld.envs",
    "evaluate_success": "zoo.metaworld.envs",
    "BENCHMARKS": "zoo.metaworld.envs",
    "run_episodes": "zoo.metaworld.envs",
    "make_push_env": "zoo.metaworld.goal_push",
    "goal_table": "zoo.metaworld.goal_push",
    "evaluate_goals": "zoo.metaworld.goal_push",
    "FakeMultiTaskVectorEnv": "zoo.metaworld.fake_env",
    "MultiTaskActor": "zoo.metaworld.networks",
    "MultiTaskCritic": "zoo.metaworld.networks",
    "build_actor_critic": "zoo.metaworld.networks",
    "PRESETS": "zoo.metaworld.networks",
}

__getattr__, __dir__, __all__ = lazy_attributes(
    "zoo.metaworld", _LAZY, eager=("NETWORKS", "NETWORK_PRESETS", "GOAL_NETWORKS"))
