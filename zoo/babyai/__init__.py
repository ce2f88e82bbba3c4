"""Polytropon on BabyAI: the paper's 8 levels of MiniGrid 3 as one
multitask vector environment (a level drawn per episode, its index as the
task id), the mission tokenizer, the policy with skills on every layer
(`BabyAIPolicy`, its variants and presets) and the `babyai` experiment.

    from zoo.babyai import make_multitask_env, prepare_observations
    env = make_multitask_env(num_envs=16)          # the 4 CPU levels
    observations, infos = env.reset(seed=0)
    inputs = prepare_observations(observations)    # image, mission ids

Names are imported lazily so that importing the family (the runner does,
to list its experiments) imports neither keras nor minigrid.
"""

from zoo.lazy import lazy_attributes

_LAZY = {
    name: "zoo.babyai.envs" for name in (
        "LEVELS", "CPU_LEVELS", "MAX_STEPS", "NUM_ACTIONS", "MISSION_WORDS",
        "MAX_MISSION_TOKENS", "PAD_ID", "UNKNOWN_ID", "MissionTokenizer",
        "MultiLevelEnv", "gym_id", "level_names", "make_multitask_env",
        "prepare_observations", "random_policy_success")
}
_LAZY.update({name: "zoo.babyai.variants" for name in (
    "VARIANTS", "EXPERT_SKILLS", "expert_matrix", "skill_arguments",
    "default_num_skills")})
_LAZY.update({"BabyAIPolicy": "zoo.babyai.networks",
              "PRESETS": "zoo.babyai.presets", "get_preset": "zoo.babyai.presets",
              "from_preset": "zoo.babyai.presets",
              "save_to_preset": "zoo.babyai.presets"})

__getattr__, __dir__, __all__ = lazy_attributes("zoo.babyai", _LAZY)
