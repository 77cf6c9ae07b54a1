"""Stage 00: what this machine is — library versions, devices, threads, model availability."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from typing import Any

from ..config import StageConfig, doc


@dataclass
class EnvironmentConfig(StageConfig):
    models: list[str] = doc("model specs to resolve up front (packaged ones are converted into the cache once)")


def device_report() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset"),
        "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES", "unset"),  # allocator thresholds: see inference/cpu.py
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
    from ..inference.generation import vllm_available

    info["vllm_usable"] = vllm_available()
    return info


def model_report(specs: list[str]) -> list[dict[str, Any]]:
    """Resolve each spec to a local folder; a failure is reported, not raised."""
    import json
    from pathlib import Path

    from ..inference.models import ModelNotAvailable, resolve_model_path

    rows = []
    for spec in specs:
        try:
            path = resolve_model_path(spec)
            cfg = json.loads((Path(path) / "config.json").read_text())
            rows.append(
                {
                    "spec": spec,
                    "ok": True,
                    "path": path,
                    "architecture": cfg.get("architectures", ["?"])[0],
                    "layers": cfg.get("num_hidden_layers"),
                    "hidden": cfg.get("hidden_size"),
                }
            )
        except ModelNotAvailable as exc:
            rows.append({"spec": spec, "ok": False, "error": str(exc)})
    return rows
