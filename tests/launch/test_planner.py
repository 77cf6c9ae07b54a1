"""nebula plan: parameter counts, memory and compute estimates against hand calculations (Qwen3-8B)
and against measurements of a real training step of a small Qwen3 on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from nebula_utils.cli import main
from nebula_utils.config import ConfigError
from nebula_utils.launch.planner import (
    GIB,
    KNOWN_CONFIGS,
    Count,
    Hardware,
    ModelShape,
    kv_bytes_per_token,
    layer_activation_bytes,
    model_shape,
    plan_pipeline,
    read_model_config,
    training_memory,
)

# Qwen/Qwen3-8B-Base config.json as published (huggingface.co/Qwen/Qwen3-8B-Base/blob/main/config.json).
QWEN3_8B_BASE = {
    "architectures": ["Qwen3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 12288,
    "max_position_embeddings": 32768,
    "max_window_layers": 36,
    "model_type": "qwen3",
    "num_attention_heads": 32,
    "num_hidden_layers": 36,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.51.0",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
}

# Hand calculation for Qwen3-8B (h 4096, L 36, a 32 heads, kv 8, head_dim 128, i 12288, V 151936).
H, L, A, KV, D, FFN, V = 4096, 36, 32, 8, 128, 12288, 151936
EMBED = V * H  # 622,329,856; the LM head is a second copy (untied)
LAYER = (
    H * A * D  # q_proj
    + 2 * H * KV * D  # k_proj, v_proj
    + A * D * H  # o_proj
    + 3 * H * FFN  # gate, up, down
    + 2 * H  # two RMSNorms
    + 2 * D  # q_norm, k_norm
)
P_8B = 2 * EMBED + L * LAYER + H  # + final norm = 8,190,735,360 (model card: "8.2B", "6.95B non-embedding")


def within(actual: float, expected: float, rel: float = 0.15) -> bool:
    return abs(actual - expected) <= rel * abs(expected)


@pytest.fixture
def qwen3_8b(tmp_path):
    folder = tmp_path / "Qwen3-8B-Base"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(QWEN3_8B_BASE))
    return folder


def test_qwen3_8b_parameters_exact_on_meta_device(qwen3_8b):
    config, source = read_model_config(str(qwen3_8b), "test")
    shape = model_shape(config, str(qwen3_8b), source)
    assert source.endswith("config.json")
    assert shape.params == P_8B == 8_190_735_360
    assert shape.layer_params == LAYER
    assert round(shape.params / 1e9, 1) == 8.2
    assert round((shape.params - 2 * EMBED) / 1e9, 2) == 6.95
    assert (shape.hidden, shape.layers, shape.heads, shape.kv_heads, shape.head_dim) == (H, L, A, KV, D)
    assert shape.qk_norm and shape.swiglu


@pytest.mark.parametrize(
    "spec, card",
    [
        ("Qwen/Qwen3-0.6B", 0.6),
        ("Qwen/Qwen3-1.7B-Base", 1.7),
        ("Qwen/Qwen3-4B-Base", 4.0),
        ("Qwen/Qwen3-8B-Base", 8.2),
        ("Qwen/Qwen3-14B-Base", 14.8),
        ("Qwen/Qwen3-32B", 32.8),
        ("meta-llama/Llama-3.1-8B", 8.0),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", 0.13),
    ],
)
def test_builtin_table_reproduces_model_card_sizes(spec, card):
    """Each row of the built-in table rebuilds the parameter count its model card states."""
    shape = model_shape(dict(KNOWN_CONFIGS[spec]), spec, "table")
    assert round(shape.params / 1e9, 2 if card < 1 else 1) == card


def test_tiny_random_table_row_matches_the_built_model(tiny_model_path):
    built = json.loads((Path(tiny_model_path) / "config.json").read_text())
    assert model_shape(built).params == model_shape(dict(KNOWN_CONFIGS["tiny-random"])).params


def test_zero_stages_reproduce_the_zero_paper_example():
    """ZeRO paper, Figure 1: 7.5B parameters on 64 GPUs, K = 12: 120 / 31.4 / 16.6 / 1.9 GB of model states."""
    psi = 7_500_000_000
    shape = ModelShape("x", "x", "llama", psi, 1, 1, 64, 1, 1, 1, 64, 64, 8, False, True)
    states = []
    for zero in (0, 1, 2, 3):
        mem = training_memory(shape, Hardware(gpus=8, nodes=8, zero=zero), 1, 1, False, psi)
        states.append(round((mem["weights"] + mem["gradients"] + mem["optimizer"]) / 1e9, 1))
    assert states == [120.0, 31.4, 16.6, 1.9]


def _pipeline(tmp_path, model) -> str:
    doc = {
        "pipeline": "plan8b",
        "description": "Qwen3-8B-sized steps for the planner test",
        "defaults": {"model": str(model)},
        "steps": [
            {
                "notebook": "11_distill",
                "params": {"teacher": str(model), "max_prompts": 20000, "k": 4, "max_new_tokens": 4096},
            },
            {"notebook": "12_filter", "params": {"data": "@11_distill/distill"}},
            {
                "notebook": "13_difficulty",
                "params": {"policy": str(model), "max_prompts": 10000, "n_samples": 8, "max_new_tokens": 4096},
            },
            {
                "notebook": "20_sft",
                "params": {
                    "data": "@12_filter/sft",
                    "max_length": 4096,
                    "num_train_epochs": 2.0,
                    "per_device_train_batch_size": 1,
                    "gradient_accumulation_steps": 16,
                    "gradient_checkpointing": True,
                    "learning_rate": 1.0e-5,
                },
            },
            {
                "notebook": "60_eval",
                "params": {"model": "@20_sft/model", "suite": "verifiable", "limit": 50, "max_gen_toks": 2048},
            },
        ],
    }
    path = tmp_path / "plan8b.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def test_plan_8b_sft_step_matches_hand_calculation(tmp_path, qwen3_8b):
    hw = Hardware()  # defaults: 8 GPUs, 1 node, ZeRO-3, 80 GiB, MFU 0.4, 989 TFLOP/s
    plans = {p.step: p for p in plan_pipeline(_pipeline(tmp_path, qwen3_8b), hw, tmp_path / "results")}
    sft = plans["20_sft"]
    assert sft.model["params"] == P_8B
    s, n = 4096, 8
    hand = {
        # ZeRO-3 shards the 2 + 2 + 12 bytes/param of mixed-precision AdamW over the 8 GPUs.
        "weights": 2 * P_8B / n,  # 1.91 GiB
        "gradients": 2 * P_8B / n,  # 1.91 GiB
        "optimizer": 12 * P_8B / n,  # 11.44 GiB
        # gathered bf16: embeddings + LM head for the step, plus two decoder layers.
        "gathered": 2 * (2 * EMBED + 2 * LAYER),  # 3.04 GiB
        # full checkpointing: 2*s*h bytes per layer input (Korthikanti), one recomputed layer
        # (~52.6*h bytes per token in bf16, tallied by hand below) and fp32 log-probs 4*s*V.
        "activations": 2 * s * H * L  # layer inputs
        + s * (2 * (8 * H) + 6 * (A * D + KV * D) + 4 * (A * D + KV * D) + 8 * FFN)  # norms, q/k norms, attention, MLP
        + 4 * s * V,  # 4.26 GiB
        "logits": s * V * (2 + 4),  # bf16 logits + fp32 copy while the loss runs: 3.48 GiB
    }
    hand["total"] = sum(hand.values())
    for key, value in hand.items():
        assert within(sft.memory[key], value), (key, sft.memory[key] / GIB, value / GIB)
    assert within(sft.memory["total"] / GIB, 26.0) and sft.fits
    # <= 20,000 filtered prompts (11_distill's max_prompts) x 2 epochs x 4096 tokens.
    tokens = 20000 * 2 * 4096
    assert not sft.tokens.exact and within(sft.tokens.value, tokens)
    gpu_hours = 6 * P_8B * tokens / (0.4 * 989e12) / 3600 * (8 / 6)  # recompute: 8N of hardware work per token
    assert within(sft.gpu_hours.value, gpu_hours)  # 7.5 GPU-hours
    # Without checkpointing the activations are 36 full layers: 36 x ~0.82 GiB.
    assert within(sft.memory["activations_none"], L * s * 52.6 * H + 4 * s * V)


def test_plan_8b_generation_steps_match_hand_calculation(tmp_path, qwen3_8b):
    hw = Hardware()
    plans = {p.step: p for p in plan_pipeline(_pipeline(tmp_path, qwen3_8b), hw, tmp_path / "results")}
    distill = plans["11_distill"]
    kv_token = 2 * L * KV * D * 2  # K and V, bf16: 144 KiB per token
    assert distill.memory["kv_per_token"] == kv_token
    assert within(distill.memory["weights"], 2 * P_8B)
    assert within(distill.memory["max_sequences"], (0.9 * 80 * GIB - 2 * P_8B) / (kv_token * (512 + 4096)))
    generated, prompts = 20000 * 4 * 4096, 20000 * 512  # k=4 samples of <= 4096 tokens; 512-token prompts
    assert within(distill.tokens.value, generated + prompts)
    assert within(distill.gpu_hours.value, 2 * P_8B * (generated + prompts) / (0.1 * 989e12) / 3600)  # 15.6
    assert within(plans["13_difficulty"].tokens.value, 10000 * (8 * 4096 + 512))
    # verifiable dev part: 3 benchmarks capped at 50 items, <= 2048 new tokens each
    ev = plans["60_eval"]
    assert ev.model["params"] == P_8B and "trained by step 20_sft" in ev.model["source"]
    assert within(ev.tokens.value, 150 * (2048 + 512))
    assert plans["12_filter"].outputs["sft"] == Count(20000, False)


def test_cli_plan_prints_every_step(tmp_path, qwen3_8b, capsys):
    path = _pipeline(tmp_path, qwen3_8b)
    assert main(["plan", path, "--gpus", "8", "--zero", "3", "--results", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    for step in ("11_distill", "12_filter", "13_difficulty", "20_sft", "60_eval"):
        assert f"\n{step}  [" in out
    assert "8,190,735,360 parameters" in out and "ZeRO-3" in out and "total GPU-hours" in out
    assert main(["plan", path, "--json", "--results", str(tmp_path / "results")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [s["step"] for s in doc["steps"]][-1] == "60_eval"
    # one GPU without sharding: 16 bytes/param of model states alone exceed 80 GiB
    assert main(["plan", path, "--gpus", "1", "--zero", "0", "--check", "--results", str(tmp_path / "r")]) == 1
    assert "DOES NOT FIT" in capsys.readouterr().out


def test_plan_errors_name_file_step_and_key(tmp_path, capsys):
    doc = {"pipeline": "bad", "steps": [{"notebook": "20_sft", "params": {"model": "nobody/unknown-model"}}]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=r"bad\.yaml: step '20_sft': key 'model': no config\.json for model"):
        plan_pipeline(path, Hardware(), tmp_path / "results")
    assert main(["plan", str(path), "--results", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("config error:") and len(err.strip().splitlines()) == 1
    doc["steps"][0]["params"] = {"max_length": 0}  # a stage value check fails at build time
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="max_length"):
        plan_pipeline(path, Hardware(), tmp_path / "results")
    with pytest.raises(ConfigError, match="--zero"):
        Hardware(zero=4)


# ---- measured on CPU: a small Qwen3 (4 layers, GQA, untied 512-token vocabulary) ------------------

SMALL = {
    "model_type": "qwen3",
    "vocab_size": 512,
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "tie_word_embeddings": False,
}
SEQ, BATCH = 256, 2


def _small_model(dtype, attention="sdpa"):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = AutoConfig.for_model(**SMALL, attn_implementation=attention)
    return AutoModelForCausalLM.from_config(cfg).to(dtype).train()


def _saved_bytes(model, ids) -> int:
    """Bytes of the distinct storages autograd saves for backward (parameters excluded): what the
    activation formula predicts, measured by a saved-tensors hook (exact, unlike RSS on CPU)."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen.setdefault(storage.data_ptr(), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return sum(seen.values())


