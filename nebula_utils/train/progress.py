"""Training progress for the terminal: one line per logging step (step, loss, tokens/s, ETA)."""

from __future__ import annotations

import time

from transformers import TrainerCallback

from ..runs import format_eta, report_progress


class ProgressCallback(TrainerCallback):
    """Writes `step 12/50 · loss 0.613 · 231 tok/s · ETA 1m40s` through runs.report_progress at
    every logging step, so `nebula run` shows a 10-minute training stage moving (TRL's own tqdm bar
    is off in runs: it would land in the notebook, not the terminal)."""

    def __init__(self, label: str = "train"):
        self.label, self.start, self.tokens = label, 0.0, 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs or not state.max_steps or not state.is_world_process_zero:
            return
        elapsed = time.perf_counter() - self.start
        # transformers counts input tokens only with include_num_input_tokens_seen; TRL's SFTTrainer
        # logs its own running total (`num_tokens`, non-padding tokens), so use whichever exists.
        tokens = state.num_input_tokens_seen or logs.get("num_tokens") or 0
        rate = f" · {tokens / elapsed:.0f} tok/s" if tokens and elapsed else ""
        eta = elapsed / max(1, state.global_step) * (state.max_steps - state.global_step)
        report_progress(
            f"{self.label} step {state.global_step}/{state.max_steps} · loss {logs['loss']:.4f}{rate}"
            f" · {format_eta(eta)}"
        )
