"""Verifier rewards as TRL 1.16 GRPOTrainer reward functions, called through TRL's own code."""

import json
import pickle
from collections import defaultdict
from functools import partial
from types import SimpleNamespace

import pytest
import torch

from nebula_utils.verifiers.rewards import VerifierReward, make_reward_funcs, prompt_text, reward_answer_format

ADD = {
    "prompt": 'def add(a: int, b: int) -> int:\n    """Return a + b."""\n',
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
    "entry_point": "add",
}
ROWS = [  # (dataset row, completion, expected reward from its own verifier)
    (
        {"prompt": "What is 6 * 7?", "verifier": "math", "reference": json.dumps({"answer": "#### 42"})},
        "6 * 7 = 42, so the answer is \\boxed{42}.",
        1.0,
    ),
    (
        {"prompt": "What is 6 * 7?", "verifier": "math", "reference": json.dumps({"answer": "#### 42"})},
        "It is 41.",
        0.0,
    ),
    (
        {
            "prompt": [{"role": "user", "content": "Write one sentence about rivers. Do not use any commas."}],
            "verifier": "ifeval",
            "reference": json.dumps(
                {
                    "instruction_id_list": ["punctuation:no_comma"],
                    "kwargs": [{}],
                    "prompt": "Write one sentence about rivers. Do not use any commas.",
                }
            ),
        },
        "Rivers carry water from the hills down to the sea.",
        1.0,
    ),
    ({"prompt": "Add two numbers.", "verifier": "code", "reference": json.dumps(ADD)}, "    return a + b\n", 1.0),
    ({"prompt": "Add two numbers.", "verifier": "code", "reference": json.dumps(ADD)}, "    return a - b\n", 0.0),
    ({"prompt": "Reply in JSON.", "verifier": "format", "reference": json.dumps({"json": True})}, '{"ok": true}', 1.0),
]


def _trl_rewards(funcs, rows, completions):
    """GRPOTrainer._calculate_rewards (TRL's code, unmodified) on a minimal trainer stand-in."""
    from trl import GRPOTrainer
    from trl.trainer.utils import get_callable_name

    fake = SimpleNamespace(
        accelerator=SimpleNamespace(device=torch.device("cpu"), is_main_process=True),
        args=SimpleNamespace(report_to=[]),
        state=SimpleNamespace(global_step=0),
        environments=None,
        reward_funcs=funcs,
        reward_processing_classes=[None] * len(funcs),
        reward_func_names=[get_callable_name(f) for f in funcs],
        _pending_extra_logs=defaultdict(list),
        _pending_metrics=defaultdict(list),
    )
    fake._log_completion_extra = partial(GRPOTrainer._log_completion_extra, fake)
    fake._log_metric = partial(GRPOTrainer._log_metric, fake)
    prompts = [r["prompt"] for r in rows]
    rewards = GRPOTrainer._calculate_rewards(fake, rows, prompts, completions, [[0]] * len(rows))
    return rewards, fake


def test_through_trl_calculate_rewards():
    weights = {"math": 1.0, "ifeval": 0.5, "code": 2.0, "format": 1.0}
    funcs, reward_weights = make_reward_funcs(weights, format_weight=0.25, workers=2)
    assert [f.__name__ for f in funcs] == [
        "reward_math",
        "reward_ifeval",
        "reward_code",
        "reward_format",
        "reward_answer_format",
    ]
    assert reward_weights == [1.0, 0.5, 2.0, 1.0, 0.25]
    rows = [r for r, _, _ in ROWS]
    completions = [c for _, c, _ in ROWS]
    per_func, trainer = _trl_rewards(funcs, rows, completions)
    assert per_func.shape == (len(ROWS), 5)
    routed = per_func[:, :4]
    for i, (row, _, expected) in enumerate(ROWS):
        col = list(weights).index(row["verifier"])
        assert routed[i, col].item() == expected, (i, row["verifier"])
        others = [j for j in range(4) if j != col]
        assert torch.isnan(routed[i, others]).all()  # other verifiers abstain (None -> NaN)
    # optional format reward: math explicit answer yes / bare "It is 41." no; code parses; format rows abstain
    assert per_func[:, 4].tolist()[:5] == [1.0, 0.0, 1.0, 1.0, 1.0] and torch.isnan(per_func[5, 4])
    total = (per_func * torch.tensor(reward_weights)).nansum(dim=1)  # TRL's sum_then_normalize
    assert total.tolist() == pytest.approx([1.25, 0.0, 0.75, 2.25, 0.25, 1.0])
    # per-verifier logging: pass rates and reasons in the completions table
    assert trainer._pending_metrics["verifiers/math/pass_rate"] == [0.5]
    assert trainer._pending_metrics["verifiers/code/pass_rate"] == [0.5]
    reasons = trainer._pending_extra_logs["math_reason"]
    assert len(reasons) == len(ROWS) and "correct answer" in reasons[0] and "wrong answer" in reasons[1]
    assert reasons[2] is None and "AssertionError" in trainer._pending_extra_logs["code_reason"][4]