@pytest.mark.parametrize(
    "dtype_name, attention, checkpointing",
    [
        ("float32", "sdpa", False),
        ("bfloat16", "sdpa", False),
        ("float32", "eager", False),
        ("bfloat16", "eager", False),
        ("bfloat16", "sdpa", True),
    ],
)
def test_activation_estimate_matches_saved_tensors_of_a_cpu_step(dtype_name, attention, checkpointing):
    import torch

    dtype = getattr(torch, dtype_name)
    model = _small_model(dtype, attention)
    if checkpointing:  # reentrant: the checkpoint keeps each layer's input through save_for_backward
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    ids = torch.randint(0, SMALL["vocab_size"], (BATCH, SEQ), generator=torch.Generator().manual_seed(0))
    measured = _saved_bytes(model, ids)
    shape = model_shape(SMALL)
    precision = "fp32" if dtype == torch.float32 else "mixed"
    hw = Hardware(gpus=1, zero=0, precision=precision, attention="flash" if attention == "sdpa" else "eager")
    mem = training_memory(shape, hw, BATCH, SEQ, checkpointing, shape.params)
    if checkpointing:
        # The plan adds one layer recomputed during backward; the end-of-forward saved set has none.
        act = 4 if dtype == torch.float32 else 2
        predicted = mem["activations_ckpt"] - layer_activation_bytes(shape, BATCH * SEQ, SEQ, act, hw.attention)
    else:
        predicted = mem["activations_none"]
    assert within(predicted, measured, 0.05), (predicted, measured)


