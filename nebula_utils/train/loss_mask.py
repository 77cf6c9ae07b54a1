"""Loss-mask audit of an SFT run, before it trains: which tokens of the data TRL will train on.

With `assistant_only_loss` TRL (1.16) builds the labels from the chat template's
`{% generation %}...{% endgeneration %}` markers (`apply_chat_template(...,
return_assistant_tokens_mask=True)` -> `assistant_masks` -> labels -100 outside). What TRL 1.16 does
when they go wrong, read from trl/trainer/sft_trainer.py and trl/chat_template_utils.py:
- no markers in the template: SFTTrainer swaps in its own training version of the template when it
  knows the template (Qwen, Llama 3, Gemma, Phi 3, ...); for any other template it raises a
  generic ValueError at construction, which names neither the model nor the fix;
- markers that wrap no token of an example: RuntimeError during dataset preparation;
- markers in the wrong place (around the end-of-turn token only, around the user turn): nothing
  is raised, the run trains on the wrong tokens and its loss still goes down.
This module checks all three itself: `check_template` before the trainer is built, and
`audit_trainer` on examples prepared by the trainer's own TRL preparation (its chat template, its
masks, its truncation), which locates each assistant reply in the rendered text and fails unless
some token of a reply is trained. The rendering marks trained tokens ⟦like this⟧.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OPEN, CLOSE = "⟦", "⟧"
# Enough of a reply's start to find it in the rendered text without matching a user turn by chance.
_ANCHOR_CHARS = 32
# Rows tried for an example with a trained token (TRL drops the others) before the audit gives up.
_MAX_TRIES = 8


class LossMaskError(ValueError):
    """The run would train no assistant token; str() is one line naming the model and template."""


@dataclass
class ExampleAudit:
    row: int  # index of the example in the training data
    text: str  # the rendered example, trained tokens inside ⟦ ⟧
    tokens: int
    trained: int  # tokens with a label (loss) on them
    assistant_tokens: int  # tokens of the assistant replies' text
    assistant_trained: int
    other_trained: list[str]  # trained tokens outside the replies (template tokens such as <|im_end|>)


@dataclass
class LossMaskAudit:
    template: str  # model and chat template (sha256 prefix; "patched by TRL" when TRL swapped it)
    assistant_only_loss: bool
    examples: list[ExampleAudit]
    dataset_tokens: int  # over every row TRL prepared for training (packed rows when packing)
    dataset_trained: int
    notes: list[str] = field(default_factory=list)

    @property
    def trained_fraction(self) -> float:
        return self.dataset_trained / self.dataset_tokens if self.dataset_tokens else 0.0

    def report(self) -> str:
        lines = [
            f"loss-mask audit · template: {self.template} · assistant_only_loss={self.assistant_only_loss}",
            f"trained tokens: {self.dataset_trained} of {self.dataset_tokens} ({self.trained_fraction:.1%}) "
            f"over the whole prepared training set",
        ]
        for ex in self.examples:
            extra = sorted(set(ex.other_trained))
            lines += [
                "",
                f"example row {ex.row}: {ex.trained} of {ex.tokens} tokens trained; assistant reply tokens trained: "
                f"{ex.assistant_trained} of {ex.assistant_tokens}; trained outside the replies: "
                f"{len(ex.other_trained)} {extra if extra else ''}".rstrip(),
                f"(trained tokens inside {OPEN} {CLOSE})",
                ex.text,
            ]
        return "\n".join(lines + [f"note: {n}" for n in self.notes]) + "\n"

    def save(self, path: str | Path) -> Path:
        from ..io import atomic_write_text

        return atomic_write_text(Path(path), self.report())


def template_label(tokenizer: Any, model: str, patched: bool = False) -> str:
    template = tokenizer.chat_template
    if isinstance(template, dict):
        template = template.get("default", "")
    digest = hashlib.sha256((template or "").encode("utf-8")).hexdigest()[:12]
    return f"{model} (chat template sha256 {digest}{', patched by TRL' if patched else ''})"


def check_template(tokenizer: Any, model: str, assistant_only_loss: bool) -> None:
    """Before the trainer is built: with assistant_only_loss, the template needs generation markers
    or a training version TRL knows; else TRL 1.16 would stop with an error naming neither."""
    if not assistant_only_loss:
        return
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if tokenizer.chat_template and has_generation_markers(tokenizer.chat_template):
        return
    try:
        if tokenizer.chat_template and get_training_chat_template(tokenizer):
            return
    except ValueError:
        pass
    raise LossMaskError(
        f"loss-mask audit: the chat template of {template_label(tokenizer, model)} has no "
        "{% generation %} markers and TRL has no training version of it, so assistant_only_loss cannot find a "
        "single assistant token: put {% generation %}...{% endgeneration %} around the assistant reply in the "
        "template, or set assistant_only_loss: false"
    )


def audit_trainer(
    trainer: Any, dataset: Any, model: str, n_examples: int = 1, out: str | Path | None = None
) -> LossMaskAudit:
    """Audit the loss mask of a built (not yet trained) TRL SFTTrainer on `dataset`'s first
    `n_examples` rows that keep a trained token (up to 8 rows are tried).

    The audited rows go through the trainer's own preparation (SFTTrainer._prepare_dataset with its
    chat template and args, unpacked so each row stays one example); the fraction of trained tokens is
    counted over trainer.train_dataset, exactly what training reads. The report is written to `out`
    (when given) before the check, so a failing audit leaves its rendering to look at. Raises
    LossMaskError when no token of any audited assistant reply carries a label."""
    args = trainer.args
    tokenizer = trainer.processing_class
    examples, dropped = [], 0
    for i in range(min(len(dataset), _MAX_TRIES)):
        with _quiet():
            prepared = trainer._prepare_dataset(dataset.select([i]), tokenizer, args, False, None, "loss-mask audit")
        if len(prepared) == 0:  # TRL drops an example left with no trained token (e.g. truncated to its prompt)
            dropped += 1
            continue
        row = prepared[0]
        examples.append(audit_example(tokenizer, i, row["input_ids"], row["labels"], dataset[i]["messages"]))
        if len(examples) == n_examples:
            break
    label = template_label(tokenizer, model, patched=getattr(trainer, "chat_template", None) is not None)
    total, trained = count_trained(trainer.train_dataset)
    audit = LossMaskAudit(label, bool(args.assistant_only_loss), examples, total, trained)
    if dropped:
        audit.notes.append(
            f"{dropped} row(s) before the audited one dropped by TRL's preparation: no trained token left "
            f"after truncation to max_length={args.max_length} (or none marked by the template)"
        )
    if out is not None:
        audit.save(out)
    if not any(ex.assistant_trained for ex in examples):
        where = (
            f"{sum(ex.trained for ex in examples)} trained token(s), none in an assistant reply"
            if examples
            else f"the first {dropped} rows have no trained token after TRL's preparation, max_length={args.max_length}"
        )
        raise LossMaskError(
            f"loss-mask audit: {label} trains no assistant token in the audited example(s) ({where}): check the "
            "{% generation %}...{% endgeneration %} markers around the assistant reply"
        )
    return audit


@contextmanager
def _quiet() -> Iterator[None]:
    """No progress bars for preparing one example (four `map` passes that take milliseconds)."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def audit_example(tokenizer: Any, row: int, input_ids: list[int], labels: list[int], messages: list) -> ExampleAudit:
    """One prepared example: its text with trained spans marked, and which tokens lie in a reply."""
    spans, text = _token_spans(tokenizer, input_ids)
    trained = [lab != -100 for lab in labels]
    replies = _reply_ranges(text, messages)
    in_reply = [any(a < e and s < b for a, b in replies) for s, e in spans]
    other = [text[s:e] for (s, e), t, r in zip(spans, trained, in_reply) if t and not r]
    return ExampleAudit(
        row=row,
        text=_render(text, spans, trained),
        tokens=len(input_ids),
        trained=sum(trained),
        assistant_tokens=sum(in_reply),
        assistant_trained=sum(t and r for t, r in zip(trained, in_reply)),
        other_trained=other,
    )


