"""The skill variants of the BabyAI experiment and the paper's expert
table, keras-free (the runner lists them before choosing a backend).

* "private": Z = I, one skill per task (num_skills = num_tasks);
* "shared": one skill for every task (Z = 1);
* "expert": Z fixed from the paper's level-to-skill table (Table 2,
  `EXPERT_SKILLS`);
* "polytropon": Z learned (Gumbel-sigmoid logits with their own learning
  rate);
* "polytropon-dense": the same with dense skills (the Table 3 ablation).
"""

import numpy as np

VARIANTS = ("private", "shared", "expert", "polytropon", "polytropon-dense")

# Paper Table 2: the skills (1-based) that generate each level.
EXPERT_SKILLS = {
    "GoTo": (1, 2, 3, 4, 8),
    "GoToObjMaze": (1, 8),
    "PickupLoc": (1, 2, 3, 6, 7),
    "PutNextLocal": (1, 2, 3, 5),
    "GoToLocal": (1, 2, 3, 4),
    "GoToRedBall": (1, 2, 3),
    "GoToRedBallGrey": (1, 2),
    "GoToObj": (1,),
}


def default_num_skills(levels):
    """The highest expert skill used by `levels` (4 for the CPU levels,
    8 for all 8; the paper's 9 gives one skill no level uses)."""
    return max(max(EXPERT_SKILLS[level]) for level in levels)


def expert_matrix(levels, num_skills=None):
    """The 0/1 (levels, num_skills) matrix of paper Table 2: row i has a 1
    in column k - 1 for every skill k of level i.

    >>> expert_matrix(["GoToObj", "GoToRedBallGrey", "GoToRedBall"])
    array([[1, 0, 0],
           [1, 1, 0],
           [1, 1, 1]])
    """
    unknown = [level for level in levels if level not in EXPERT_SKILLS]
    if unknown:
        raise ValueError(f"No expert skills for levels {unknown}; known: "
                         f"{', '.join(EXPERT_SKILLS)}.")
    needed = default_num_skills(levels)
    num_skills = needed if num_skills is None else int(num_skills)
    if num_skills < needed:
        raise ValueError(f"The expert table of {list(levels)} uses skill {needed}; "
                         f"num_skills={num_skills} is too few.")
    matrix = np.zeros((len(levels), num_skills), int)
    for row, level in enumerate(levels):
        matrix[row, [skill - 1 for skill in EXPERT_SKILLS[level]]] = 1
    return matrix


def skill_arguments(variant, levels, num_skills=None, sft_sparsity=0.9,
                    temperature=1.0, seed=0):
    """The skill layers' arguments of a variant (module docstring).

    >>> args = skill_arguments("private", ["GoToObj", "GoToLocal"])
    >>> args["allocation"], args["num_skills"]
    ('private', 2)
    """
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; expected one of "
                         f"{', '.join(VARIANTS)}.")
    levels = list(levels)
    num_tasks = len(levels)
    arguments = {"num_tasks": num_tasks, "sft_sparsity": float(sft_sparsity),
                 "temperature": float(temperature), "seed": seed}
    if variant == "private":
        arguments.update(allocation="private", num_skills=num_tasks)
    elif variant == "shared":
        arguments.update(allocation="shared", num_skills=1)
    elif variant == "expert":
        matrix = expert_matrix(levels, num_skills)
        arguments.update(allocation="fixed", num_skills=matrix.shape[1],
                         expert_matrix=matrix.tolist())
    else:
        arguments.update(allocation="learned",
                         num_skills=num_skills or default_num_skills(levels))
        if variant == "polytropon-dense":
            arguments["sft_sparsity"] = 0.0
    return arguments
