"""The continuous-batching generation path: same outputs as `model.generate`, faster paths within tolerance."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from nebula_utils.inference import cpu, fastpath, tuning
from nebula_utils.inference.engine import CHUNK, ContinuousBatcher, Options, Slab, row_seed
from nebula_utils.inference.generation import SamplingParams, TransformersGenerator
from nebula_utils.inference.models import load_model_and_tokenizer

PROMPTS = [
    "What is 17 + 25? Explain briefly.",
    "Hi",
    "Write a haiku about autumn leaves.",
    "Explain why the sky is blue in two sentences, then list three more facts about light.",
    "What is the capital of France?",
    "Give three tips for learning a new language.",
    "Name a colour.",
]


@pytest.fixture(scope="module")
def tiny(tiny_model_path):
    return load_model_and_tokenizer("tiny-random", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def smol():
    from nebula_utils.inference.models import ModelNotAvailable

    try:
        return load_model_and_tokenizer("packaged:smollm2-135m-instruct", device="cpu", dtype="float32")
    except ModelNotAvailable as exc:
        pytest.skip(str(exc))


def reference(model, tok, text: str, max_new_tokens: int, eos=None, **sampling) -> torch.Tensor:
    """Plain `model.generate`, batch 1: the generated ids and the raw logits of each step."""
    enc = tok(text, return_tensors="pt", add_special_tokens=False)
    kwargs = {"eos_token_id": eos} if eos is not None else {}
    with torch.inference_mode():
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=bool(sampling),
            pad_token_id=tok.pad_token_id,
            return_dict_in_generate=True,
            output_logits=True,
            **sampling,
            **kwargs,
        )
    return out.sequences[0, enc["input_ids"].shape[1] :], torch.stack(out.logits, 1)[0].float()


def assert_matches_generate(gen: TransformersGenerator, prompts, max_new_tokens: int) -> set[str]:
    """Greedy completions equal batch-1 `model.generate` token for token; returns the finish reasons seen."""
    groups = gen.generate_full(prompts, SamplingParams(max_new_tokens=max_new_tokens, logprobs=True))
    reasons = set()
    for text, (got,) in zip(gen.chat_texts(prompts), groups):
        ids, logits = reference(gen.model, gen.tokenizer, text, max_new_tokens)
        want = gen._completion(ids.tolist(), None)
        assert (got.text, got.num_tokens, got.finish_reason) == (want.text, want.num_tokens, want.finish_reason), text
        lp = torch.log_softmax(logits, -1).gather(-1, ids[: len(logits), None])[: want.num_tokens, 0].mean()
        assert got.mean_logprob == pytest.approx(float(lp), abs=1e-4)
        reasons.add(got.finish_reason)
    return reasons


@pytest.mark.parametrize("fast_paths", [False, True])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_greedy_equals_model_generate_on_tiny_random(tiny, fast_paths, batch_size):
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    gen = TransformersGenerator(model, tok, batch_size, dtype="float32", fast_paths=fast_paths)
    assert assert_matches_generate(gen, PROMPTS, 24) == {"length"}  # random weights never end a turn
    assert gen.spec()["scheduler"] == "continuous" and gen.spec()["dtype"] == "float32"


def test_greedy_equals_model_generate_on_smollm2(smol):
    """The real model ends most turns early: rows leave the batch, queued prompts take their slots."""
    model, tok = copy.deepcopy(smol[0]), smol[1]
    gen = TransformersGenerator(model, tok, batch_size=2, dtype="float32")  # fast paths on, fp32
    assert assert_matches_generate(gen, PROMPTS[:4], 32) == {"stop", "length"}


def test_early_finishes_refills_and_compaction_match_generate(tiny):
    """Rows end at different steps (chosen end tokens), slots are refilled, the cache is compacted."""
    model, tok = tiny
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False) for p in PROMPTS]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    refs = [reference(model, tok, t, 30)[0].tolist() for t in texts]
    firsts, eos = {r[0] for r in refs}, set()
    for i, r in enumerate(refs):  # end tokens the model does emit, at different depths in different rows
        eos |= {next((t for t in r[2 + 4 * i :] if t not in firsts), None)} - {None}
    batcher = ContinuousBatcher(model, eos, tok.pad_token_id, max_rows=2, refill_every=1)
    rows = batcher.run(ids, Options(max_new_tokens=30, greedy=True, logprobs=True))
    lengths = set()
    for text, (row,) in zip(texts, rows):
        want, _ = reference(model, tok, text, 30, eos=sorted(eos))
        assert row.tokens == want.tolist()
        assert len(row.logprobs) == len(row.tokens)
        lengths.add(len(row.tokens))
    assert len(lengths) > 2  # the early-finish path really ran


def test_sampling_is_seeded_per_row_and_equals_generate_with_that_seed(tiny):
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    gen = TransformersGenerator(model, tok, batch_size=4, dtype="float32", fast_paths=False)
    params = SamplingParams(n=2, max_new_tokens=12, temperature=0.8, top_p=0.9, seed=7, logprobs=True)
    prompts = PROMPTS[:3]
    groups = gen.generate_full(prompts, params)
    for i, text in enumerate(gen.chat_texts(prompts)):
        for j in range(2):
            torch.manual_seed(row_seed(7, i, j))  # model.generate samples from the global generator
            ids, _ = reference(model, tok, text, 12, temperature=0.8, top_p=0.9)
            assert groups[i][j].text == gen._completion(ids.tolist(), None).text
    assert groups[0][0].text != groups[0][1].text  # two samples, two seeds
    gen.batch_size = 1  # the same seed gives the same samples whatever the batch size
    assert [[c.text for c in g] for g in gen.generate_full(prompts, params)] == [[c.text for c in g] for g in groups]
    other = gen.generate_full(prompts, SamplingParams(**(params.to_dict() | {"seed": 8})))
    assert [[c.text for c in g] for g in other] != [[c.text for c in g] for g in groups]


def test_static_scheduler_is_the_old_path_and_agrees(tiny):
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    params = SamplingParams(n=2, max_new_tokens=10, logprobs=True)
    old = TransformersGenerator(model, tok, scheduler="static")
    new = TransformersGenerator(model, tok, batch_size=3, dtype="float32")
    a, b = old.generate_full(PROMPTS, params), new.generate_full(PROMPTS, params)
    assert [[(c.text, c.num_tokens, c.finish_reason) for c in g] for g in a] == [
        [(c.text, c.num_tokens, c.finish_reason) for c in g] for g in b
    ]
    assert old.spec()["scheduler"] == "static" and old.spec()["batch_size"] == 8
    with pytest.raises(ValueError, match="unknown scheduler"):
        TransformersGenerator(model, tok, scheduler="paged")


def test_models_the_engine_cannot_serve_fall_back_to_the_static_path(tiny):
    model, tok = tiny
    repeat = copy.deepcopy(model)
    repeat.generation_config.repetition_penalty = 1.3  # a logits processor the engine does not apply
    gen = TransformersGenerator(repeat, tok, batch_size=2, dtype="float32")
    (got,) = gen.generate_full(["Hi"], SamplingParams(max_new_tokens=8))
    ids, _ = reference(repeat, tok, gen.chat_texts(["Hi"])[0], 8)
    assert got[0].text == gen._completion(ids.tolist(), None).text
    assert "repetition_penalty" in gen.spec()["fallback_reason"]

    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(**(model.config.to_dict() | {"use_sliding_window": True, "sliding_window": 8}))
    config.layer_types = ["sliding_attention"] * config.num_hidden_layers
    sliding = Qwen3ForCausalLM(config).eval()
    gen = TransformersGenerator(sliding, tok, batch_size=2, dtype="float32")
    (group,) = gen.generate_full(["Hi"], SamplingParams(max_new_tokens=3))
    assert group[0].num_tokens == 3 and gen.spec()["scheduler"] == "static"
    assert "full-attention" in gen.spec()["fallback_reason"]


def test_slab_keeps_rows_aligned_when_compacting_and_shrinking(tiny):
    slab = Slab(tiny[0], rows=3, capacity=4)
    heads, dim = slab.shape
    keys = torch.arange(3 * heads * 20 * dim, dtype=torch.float32).view(3, heads, 20, dim)
    mask = torch.zeros(3, 20, dtype=torch.bool)
    mask[0, 2:], mask[1, :], mask[2, 19:] = True, True, True  # left-padded prompts of 18, 20 and 1 tokens
    slab.insert(torch.arange(3), [(keys, keys)] * len(slab.cache.layers), mask)

    def first():  # re-allocations replace the layers: always read them through the cache
        return slab.cache.layers[0].keys

    assert slab.n == 20 and slab.capacity == 20 + CHUNK and torch.equal(slab.valid[:, :20], mask)
    assert torch.equal(first()[0, :, 2:20], keys[0, :, 2:]) and not first()[0, :, :2].any()  # padding = 0
    slab.make_room(torch.tensor([2]))  # only row 2 lives: 19 dead leading columns (>= 16) are dropped
    assert slab.n == 1 and slab.capacity == 1 + CHUNK
    assert torch.equal(first()[2, :, 0], keys[2, :, 19]) and bool(slab.valid[2, 0])
    slab.reshape(rows=torch.tensor([2]))
    assert slab.rows == 1 and torch.equal(first()[0, :, 0], keys[2, :, 19]) and bool(slab.valid[0, 0])


def test_decode_attention_equals_sdpa_and_packed_linear_equals_linear():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(5, h, n, 16, generator=gen) for h, n in ((6, 1), (2, 40), (2, 40)))
    mask = torch.rand(5, 1, 1, 40, generator=gen) > 0.3
    mask[:, :, :, -1] = True
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 3, True
    ours, _ = fastpath.decode_attention(module.eval(), q, k, v, mask, scaling=0.25)
    ref, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=0.25)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)

    if not torch.backends.mkldnn.is_available():
        pytest.skip("no oneDNN in this torch build")
    lin = torch.nn.Linear(64, 96).eval()
    x = torch.randn(3, 7, 64, generator=gen)
    with torch.inference_mode():
        torch.testing.assert_close(fastpath.PackedLinear(lin)(x), lin(x), atol=1e-4, rtol=1e-4)


def test_fast_inference_restores_the_model_and_repacks_changed_weights(tiny):
    model = copy.deepcopy(tiny[0])
    lm_head = model.lm_head
    with pytest.raises(RuntimeError, match="boom"), fastpath.fast_inference(model, pack=True) as info:
        assert info["packed_linears"] > 0 and model.config._attn_implementation == fastpath.ATTENTION_NAME
        assert isinstance(model.lm_head, fastpath.PackedLinear)
        raise RuntimeError("boom")
    assert model.lm_head is lm_head and model.config._attn_implementation == "sdpa"
    layer = model.model.layers[0].mlp.up_proj
    before = fastpath.packed(layer)
    assert fastpath.packed(layer) is before
    with torch.no_grad():
        layer.weight.mul_(2)  # an optimizer step between generations
    assert fastpath.packed(layer) is not before


def test_cpu_flags_are_parsed_and_bf16_needs_them(tmp_path, monkeypatch):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 sve\nCPU part\t: 0xd40\n")
    assert "avx512_bf16" in cpu.cpu_flags(str(x86)) and cpu.cpu_name(str(x86)) == "Some CPU"
    assert cpu.native_bf16(cpu.cpu_flags(str(arm)))
    assert cpu.cpu_flags(str(tmp_path / "missing")) == frozenset()
    assert not cpu.native_bf16(frozenset({"avx2", "fma"}))
    monkeypatch.setattr(cpu, "native_bf16", lambda flags=None: False)
    assert not cpu.bf16_worth_trying()  # no flags: not even measured
    assert cpu.matmul_flops("float32", 64, seconds=0.01) > 0


def test_child_process_env_defaults_fill_only_what_the_user_left_unset():
    env: dict[str, str] = {}
    cpu.set_child_process_env_defaults(env, num_threads=1)
    assert env == {"OMP_NUM_THREADS": "1", "GLIBC_TUNABLES": cpu.GLIBC_MALLOC_TUNABLES}
    mine = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "OMP_NUM_THREADS": "3"}
    cpu.set_child_process_env_defaults(mine)
    assert mine == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "OMP_NUM_THREADS": "3"}  # the user's win


def test_a_cpu_without_the_fast_paths_falls_back_cleanly(tiny, monkeypatch):
    """No native bf16 and no faster packed matmul (CI machines differ): fp32, plain nn.Linear, same outputs."""
    monkeypatch.setattr(cpu, "native_bf16", lambda flags=None: False)
    monkeypatch.setattr(fastpath, "_cached_speedup", lambda *a: 0.0)
    model = copy.deepcopy(tiny[0])
    assert tuning.candidates(model) == ["float32"]
    with fastpath.fast_inference(model) as info:
        assert info["packed_linears"] == 0 and not any(isinstance(m, fastpath.PackedLinear) for m in model.modules())
    gen = TransformersGenerator(model, tiny[1], batch_size=3)
    assert assert_matches_generate(gen, PROMPTS[:4], 12) == {"length"}


def sweep(fixed_ms: float, per_row_ms: float, sizes=(1, 2, 4, 8, 16, 32, 64)) -> dict[str, float]:
    return {str(n): n / (1e-3 * (fixed_ms + per_row_ms * n)) for n in sizes}


def test_tuning_fits_the_sweep_and_chooses_dtype_and_batch_size():
    fp32, bf16 = sweep(50, 4), sweep(25, 2)  # bf16: half the weight bytes, twice the matmul rate
    assert tuning.step_model(bf16) == pytest.approx((0.025, 0.002))
    assert tuning.choose({"float32": fp32, "bfloat16": bf16}) == ("bfloat16", 64)
    # per-row cost dominates: 16 rows -> 16/(2+16) = 0.89 rows/ms >= 0.9 x 64/(2+64); 8 rows -> 0.8.
    # bf16 only 3% faster: not worth its rounding
    assert tuning.choose({"float32": sweep(2, 1), "bfloat16": sweep(2, 0.97)}) == ("float32", 16)
    noisy = dict(bf16, **{"16": bf16["16"] / 4, "64": bf16["64"] * 3})  # two points 3-4x off
    assert tuning.choose({"float32": fp32, "bfloat16": noisy}) == ("bfloat16", 64)
    assert tuning.choose({"float32": {"8": 100.0}}) == ("float32", 8)  # one measured size


def test_tuning_is_measured_once_and_cached(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(tuning, "tuning_file", lambda: tmp_path / "generation.json")
    monkeypatch.setattr(tuning, "SWEEP", (1, 2, 4))
    model = copy.deepcopy(tiny[0])
    first = tuning.tune_generation(model)
    assert first["dtype"] in tuning.candidates(model) and first["batch_size"] in (1, 2, 4)
    assert set(first["tokens_per_s"]) == set(tuning.candidates(model))
    monkeypatch.setattr(tuning, "_sweep", lambda *a: pytest.fail("measured twice"))
    assert tuning.tune_generation(model) == json.loads((tmp_path / "generation.json").read_text()).popitem()[1]
    gen = TransformersGenerator(model, tiny[1], owns_model=True)  # batch_size 0, dtype auto: the cached choice
    assert gen.spec()["batch_size"] == first["batch_size"] and gen.spec()["dtype"] == first["dtype"]
    policy = copy.deepcopy(tiny[0])  # a model the generator does not own keeps its dtype
    assert TransformersGenerator(policy, tiny[1], batch_size=2).spec()["dtype"] == "float32"
    assert policy.dtype == torch.float32


# bf16 weights: what generation may change. Measured on this project's CPU with SmolLM2-135M
# (12 prompts, 488 greedy fp32 tokens, teacher-forced): 97.5% of the bf16 argmax tokens equal the
# fp32 ones, per-token log-prob |diff| <= 0.14, per-completion mean log-prob |diff| <= 0.017.
BF16_MIN_AGREEMENT = 0.95
BF16_MAX_TOKEN_LOGPROB_DIFF = 0.25
BF16_MAX_MEAN_LOGPROB_DIFF = 0.05


def test_bf16_generation_stays_within_the_stated_tolerance(smol):
    if not cpu.native_bf16():
        pytest.skip("no native bf16 on this CPU: generation stays fp32 here")
    model, tok = smol
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    agree = total = 0
    for text in TransformersGenerator(model, tok).chat_texts(PROMPTS[:4]):
        ids, _ = reference(model, tok, text, 32)
        enc = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        seq, start = torch.cat([enc[0], ids])[None], enc.shape[1]
        with torch.inference_mode(), fastpath.fast_inference(bf16):
            lp = [torch.log_softmax(m(seq).logits[0, start - 1 : -1].float(), -1) for m in (model, bf16)]
        token_lp = [x.gather(-1, ids[:, None])[:, 0] for x in lp]
        agree += int((lp[1].argmax(-1) == ids).sum())
        total += len(ids)
        assert float((token_lp[0] - token_lp[1]).abs().max()) <= BF16_MAX_TOKEN_LOGPROB_DIFF
        assert abs(float(token_lp[0].mean() - token_lp[1].mean())) <= BF16_MAX_MEAN_LOGPROB_DIFF
    assert agree / total >= BF16_MIN_AGREEMENT, f"{agree}/{total} greedy tokens agree"