def _token_spans(tokenizer: Any, ids: list[int]) -> tuple[list[tuple[int, int]], str]:
    """Character span of each token in the decoded text. Prefix decodes, not per-token decodes: a
    character split over two byte-level tokens decodes whole only with its neighbour."""
    spans, end = [], 0
    for i in range(len(ids)):
        upto = len(tokenizer.decode(ids[: i + 1]))
        spans.append((end, max(end, upto)))
        end = max(end, upto)
    return spans, tokenizer.decode(ids)


def _reply_ranges(text: str, messages: list[dict]) -> list[tuple[int, int]]:
    """Where each assistant reply sits in the rendered text. Every message is looked for in turn,
    from where the previous one ended, so a short reply ("0") is not found inside the user turn
    before it; a reply cut by truncation counts up to the cut, and a message the template rewrote
    beyond recognition is skipped."""
    out, pos = [], 0
    for message in messages:
        content = message.get("content")
        content = content.strip() if isinstance(content, str) else ""
        start = text.find(content[:_ANCHOR_CHARS], pos) if content else -1
        if start < 0:
            continue
        end = start
        while end < len(text) and end - start < len(content) and text[end] == content[end - start]:
            end += 1
        if message.get("role") == "assistant":
            out.append((start, end))
        pos = end
    return out


def _render(text: str, spans: list[tuple[int, int]], trained: list[bool]) -> str:
    parts, i = [], 0
    while i < len(spans):
        j = i
        while j < len(spans) and trained[j] == trained[i]:
            j += 1
        chunk = text[spans[i][0] : spans[j - 1][1]]
        parts.append(f"{OPEN}{chunk}{CLOSE}" if trained[i] else chunk)
        i = j
    return "".join(parts)


def count_trained(dataset: Any) -> tuple[int, int]:
    """(tokens, tokens with a label) over a prepared dataset's `labels` column, in Arrow batches."""
    import pyarrow.compute as pc

    total = trained = 0
    for batch in dataset.with_format("arrow").iter(batch_size=1024):
        flat = pc.list_flatten(batch["labels"])
        total += len(flat)
        trained += pc.sum(pc.not_equal(flat, -100)).as_py() or 0
    return total, trained
