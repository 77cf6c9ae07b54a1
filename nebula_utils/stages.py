"""Registry: stage name (= notebook stem) -> its typed config dataclass.

Stored as import strings so that resolving configs never imports torch or TRL.
"""

from __future__ import annotations

import importlib

from .config import ConfigError

STAGES: dict[str, str] = {
    "00_environment": "nebula_utils.environment:EnvironmentConfig",
    "10_data_sft_mix": "nebula_utils.data_mix:SFTMixConfig",
    "11_distill": "nebula_utils.data_distill:DistillConfig",
    "12_filter": "nebula_utils.data_filter:FilterConfig",
    "13_difficulty": "nebula_utils.data_difficulty:DifficultyConfig",
    "14_classify_sample": "nebula_utils.curation:ClassifySampleConfig",
    "15_decontam": "nebula_utils.curation:DecontamConfig",
    "16_curriculum": "nebula_utils.curriculum:CurriculumConfig",
    "20_sft": "nebula_utils.sft:SFTStageConfig",
    "60_eval": "nebula_utils.evaluate:EvalStageConfig",
    "90_report": "nebula_utils.report:ReportStageConfig",
}


def stage_config_class(stage: str) -> type:
    try:
        target = STAGES[stage]
    except KeyError:
        raise ConfigError(f"unknown stage '{stage}' (known: {', '.join(sorted(STAGES))})") from None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