def test_model_state_estimate_matches_a_cpu_adamw_step():
    """fp32 on CPU: weights 4 + grads 4 + AdamW m and v 8 bytes per parameter, read off the tensors."""
    import torch

    model = _small_model(torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, SMALL["vocab_size"], (BATCH, 32))
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    weights = sum(p.nbytes for p in model.parameters())
    grads = sum(p.grad.nbytes for p in model.parameters())
    states = sum(t.nbytes for s in opt.state.values() for k, t in s.items() if k in ("exp_avg", "exp_avg_sq"))
    shape = model_shape(SMALL)
    mem = training_memory(shape, Hardware(gpus=1, zero=0, precision="fp32"), BATCH, 32, False, shape.params)
    assert (mem["weights"], mem["gradients"], mem["optimizer"]) == (weights, grads, states)


def test_lora_parameter_count_matches_peft():
    import torch
    from peft import LoraConfig, get_peft_model

    shape = model_shape(SMALL)
    for targets in ([], ["q_proj", "v_proj"]):
        model = get_peft_model(
            _small_model(torch.float32),
            LoraConfig(r=8, lora_alpha=16, target_modules=targets or "all-linear"),
        )
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert shape.lora_params(8, targets) == trainable


def test_kv_cache_estimate_matches_transformers_cache():
    import torch

    model = _small_model(torch.bfloat16).eval()
    ids = torch.randint(0, SMALL["vocab_size"], (BATCH, 100))
    with torch.no_grad():
        cache = model(input_ids=ids, use_cache=True).past_key_values
    measured = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
    assert kv_bytes_per_token(model_shape(SMALL)) * BATCH * 100 == measured