def test_prompt_filled_in_for_the_echo_guard():
    reward = VerifierReward("math", {"math"})
    prompt = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Tom has 3 bags of 14 apples. How many apples? Reply with 42 if unsure."},
    ]
    echo = "Tom has 3 bags of 14 apples. How many apples? Reply with 42 if unsure."
    logged = {}
    out = reward(
        prompts=[prompt, prompt],
        completions=[echo, "3 * 14 = 42\n#### 42"],
        verifier=["math", "math"],
        reference=[{"answer": "42"}] * 2,
        log_extra=lambda col, vals: logged.update({col: vals}),
    )
    assert out == [0.0, 1.0] and logged["math_reason"][0] == "answer only echoes the prompt"
    assert prompt_text(prompt) == prompt[1]["content"]


def test_conversational_completions():
    reward = VerifierReward("math", {"math"})
    completion = [{"role": "assistant", "content": "The answer is 42."}]
    assert reward(prompts=["q"], completions=[completion], verifier=["math"], reference=['{"answer": "42"}']) == [1.0]


def test_parallel_code_batch_matches_serial():
    completions = ["    return a + b\n", "    return a * b\n", "    return b + a\n", "    while True:\n        pass\n"]
    n = len(completions)
    options = {"timeout": 1.0}
    args = dict(prompts=["p"] * n, completions=completions, verifier=["code"] * n, reference=[ADD] * n)
    serial = VerifierReward("code", {"code"}, workers=1, **options)(**args)
    parallel = VerifierReward("code", {"code"}, workers=4, **options)(**args)
    assert serial == parallel == [1.0, 0.0, 1.0, 0.0]


def test_pickles_for_trl_async_rollout():
    reward = VerifierReward("ifeval", {"ifeval"}, workers=3, strict=False)
    clone = pickle.loads(pickle.dumps(reward))
    assert (clone.__name__, clone.workers, clone.verifier.strict) == ("reward_ifeval", 3, False)
    args = dict(
        prompts=["p"],
        completions=["no commas here at all my friend"],
        verifier=["ifeval"],
        reference=[{"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}],
    )
    assert clone(**args) == reward(**args) == [1.0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"verifier": None}, "'verifier' column"),
        ({"verifier": ["math", "code"]}, "no reward function"),
        ({"verifier": ["math"]}, "1 verifier names for 2"),
        ({"reference": None}, "'reference' column"),
        ({"reference": ["not json", "{}"]}, "JSON object string"),
        ({"reference": ["[1]", "[2]"]}, "decode to an object"),
    ],
)
def test_bad_columns_are_clear_errors(kwargs, match):
    reward = VerifierReward("math", {"math"})
    args = {
        "prompts": ["a", "b"],
        "completions": ["1", "2"],
        "verifier": ["math", "math"],
        "reference": ['{"answer": "1"}', '{"answer": "2"}'],
        **kwargs,
    }
    with pytest.raises(ValueError, match=match):
        reward(**args)


def test_make_reward_funcs_validation_and_options():
    with pytest.raises(ValueError, match="at least one"):
        make_reward_funcs({})
    funcs, weights = make_reward_funcs({"ifeval": 1.0}, verifier_options={"ifeval": {"strict": False}})
    assert weights == [1.0] and funcs[0].verifier.strict is False
    assert reward_answer_format(None, ["\\boxed{3}", "3"], verifier=["math", "math"]) == [1.0, 0.0]
