"""Instruction synthesis: three schools that write new prompts with a model, each with its gate.

- Self-Instruct (Wang et al., 2023): show the model a few seed tasks and ask for a new one;
  keep it unless it is truncated, too short/long, asks for a modality a text model cannot
  handle, or is too close to an instruction already in the pool (ROUGE-L F > 0.7, the paper's
  threshold; `rouge-score` computes it).
- Evol-Instruct (WizardLM, Xu et al., 2023): rewrite a seed prompt with one evolution operation
  (add a constraint, deepen, concretise, add reasoning steps, or a breadth mutation), then
  eliminate failed evolutions with the paper's rules as heuristics (no change vs the seed,
  template words copied into the prompt, no content words, truncated) plus an optional model
  check ("is this a clear, answerable request? yes/no").
- Magpie (Xu et al., 2024): give an aligned model only its chat template's user-turn prefix (the
  "pre-query template") and let it write the query itself; keep queries that ended (the model
  closed the user turn) and are not duplicates.

Every school returns `Synthesized`: prompt records (the same dicts `distillation.prompt_records`
makes, with verifier/reference None since new prompts have no ground truth) and a processing
step whose drop reasons count every rejected attempt, so counts balance.

The prompts to the model are written here for this project (the papers' exact prompts are
longer; these are short enough for a 135M model's context and keep the same instructions).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..inference.generation import Completion, SamplingParams
from .manifests import processing_step

SCHOOLS = ("none", "self_instruct", "evol_instruct", "magpie")
# Self-Instruct drops a new instruction whose ROUGE-L F-measure with any pool instruction exceeds 0.7.
ROUGE_MAX = 0.7
# Evol-Instruct "no information gain": a rewrite this close to its seed changed nothing real.
EVOL_MIN_CHANGE_ROUGE = 0.9
# Self-Instruct filters instructions mentioning what a text-only model cannot see or make.
UNSUPPORTED = re.compile(
    r"\b(image|images|picture|pictures|graph|graphs|photo|photos|file|files|map|maps|draw|plot|go to|video|audio|flowchart|diagram)\b",
    re.IGNORECASE,
)
# WizardLM's elimination rule 4: the evolved prompt copies words of the evolving prompt.
TEMPLATE_LEAK = re.compile(r"#?\s*(rewritten|given|original|created)\s+prompt\s*#?", re.IGNORECASE)
_STOPWORDS = frozenset(
    "a an the and or but of to in on at for with by is are was were be it this that as from".split()
)

SELF_INSTRUCT_PROMPT = (
    "Here are some example tasks:\n{examples}\n\n"
    "Write one new task that is different from all of them. Reply with the task only."
)
EVOL_OPERATIONS = {
    "add_constraints": "Add one more constraint or requirement to it.",
    "deepening": "Make it ask about the topic in more depth and breadth.",
    "concretizing": "Replace general concepts with more specific ones.",
    "reasoning_steps": "Rewrite it so that answering needs several explicit steps of reasoning.",
    "breadth": "Write a brand-new prompt in the same domain, about a rarer topic, of similar length.",
}
EVOL_PROMPT = (
    "Rewrite the prompt below into a more complex version that people can still understand and answer. "
    "{operation} Reply with the new prompt only.\n\nPrompt:\n{prompt}"
)
EVOL_CHECK_PROMPT = (
    "Is the following a clear, self-contained request that can be answered? Answer yes or no.\n\n{prompt}"
)
_SENTINEL = "\u2063NEBULA_QUERY\u2063"  # invisible separator: never in a real template


@dataclass
class Synthesized:
    records: list[dict[str, Any]]
    step: dict[str, Any]
    attempts: list[dict[str, Any]] = field(default_factory=list)  # every attempt with its verdict


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def clean_instruction(text: str) -> str:
    """First paragraph of a model's reply without list numbering, 'Task N:' labels or quotes."""
    para = next((p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()), "")
    para = re.sub(
        r"^\s*(?:#+\s*)?(?:(?:new\s+)?(?:task|prompt|instruction|rewritten prompt|query)\s*\d*\s*[:#.-]+|\d+[.)])\s*",
        "",
        para,
        flags=re.IGNORECASE,
    )
    return para.strip().strip('"').strip()


def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def max_rouge(candidate: str, pool: Sequence[str], scorer: Any = None) -> float:
    scorer = scorer or _rouge()
    return max((scorer.score(p, candidate)["rougeL"].fmeasure for p in pool), default=0.0)


