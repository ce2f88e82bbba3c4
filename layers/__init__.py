"""The four modular layers, backend-agnostic (pure keras.ops).

    from layers import SkillLoRADense, MintLayer, SoftModularBlock, HyperDense
    from layers import SkillConv2D  # Polytropon skills on a convolution
"""

from layers.cross_stitch import CrossStitch
from layers.film_layer import FiLMLayer
from layers.hyper_dense import HyperDense, HyperGenerator, HyperMLP
from layers.mint_layer import MintLayer
from layers.skill_conv import SkillConv2D
from layers.skill_lora_dense import (
    SkillLoRADense,
    SkillLoRAEinsumDense,
    current_task_ids,
    skill_allocation_metrics,
    task_context,
)
from layers.soft_modular_block import (
    SOFT_MODULAR_CONFIGS,
    OutputUnitsUniform,
    SoftModularBlock,
)
from layers.task_dense import TaskDense

__all__ = [
    "CrossStitch",
    "FiLMLayer",
    "HyperDense",
    "HyperGenerator",
    "HyperMLP",
    "MintLayer",
    "OutputUnitsUniform",
    "SOFT_MODULAR_CONFIGS",
    "SkillConv2D",
    "SkillLoRADense",
    "SkillLoRAEinsumDense",
    "SoftModularBlock",
    "TaskDense",
    "current_task_ids",
    "skill_allocation_metrics",
    "task_context",
]