def _fsdp_rank(rank: int, world: int, port: int, root: list, layers: list, queue) -> None:
    """One rank of a 2-process FSDP2 (fully_shard = ZeRO-3) AdamW step on CPU over gloo, on modules
    holding the small Qwen3's exact parameter shapes (one per decoder layer + the root: FSDP2 shards
    and steps parameters, so the shapes are all that matters; torch alone keeps the ranks fast to
    start). Reports the bytes of this rank's shards of weights, gradients and optimizer state."""
    import os

    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    class Holder(torch.nn.Module):
        def __init__(self, shapes):
            super().__init__()
            self.params = torch.nn.ParameterList(torch.nn.Parameter(torch.randn(shape)) for shape in shapes)

        def forward(self):
            return sum((p * p).sum() for p in self.params)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList(Holder(shapes) for shapes in layers)
            self.root = torch.nn.ParameterList(torch.nn.Parameter(torch.randn(shape)) for shape in root)

        def forward(self):
            return sum(layer() for layer in self.layers) + sum((p * p).sum() for p in self.root)

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = Model()
        for layer in model.layers:
            fully_shard(layer)
        fully_shard(model)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model().backward()
        opt.step()
        weights = sum(p.to_local().nbytes for p in model.parameters())
        grads = sum(p.grad.to_local().nbytes for p in model.parameters())
        states = sum(
            t.to_local().nbytes for s in opt.state.values() for k, t in s.items() if k in ("exp_avg", "exp_avg_sq")
        )
        queue.put((weights, grads, states))
    finally:
        dist.destroy_process_group()