def gate_instruction(
    text: str, completion: Completion, *, min_words: int, max_words: int, allow_truncated: bool
) -> str | None:
    """Reason code to reject a synthesized instruction on its own (None = passes)."""
    if completion.truncated and not allow_truncated:
        return "truncated"
    words = _words(text)
    if not words:
        return "empty"
    if not [w for w in words if w not in _STOPWORDS]:
        return "no_content"
    if len(words) < min_words:
        return "too_short"
    if len(words) > max_words:
        return "too_long"
    return None


def _record(
    school: str, index: int, text: str, model: str, task: str = "general_chat", parents: Sequence[str] = ()
) -> dict[str, Any]:
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    return {
        "id": f"synth/{school}:{index}:{digest}",
        "source": f"synthesis/{school}",
        "license": f"generated by {model}",
        "task": task,
        "prompt": [{"role": "user", "content": text}],
        "verifier": None,
        "reference": None,
        "original": None,
        "parents": list(parents),
    }


def _finish(school: str, records: list, attempts: list, drops: Counter, params: dict) -> Synthesized:
    step = processing_step(
        f"synthesize:{school}", count_in=len(attempts), count_out=len(records), params=params, drop_reasons=drops
    )
    return Synthesized(records, step, attempts)


def _log_attempt(attempts: list[dict], drops: Counter, reason: str | None, **fields: Any) -> bool:
    """Record one generated prompt with its verdict; True when it is kept (every school balances)."""
    attempts.append(fields | {"reason": reason or "kept"})
    if reason:
        drops[reason] += 1
    return reason is None


def self_instruct(
    generator: Any,
    seeds: Sequence[str],
    n: int,
    params: SamplingParams,
    *,
    seed: int = 0,
    num_examples: int = 3,
    min_words: int = 3,
    max_words: int = 150,
    allow_truncated: bool = False,
) -> Synthesized:
    """`n` attempts at new instructions, each prompted with `num_examples` tasks from the pool."""
    if not seeds:
        raise ValueError("self_instruct needs at least one seed task")
    rng, scorer = random.Random(seed), _rouge()
    prompts = []
    for _ in range(n):
        examples = rng.sample(list(seeds), min(num_examples, len(seeds)))
        prompts.append(
            SELF_INSTRUCT_PROMPT.format(examples="\n".join(f"{i + 1}. {e}" for i, e in enumerate(examples)))
        )
    outs = generator.generate_full(prompts, SamplingParams(**(params.to_dict() | {"n": 1})))
    pool, records, attempts, drops = list(seeds), [], [], Counter()
    for i, (completion,) in enumerate(outs):
        text = clean_instruction(completion.text)
        reason = gate_instruction(
            text, completion, min_words=min_words, max_words=max_words, allow_truncated=allow_truncated
        )
        if reason is None and UNSUPPORTED.search(text):
            reason = "unsupported_modality"
        if reason is None and max_rouge(text, pool, scorer) > ROUGE_MAX:
            reason = "too_similar"
        if not _log_attempt(attempts, drops, reason, text=text, finish_reason=completion.finish_reason):
            continue
        pool.append(text)
        records.append(_record("self_instruct", i, text, generator.model_spec))
    return _finish(
        "self_instruct",
        records,
        attempts,
        drops,
        {
            "n": n,
            "num_examples": num_examples,
            "seed_pool": len(seeds),
            "rouge_max": ROUGE_MAX,
            "sampling": params.to_dict(),
            "generator": generator.spec(),
        },
    )


def _model_says_yes(generator: Any, texts: Sequence[str]) -> list[str | None]:
    """'yes' / 'no' / None (unparsed) for each prompt, by greedy yes/no question to the model."""
    if not texts:
        return []
    outs = generator.generate([EVOL_CHECK_PROMPT.format(prompt=t) for t in texts], SamplingParams(max_new_tokens=4))
    answers = []
    for (reply,) in outs:
        match = re.match(r"\W*(yes|no)\b", reply, re.IGNORECASE)
        answers.append(match.group(1).lower() if match else None)
    return answers


def evol_gate(
    seed_text: str,
    text: str,
    completion: Completion,
    *,
    min_words: int,
    max_words: int,
    allow_truncated: bool,
    scorer: Any = None,
) -> str | None:
    """WizardLM's elimination rules as heuristics (the model check runs separately)."""
    reason = gate_instruction(
        text, completion, min_words=min_words, max_words=max_words, allow_truncated=allow_truncated
    )
    if reason:
        return reason
    if TEMPLATE_LEAK.search(text):
        return "template_leak"
    if (
        " ".join(_words(text)) == " ".join(_words(seed_text))
        or max_rouge(text, [seed_text], scorer) > EVOL_MIN_CHANGE_ROUGE
    ):
        return "not_evolved"
    return None


