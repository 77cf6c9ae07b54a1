"""Generation: one interface, two backends, the same output schema (finish reasons, k samples)."""

from __future__ import annotations

import pytest

from nebula_utils.inference.generation import Completion, SamplingParams, TransformersGenerator, make_generator


@pytest.fixture(scope="module")
def tiny_gen(tiny_model_path):
    return make_generator("tiny-random", backend="transformers", device="cpu", batch_size=2)


def test_k_samples_per_prompt_with_finish_reasons_tokens_and_logprobs(tiny_gen):
    params = SamplingParams(n=3, max_new_tokens=5, temperature=1.0, seed=1, logprobs=True)
    groups = tiny_gen.generate_full(["hi", [{"role": "user", "content": "2+2?"}], "a longer prompt here"], params)
    assert [len(g) for g in groups] == [3, 3, 3]
    for c in (c for g in groups for c in g):
        assert c.finish_reason in ("stop", "length") and 1 <= c.num_tokens <= 5
        assert c.mean_logprob is not None and c.mean_logprob < 0
        # cut at max_new_tokens without the end-of-turn token = truncated
        assert c.truncated == (c.finish_reason == "length")
    assert tiny_gen.generate(["hi"], params)[0] == [c.text for c in tiny_gen.generate_full(["hi"], params)[0]]


def test_greedy_with_n_returns_n_copies_and_counts_tokens_once(tiny_gen):
    before = tiny_gen.stats.new_tokens
    (group,) = tiny_gen.generate_full(["hello"], SamplingParams(n=3, max_new_tokens=4))
    assert len(group) == 3 and len({c.text for c in group}) == 1
    assert tiny_gen.stats.new_tokens - before == group[0].num_tokens


def test_truncation_detection_from_token_ids(tiny_gen):
    eos = next(iter(tiny_gen.eos_ids))
    cases = [([5, 6, 7], (3, "length")), ([5, eos, 9, 9], (2, "stop")), ([eos], (1, "stop")), ([], (0, "length"))]
    for ids, expected in cases:
        assert tiny_gen._finish(ids) == expected, ids


def test_raw_completion_and_spec(tiny_gen):
    (group,) = tiny_gen.complete_raw(["<|im_start|>user\n"], SamplingParams(n=2, max_new_tokens=3, temperature=1.0))
    assert len(group) == 2 and all(isinstance(c, Completion) for c in group)
    spec = tiny_gen.spec()
    assert spec["backend"] == "transformers" and spec["model"] == "tiny-random" and "transformers" in spec["versions"]


def test_sampling_params_are_checked():
    for bad in ({"n": 0}, {"max_new_tokens": 0}, {"temperature": -1.0}, {"top_p": 0.0}):
        with pytest.raises(ValueError):
            SamplingParams(**bad)
    assert SamplingParams().greedy and not SamplingParams(temperature=0.5).greedy


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="unknown generation backend"):
        make_generator("tiny-random", backend="tgi")


@pytest.mark.gpu
def test_vllm_backend_has_the_transformers_output_schema(tiny_model_path):
    pytest.importorskip("vllm")
    from nebula_utils.inference.generation import VLLMGenerator

    params = SamplingParams(n=2, max_new_tokens=6, temperature=1.0, logprobs=True)
    prompts = ["hi", [{"role": "user", "content": "What is 2+2?"}]]
    vgen = VLLMGenerator.from_spec("tiny-random", gpu_memory_utilization=0.3)
    tgen = TransformersGenerator.from_spec("tiny-random", device="cuda")
    for gen in (vgen, tgen):
        groups = gen.generate_full(prompts, params)
        assert [len(g) for g in groups] == [2, 2]
        assert all(
            c.finish_reason in ("stop", "length") and 1 <= c.num_tokens <= 6 and c.mean_logprob is not None
            for g in groups
            for c in g
        )
    assert vgen.chat_texts(prompts) == tgen.chat_texts(prompts)  # identical inputs on both backends
    (greedy,) = vgen.generate_full(["hi"], SamplingParams(n=2, max_new_tokens=4))
    assert greedy[0].text == greedy[1].text


def test_long_generation_reports_items_done_tokens_per_s_and_eta(tiny_model_path, tmp_path, monkeypatch):
    """Under `nebula run` a generation step streams `<label> done/total · tok/s · ETA` lines (throttled,
    the last one always written); outside a run (no progress file) it writes nothing."""
    from nebula_utils.runs import PROGRESS_ENV

    log = tmp_path / "progress.log"
    monkeypatch.setenv(PROGRESS_ENV, str(log))
    gen = make_generator("tiny-random", backend="transformers", device="cpu", batch_size=2, label="grade")
    gen.generate_full(["a", "b", "c"], SamplingParams(n=2, max_new_tokens=4, temperature=1.0, seed=3))
    lines = log.read_text().splitlines()
    assert lines and lines[-1].startswith("grade 6/6 · ") and "tok/s" in lines[-1] and "ETA 0m00s" in lines[-1]
    monkeypatch.delenv(PROGRESS_ENV)
    gen.generate_full(["d"], SamplingParams(n=1, max_new_tokens=4))
    assert log.read_text().splitlines() == lines
    gen.on_progress = None  # silent on request
    gen.generate_full(["e"], SamplingParams(n=1, max_new_tokens=4))