def test_zero3_sharding_matches_an_fsdp2_step_on_two_cpu_ranks():
    import socket

    import torch
    import torch.multiprocessing as mp

    qwen = _small_model(torch.float32)
    layer_ids = {id(p) for p in qwen.model.layers.parameters()}
    layers = [[tuple(p.shape) for p in layer.parameters()] for layer in qwen.model.layers]
    root = [tuple(p.shape) for p in qwen.parameters() if id(p) not in layer_ids]
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_fsdp_rank, args=(rank, 2, port, root, layers, queue)) for rank in range(2)]
    for p in procs:
        p.start()
    try:
        measured = [queue.get(timeout=300) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=60)
    shape = model_shape(SMALL)
    mem = training_memory(shape, Hardware(gpus=2, zero=3, precision="fp32"), BATCH, 32, False, shape.params)
    for rank in measured:  # FSDP pads dim 0 of each parameter to a multiple of the world size
        for got, key in zip(rank, ("weights", "gradients", "optimizer")):
            assert within(mem[key], got, 0.01), (key, mem[key], got)


def test_sft_rows_are_read_from_existing_data(tmp_path, qwen3_8b):
    """A data file that exists gives an exact row count; max_samples caps it; max_steps overrides it."""
    rows = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]} for i in range(7)
    ]
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    doc = {
        "pipeline": "rows",
        "steps": [{"notebook": "20_sft", "params": {"model": str(qwen3_8b), "data": str(data)}}],
    }
    path = tmp_path / "rows.yaml"
    for params, sequences in (({}, Count(7)), ({"max_samples": 5}, Count(5)), ({"max_steps": 3}, Count(3 * 4 * 2))):
        doc["steps"][0]["params"] |= params
        path.write_text(yaml.safe_dump(doc))
        (sft,) = plan_pipeline(path, Hardware(gpus=2), tmp_path / "results")
        assert sft.details["sequences"] == sequences  # 20_sft.yaml: batch 4, 1 epoch; 2 GPUs
        assert sft.tokens == Count(sequences.value * 512, False)


# ---- the 8B recipes: DPO, GRPO, OPD and MOPD steps against hand calculations ------------------------

PEAK = 989e12  # Hardware() defaults: H100 SXM dense BF16, MFU 0.4 (train) / 0.1 (generate), 8 GPUs, ZeRO-3
N_GPU = 8


def recipe(name: str) -> str:
    return str(Path(__file__).parents[2] / "params" / "pipelines" / f"{name}.yaml")


def plan_recipe(name: str, tmp_path) -> dict:
    return {p.step: p for p in plan_pipeline(recipe(name), Hardware(), tmp_path / "results")}


def hours(flops: float, mfu: float = 0.4) -> float:
    return flops / (mfu * PEAK) / 3600


def layer_tokens_bytes(h, a, kv, d, ffn, qk_norm=True) -> int:
    """Bytes autograd saves per token in one bf16 decoder layer (the SFT hand count above): two
    RMSNorms ~8h each, q/k norms (Qwen3) ~6 bytes per q/k element, q/k/v/o 4 bytes per element, SwiGLU 8i."""
    qk = a * d + kv * d
    return 2 * (8 * h) + (6 * qk if qk_norm else 0) + 4 * qk + 8 * ffn


