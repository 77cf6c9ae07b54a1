"""Stage 51_mopd: routing config checks, the full-scale (vLLM servers) params mapping onto TRL's
async config, and the notebook routing two tiny teachers through papermill (the trainer itself is
tested in tests/train/test_mopd.py)."""

from __future__ import annotations

import json

import pytest

from tests.factories import copied_model, perturbed_model, small_mix


@pytest.mark.parametrize(
    "over,match",
    [
        ({"teachers": {"default": "x"}}, "key 'teachers': 'default' is the fallback"),
        ({"teachers": {"code": ""}}, "key 'teachers': task 'code' has no teacher"),
        ({"teacher_offload": "gpu"}, "key 'teacher_offload'"),
        ({"max_resident_teachers": 0}, "key 'max_resident_teachers'"),
        ({"backend": "ray"}, "key 'backend'"),
        ({"backend": "vllm_servers", "teachers": {"code": "y"}}, "no server URL for teacher 'default'"),
        (
            {"backend": "vllm_servers", "teacher_servers": {"default": "http://a:1"}},
            "key 'student_server'",
        ),
    ],
)
def test_bad_values_fail_when_the_config_is_built(stage_config, over, match):
    from nebula_utils.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        stage_config("51_mopd", **({"teacher": "tiny-random"} | over))


def test_server_params_map_onto_trls_async_config(stage_config, tmp_path):
    """Config level only: the async trainer itself needs CUDA, vLLM and servers (not run here)."""
    from nebula_utils.train.mopd_async import async_config

    cfg = stage_config(
        "51_mopd",
        teacher="tiny-random",
        teachers={"math_reasoning": "m", "code": "c"},
        backend="vllm_servers",
        teacher_servers={"default": "http://t:8001", "math_reasoning": "http://t:8002", "code": "http://t:8003"},
        student_server="http://s:8000",
        num_samples=10_000,
        trl_overrides={"bf16": False, "use_cpu": True},
    )
    args = async_config(cfg, tmp_path, prompts=2_500)
    assert args.teacher_server_urls == {
        "default": "http://t:8001",
        "math_reasoning": "http://t:8002",
        "code": "http://t:8003",
    }
    assert args.vllm_server_base_url == "http://s:8000" and args.num_train_epochs == 4.0 and args.beta == 1.0


@pytest.mark.slow
def test_notebook_routes_two_teachers(tmp_path, run_notebook, tiny_model_path):
    mix = small_mix(tmp_path / "mix")  # sft rows labelled math_reasoning (3) and code (2)
    run = run_notebook(
        "51_mopd",
        model=str(copied_model(tmp_path / "student")),
        teacher=str(perturbed_model(tmp_path / "math_teacher", seed=1)),
        teachers={"code": str(perturbed_model(tmp_path / "code_teacher", seed=2))},
        data=str(mix / "sft"),
        num_samples=6,
        per_device_train_batch_size=3,
        gradient_accumulation_steps=1,
        max_completion_length=8,
    )
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert metrics["train/samples"]["value"] == 6
    assert metrics["mopd/default/samples"]["value"] + metrics["mopd/code/samples"]["value"] == 6
    assert metrics["mopd/code/samples"]["value"] > 0 and metrics["mopd/pool/loads"]["value"] == 2
    assert (run / "model" / "config.json").is_file()
