"""Polytropon skills on KerasHub BART (SkillBartSeq2SeqLM)."""