def model_states(p: int) -> float:
    """Mixed-precision AdamW under ZeRO-3 on 8 GPUs: (2 + 2 + 12) bytes per parameter / 8."""
    return 16 * p / N_GPU


# Llama-3.1-8B (Tülu 3's base; config: h 4096, L 32, 32 heads, 8 kv, head_dim 128, i 14336, V 128256).
LH, LL, LFFN, LV = 4096, 32, 14336, 128256
L_LAYER = LH * A * D + 2 * LH * KV * D + A * D * LH + 3 * LH * LFFN + 2 * LH
P_LLAMA = 2 * LV * LH + LL * L_LAYER + LH  # 8,030,261,248 (model card: 8.03B)
# Qwen3-32B (h 5120, L 64, 64 heads, 8 kv, head_dim 128, i 25600, V 151936, untied).
Q32_LAYER = 5120 * 64 * D + 2 * 5120 * KV * D + 64 * D * 5120 + 3 * 5120 * 25600 + 2 * 5120 + 2 * D
P_32B = 2 * V * 5120 + 64 * Q32_LAYER + 5120


def test_plan_tulu3_dpo_step_matches_hand_calculation(tmp_path):
    plans = plan_recipe("tulu3_8b", tmp_path)
    dpo = plans["31_dpo_tulu3"]
    assert dpo.model["params"] == P_LLAMA == 8_030_261_248
    # global_batch_size 128 pairs on 8 GPUs, 1 pair per GPU: accumulation 16 (derived)
    assert dpo.details["global_batch"] == 128 and dpo.details["micro_batch"] == 2  # chosen + rejected
    # pairs <= 10_data_sft_mix's rl prompts: 3 math tasks x 2000 + 4000 IF + 5000 GSM8K (its 74 HumanEval
    # train problems all go to SFT) = 15,000; 1 epoch; 2 sequences of <= 2048 tokens per pair.
    tokens = 15000 * 2 * 2048
    assert not dpo.tokens.exact and within(dpo.tokens.value, tokens)
    # policy 6N per token (x 8/6 with full recompute) + reference forward 2N per token, at MFU 0.4
    assert within(dpo.gpu_hours.value, hours(6 * P_LLAMA * tokens * 8 / 6 + 2 * P_LLAMA * tokens))  # 3.5
    assert within(dpo.flops.value, 8 * P_LLAMA * tokens)
    s = 2 * 2048  # two sequences per forward pass
    hand = {
        "weights": 2 * P_LLAMA / N_GPU,
        "optimizer": 12 * P_LLAMA / N_GPU,
        "gathered": 2 * (2 * LV * LH + 2 * L_LAYER),
        "activations": 2 * s * LH * LL + s * layer_tokens_bytes(LH, A, KV, D, LFFN, qk_norm=False) + 4 * s * LV,
        "logits": s * LV * (2 + 4),
        "frozen": 2 * P_LLAMA / N_GPU,  # the reference: bf16 weights sharded by ZeRO-3, no grads or optimizer
    }
    for key, value in hand.items():
        assert within(dpo.memory[key], value), (key, dpo.memory[key] / GIB, value / GIB)
    total = model_states(P_LLAMA) + sum(hand[k] for k in ("gathered", "activations", "logits", "frozen"))
    assert within(dpo.memory["total"], total) and dpo.fits  # ~26 GiB


