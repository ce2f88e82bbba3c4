"""Polytropon skills on KerasHub BART (paper Section 5, CrossFit).

    from zoo.polytropon import SkillBartSeq2SeqLM
    model = SkillBartSeq2SeqLM.from_preset("bart_base_en", num_tasks=3)
    model.generate({"encoder_text": ["..."], "task_ids": [0]})

Names are imported lazily so that importing the family imports neither
keras nor keras_hub.
"""

from zoo.lazy import lazy_attributes

_LAZY = {
    name: "zoo.polytropon.bart" for name in (
        "SkillBartSeq2SeqLM", "SkillBartSeq2SeqLMPreprocessor", "BartSkills",
        "ATTENTIONS", "PROJECTIONS", "DEFAULT_TARGETS", "normalize_targets",
        "read_skills_config")
}

__getattr__, __dir__, __all__ = lazy_attributes("zoo.polytropon", _LAZY)