def evol_instruct(
    generator: Any,
    seeds: Sequence[dict[str, Any]],
    n: int,
    params: SamplingParams,
    *,
    seed: int = 0,
    operations: Sequence[str] = tuple(EVOL_OPERATIONS),
    model_check: bool = True,
    min_words: int = 3,
    max_words: int = 300,
    allow_truncated: bool = False,
) -> Synthesized:
    """`n` evolutions of prompt records drawn from `seeds` (each keeps its seed's task and lineage)."""
    unknown = set(operations) - set(EVOL_OPERATIONS)
    if unknown or not operations:
        raise ValueError(f"evol operations {sorted(unknown) or '[]'} invalid (known: {', '.join(EVOL_OPERATIONS)})")
    if not seeds:
        raise ValueError("evol_instruct needs at least one seed prompt")
    rng, scorer = random.Random(seed), _rouge()
    picks = [(rng.choice(list(seeds)), rng.choice(list(operations))) for _ in range(n)]
    texts = [s["prompt"][-1]["content"] for s, _ in picks]
    prompts = [EVOL_PROMPT.format(operation=EVOL_OPERATIONS[op], prompt=t) for t, (_, op) in zip(texts, picks)]
    outs = generator.generate_full(prompts, SamplingParams(**(params.to_dict() | {"n": 1})))
    evolved = [clean_instruction(c.text) for (c,) in outs]
    reasons = [
        evol_gate(t, e, c, min_words=min_words, max_words=max_words, allow_truncated=allow_truncated, scorer=scorer)
        for t, e, (c,) in zip(texts, evolved, outs)
    ]
    if model_check:
        todo = [i for i, r in enumerate(reasons) if r is None]
        for i, answer in zip(todo, _model_says_yes(generator, [evolved[i] for i in todo])):
            reasons[i] = None if answer == "yes" else f"model_check:{answer or 'unparsed'}"
    records, attempts, drops = [], [], Counter()
    for i, ((parent, op), text, reason, (c,)) in enumerate(zip(picks, evolved, reasons, outs)):
        if not _log_attempt(
            attempts, drops, reason, seed=parent["id"], operation=op, text=text, finish_reason=c.finish_reason
        ):
            continue
        records.append(
            _record(
                "evol_instruct",
                i,
                text,
                generator.model_spec,
                parent["task"],
                [*parent.get("parents", []), parent["id"]],
            )
            | {"evol_operation": op}
        )
    return _finish(
        "evol_instruct",
        records,
        attempts,
        drops,
        {
            "n": n,
            "operations": list(operations),
            "model_check": model_check,
            "min_change_rouge": EVOL_MIN_CHANGE_ROUGE,
            "sampling": params.to_dict(),
            "generator": generator.spec(),
        },
    )


def pre_query_template(tokenizer: Any) -> str:
    """The chat template's text up to where a user's message would start (Magpie's input)."""
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": _SENTINEL}], tokenize=False)
    if _SENTINEL not in rendered:
        raise ValueError(
            "the chat template does not render the user message verbatim; cannot build a pre-query template"
        )
    return rendered.split(_SENTINEL)[0]


def magpie(
    generator: Any,
    n: int,
    params: SamplingParams,
    *,
    min_words: int = 3,
    max_words: int = 300,
    allow_truncated: bool = False,
) -> Synthesized:
    """`n` user queries written by the model itself from its pre-query template."""
    if params.greedy and n > 1:
        raise ValueError("magpie needs temperature > 0: greedy decoding writes the same query n times")
    template = pre_query_template(generator.tokenizer)
    # One prompt, n samples: Magpie relies on sampling (temperature ~1) for diversity.
    (group,) = generator.complete_raw([template], SamplingParams(**(params.to_dict() | {"n": n})))
    records, attempts, drops, seen = [], [], Counter(), set()
    for i, completion in enumerate(group):
        text = completion.text.strip()
        reason = gate_instruction(
            text, completion, min_words=min_words, max_words=max_words, allow_truncated=allow_truncated
        )
        key = " ".join(_words(text))
        if reason is None and key in seen:
            reason = "duplicate"
        if not _log_attempt(attempts, drops, reason, text=text, finish_reason=completion.finish_reason):
            continue
        seen.add(key)
        records.append(_record("magpie", i, text, generator.model_spec))
    return _finish(
        "magpie",
        records,
        attempts,
        drops,
        {"n": n, "pre_query_template": template, "sampling": params.to_dict(), "generator": generator.spec()},
    )