def test_plan_grpo_step_matches_hand_calculation(tmp_path):
    grpo = plan_recipe("nebula8b_instruct", tmp_path)["40_grpo_instruct"]
    assert grpo.model["params"] == P_8B  # the built-in table row = the config written above
    # 8 prompts x 16 generations per GPU, 8 GPUs, 500 steps; each completion <= 512 prompt + 2048 new tokens
    completions, seq = 500 * 8 * N_GPU * 16, 512 + 2048
    tokens = completions * seq
    assert within(grpo.tokens.value, tokens) and grpo.details["micro_batch"] == 4  # 128 / 32 passes
    generated = completions * 2048 + 64 * 4 * 2 * 2048 + 500 * 8 * N_GPU * 512  # + held-out + prompts
    assert within(grpo.rollout.tokens.value, generated)
    # policy 6N (x 8/6 recompute) + old-policy log-probs 2N (vLLM importance correction) + reference 2N
    # (beta 0.04) at MFU 0.4; rollouts 2N per token at MFU 0.1
    expected = hours(6 * P_8B * tokens * 8 / 6 + 4 * P_8B * tokens) + hours(2 * P_8B * generated, 0.1)
    assert within(grpo.gpu_hours.value, expected)  # ~140 GPU-hours
    s = 4 * seq  # 4 completions per pass; logits only for their 4 x 2048 completion tokens
    act = 2 * s * H * L + s * layer_tokens_bytes(H, A, KV, D, FFN) + 4 * 4 * 2048 * V
    assert within(grpo.memory["activations"], act)
    assert within(grpo.memory["logits"], 4 * 2048 * V * 6)
    vllm = 0.3 * 80 * GIB  # vllm_gpu_memory_utilization x GPU memory, reserved for the run
    total = model_states(P_8B) + 2 * (2 * EMBED + 2 * LAYER) + act + 4 * 2048 * V * 6 + 2 * P_8B / N_GPU + vllm
    assert within(grpo.memory["total"], total) and grpo.fits  # ~58 GiB of 80
    # vLLM's share holds the 8B weights (15.3 GiB) and KV for (24 - 15.3) GiB / (2560 x 144 KiB) sequences
    assert grpo.rollout.memory["max_sequences"] == int((vllm - 2 * P_8B) // (2 * L * KV * D * 2 * seq))


def test_plan_opd_step_matches_hand_calculation(tmp_path):
    opd = plan_recipe("nebula8b_opd", tmp_path)["50_opd"]
    assert opd.model["params"] == P_8B
    teacher = opd.details["forward"][0]
    assert teacher["params"] == P_32B == 32_762_123_264
    # 4096 samples (the paper's "4K"), 2 per GPU x 8 accumulation (global_batch_size 128) x 8 GPUs = 32 steps
    samples, seq = 4096, 512 + 2048
    tokens = samples * seq
    assert opd.details["sequences"].value == samples and within(opd.tokens.value, tokens)
    generated = samples * 2048 + samples * 512
    expected = hours(8 * P_8B * tokens + 2 * P_32B * tokens) + hours(2 * P_8B * generated, 0.1)
    assert within(opd.gpu_hours.value, expected)  # ~1.4 GPU-hours
    s = 2 * seq
    act = 2 * s * H * L + s * layer_tokens_bytes(H, A, KV, D, FFN) + 4 * s * V
    teacher_mem = 2 * P_32B / N_GPU  # the 32B teacher in bf16, sharded by ZeRO-3: 7.6 GiB
    logits = s * V * 6  # student's, and the teacher's for the divergence
    total = model_states(P_8B) + 2 * (2 * EMBED + 2 * LAYER) + act + 2 * logits + teacher_mem + 0.3 * 80 * GIB
    assert within(opd.memory["frozen"], teacher_mem) and within(opd.memory["total"], total) and opd.fits


def test_plan_mopd_step_matches_hand_calculation(tmp_path):
    mopd = plan_recipe("nebula8b_mopd", tmp_path)["51_mopd"]
    assert mopd.model["params"] == P_8B and len(mopd.details["teachers"]) == 4
    samples, seq = 10240, 512 + 2048  # "10K samples": 80 steps of 4 x 4 x 8
    tokens = samples * seq
    generated = samples * (2048 + 512)
    # four 8B teachers: every sample is scored by one of them, 2N per token whatever the routing
    expected = hours(8 * P_8B * tokens + 2 * P_8B * tokens) + hours(2 * P_8B * generated, 0.1)
    assert mopd.flops.exact is False and within(mopd.gpu_hours.value, expected)  # ~2.7 GPU-hours
    s = 4 * seq
    act = 2 * s * H * L + s * layer_tokens_bytes(H, A, KV, D, FFN) + 4 * s * V
    teacher_mem = 2 * P_8B  # local backend: one resident teacher, whole, on every GPU (16 GB)
    # the student generates in the step: ZeRO-3 gathers its full bf16 weights + KV for 4 sequences
    rollout = 2 * P_8B + 4 * seq * 2 * L * KV * D * 2
    total = model_states(P_8B) + 2 * (2 * EMBED + 2 * LAYER) + teacher_mem + max(act + 2 * s * V * 6, rollout)
    assert within(mopd.memory["frozen"], teacher_mem) and within(mopd.memory["total"], total) and mopd.fits


FULL_SCALE = ("nebula8b_instruct", "nebula8b_reasoning", "nebula8b_opd", "nebula8b_mopd", "tulu3_8b")
DATA_ONLY = {"00_environment", "81_ablation_sft_stages", "82_ablation_grpo_difficulty", "90_report"}
DATA_ONLY |= {"83_ablation_grpo_vs_opd", "84_ablation_opd_vs_mopd"}


@pytest.mark.parametrize("name", FULL_SCALE)
def test_every_training_and_generation_step_of_a_full_scale_recipe_has_a_compute_model(name, tmp_path, capsys):
    assert main(["plan", recipe(name), "--results", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    blocks = out.split("\n\n")[1:-1]
    for block in blocks:
        stage = block.split("[", 1)[1].split(",", 1)[0]
        if "no compute model" in block:
            assert stage in DATA_ONLY, block
        if stage in ("20_sft", "31_dpo", "32_kto", "33_rsft", "40_grpo", "50_opd", "51_mopd"):
            assert "  train\n" in block.splitlines()[0] + "\n" and "GPU-hours" in block, block
    assert "GPU-hours unknown" not in "\n".join(b for b in blocks if "] train" in b)


def test_step_tensor_parallel_size_replaces_tp_and_attention_eager_adds_scores(tmp_path, qwen3_8b):
    plans = plan_recipe("nebula8b_instruct", tmp_path)
    distill = plans["11_distill"]  # tensor_parallel_size 8: Qwen3-32B's weights and kv heads split over 8 GPUs
    assert within(distill.memory["weights"], 2 * P_32B / 8)
    assert distill.memory["kv_per_token"] == 2 * 64 * (KV // 8) * D * 2
    doc = {
        "pipeline": "attn",
        "steps": [
            {"notebook": "20_sft", "params": {"model": str(qwen3_8b), "max_steps": 1, "attn_implementation": a}}
            for a in ("sdpa", "eager")
        ],
    }
    doc["steps"][1]["name"] = "20_sft_eager"
    path = tmp_path / "attn.yaml"
    path.write_text(yaml.safe_dump(doc))
    sdpa, eager = plan_pipeline(path, Hardware(), tmp_path / "results")
    # eager keeps the fp32 softmax and its bf16 copy, (4 + 2) * a * s bytes per token per layer (Korthikanti's
    # 5as/h term), and k, v repeated to every query head (2 bytes x 2 x (a - kv) x head_dim) in place of GQA's
    s = 512  # 20_sft.yaml max_length, batch 4
    extra = 4 * s * L * ((4 + 2) * A * s + 2 * 2 * (A - KV) * D)
    assert within(eager.memory["activations_none"] - sdpa.memory["activations_none"], extra, 0.05)


def test_global_batch_size_derives_accumulation_from_the_planned_gpus(tmp_path, qwen3_8b):
    doc = {
        "pipeline": "gb",
        "steps": [{"notebook": "20_sft", "params": {"model": str(qwen3_8b), "max_steps": 2, "global_batch_size": 96}}],
    }
    path = tmp_path / "gb.yaml"
    path.write_text(yaml.safe_dump(doc))
    (sft,) = plan_pipeline(path, Hardware(gpus=8), tmp_path / "results")  # 20_sft.yaml: batch 4 -> 96 / 32 = 3
    assert sft.details["global_batch"] == 96 and sft.details["sequences"] == Count(2 * 96)
    with pytest.raises(ConfigError, match=r"gb\.yaml: step '20_sft': key 'global_batch_size': 96 does not divide"):
        plan_pipeline(path, Hardware(gpus=5), tmp_path / "results")
