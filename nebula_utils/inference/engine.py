"""Continuous batching for a transformers causal LM: a finished row leaves, a queued prompt takes its slot.

Static batches (the old path: `model.generate` on 8 prompts at a time) run every batch until its
longest completion ends, padding and all finished rows included. Here up to `max_rows` sequences
decode together in one KV cache; when a row ends (end-of-turn token or its token budget) its slot
is refilled with the next queued prompt (prefilled in a group, its keys/values copied into the free
slots), and once the queue is empty the batch shrinks to the live rows. Greedy results equal
`model.generate` token for token (tests/inference/test_generation_fast.py).

Why not transformers' own continuous batching (`model.generate_batch`, 5.23), checked on the 2-core
CPU (SmolLM2-135M fp32, 16 chat prompts x 64 new tokens, greedy, same process, 3 interleaved rounds,
medians): generate_batch 21.4 tokens/s (41.8 per CPU-second), the old static batches of 8 14.8
(31.0), this engine at 16 rows 41.6 (84.0), so about half of this engine's speed. With its defaults
on CPU it sizes its paged KV cache to 60% of RAM (`max_memory_percent`), 11.6 GB here, and the
kernel OOM-killed it on the shared 24 GB machine (the run above caps it at 5%); it decodes in a
background thread built around CUDA graphs; and its log-probs are those of the processed (tempered,
top-k/top-p) distribution where this project records the model's raw ones.

Layout of the cache (`Slab`): one preallocated buffer per layer [rows, kv_heads, capacity, head_dim],
written in place (transformers' DynamicCache concatenates, copying the whole cache every step:
8.6% of a batch-8 decode step at 100 tokens of context, growing with the context). All rows share
the right edge: a decode step writes column `n` of every row; a prompt inserted later is
right-aligned at the current edge and a per-row mask (`valid`) hides the columns that are not its
own. Columns no live row uses are dropped from the left once they are a quarter of the width.

Sampling is per row with its own generator seeded from (seed, prompt index, sample index), so a
completion does not depend on the batch size or on which rows it shared a batch with.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .fastpath import fast_inference


class UnsupportedModel(RuntimeError):
    """The model's cache is not all full-attention DynamicLayers (sliding windows, linear attention...)."""


def row_seed(seed: int, prompt: int, sample: int) -> int:
    """The RNG seed of one completion: a function of (seed, prompt index, sample index) only."""
    return int(np.random.SeedSequence([seed, prompt, sample]).generate_state(1, np.uint64)[0] >> 1)


CHUNK = 32  # the cache grows by this many columns at a time (see Slab)


def _slab_layer_class():
    from transformers.cache_utils import DynamicLayer

    class SlabLayer(DynamicLayer):
        """A full-attention cache layer over a preallocated buffer; `update` writes in place and returns
        the whole (contiguous) buffer, columns past the written ones masked out by the caller."""

        def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int = 0):
            super().__init__()
            self.keys, self.values, self.n = keys, values, length
            self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True

        def update(self, key_states, value_states, *args, **kwargs):
            end = self.n + key_states.shape[-2]
            self.keys[:, :, self.n : end] = key_states
            self.values[:, :, self.n : end] = value_states
            self.n = end
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.n

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            return self.keys.shape[-2], 0

    return SlabLayer


class Slab:
    """Per-layer key/value buffers shared by `rows` sequences, right-aligned, with a validity mask.

    Attention reads the whole buffer, so the buffer is kept at most CHUNK columns wider than the
    written part and is re-allocated when a step needs more: a view of a wider buffer would be
    strided, and bf16 matmuls copy strided operands first (measured: 16 rows x 256 tokens, 0.73 vs
    0.29 ms per layer; 64 rows: 6.6 vs 1.5 ms), while re-allocating every 32 steps costs ~1/32 of a
    cache copy per step and the masked tail ~16 of ~256 columns.
    """

    def __init__(self, model: Any, rows: int, capacity: int):
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        self.cache = DynamicCache(config=model.config)
        kinds = {type(layer).__name__ for layer in self.cache.layers}
        if not self.cache.layers or any(type(layer) is not DynamicLayer for layer in self.cache.layers):
            raise UnsupportedModel(f"continuous batching needs full-attention layers only, got {sorted(kinds)}")
        cfg = model.config.get_text_config(decoder=True)
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        self.shape = (heads, head_dim)
        self.dtype, self.device = model.dtype, model.device
        self.layer_class = _slab_layer_class()
        self.n = 0
        self._allocate(rows, capacity)

    def _allocate(self, rows: int, capacity: int) -> None:
        # zeros, not empty: a masked column still enters attention as 0 * value, and garbage
        # memory can hold NaN bit patterns
        def buf():
            return torch.zeros(rows, self.shape[0], capacity, self.shape[1], dtype=self.dtype, device=self.device)

        self.cache.layers = [self.layer_class(buf(), buf(), self.n) for _ in self.cache.layers]
        self.valid = torch.zeros(rows, capacity, dtype=torch.bool, device=self.device)

    @property
    def rows(self) -> int:
        return self.valid.shape[0]

    @property
    def capacity(self) -> int:
        return self.valid.shape[1]

    def reshape(self, rows: torch.Tensor | None = None, start: int = 0, pad: int = 0) -> None:
        """Keep `rows` (all when None), drop columns before `start`, add `pad` empty columns on the left."""
        old_layers, old_valid = self.cache.layers, self.valid
        keep = old_valid.shape[0] if rows is None else len(rows)
        width = self.n - start
        self.n = pad + width
        self._allocate(keep, self.n + CHUNK)
        idx = slice(None) if rows is None else rows
        for new, old in zip(self.cache.layers, old_layers):
            new.keys[:, :, pad : self.n] = old.keys[idx, :, start : start + width]
            new.values[:, :, pad : self.n] = old.values[idx, :, start : start + width]
        self.valid[:, pad : self.n] = old_valid[idx, start : start + width]

    def insert(self, slots: torch.Tensor, layers_kv: Sequence[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor):
        """Write prefilled keys/values [k, heads, P, dim] (left-padded by `mask` [k, P]) into `slots`."""
        width = mask.shape[1]
        if self.n < width:
            self.reshape(pad=width - self.n)
        lo = self.n - width
        keep = mask[:, None, :, None]
        for layer, (k, v) in zip(self.cache.layers, layers_kv):
            layer.keys[slots, :, lo : self.n] = torch.where(keep, k, 0)
            layer.values[slots, :, lo : self.n] = torch.where(keep, v, 0)
        self.valid[slots] = False
        self.valid[slots, lo : self.n] = mask

    def make_room(self, live: torch.Tensor) -> None:
        """Before a decode step: drop dead leading columns (>= 1/4 of the width, or when full); grow if full."""
        used = self.valid[live, : self.n].any(0)
        first = int(used.int().argmax()) if bool(used.any()) else self.n
        full = self.n + 1 > self.capacity
        if first >= max(16, self.n // 4) or (full and first > 0):
            self.reshape(start=first)
        elif full:
            self.reshape()

    def step_mask(self) -> torch.Tensor:
        """The attention mask of a decode step: every row's own columns plus the new one (column n)."""
        self.valid[:, self.n] = True
        return self.valid

    def advance(self) -> None:
        self.n += 1
        assert all(layer.n == self.n for layer in self.cache.layers), "cache layers out of step"


@dataclass
class Row:
    """One completion in flight: prompt index, sample index, generated ids and their raw log-probs."""

    prompt: int
    sample: int
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    generator: torch.Generator | None = None


@dataclass
class Options:
    max_new_tokens: int
    greedy: bool
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0
    seed: int = 0
    logprobs: bool = False


def warpers(opts: Options) -> Any:
    """transformers' own sampling warpers, in `model.generate`'s order: temperature, top-k, top-p."""
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    out = LogitsProcessorList()
    if opts.temperature != 1.0:
        out.append(TemperatureLogitsWarper(opts.temperature))
    if opts.top_k:
        out.append(TopKLogitsWarper(opts.top_k))
    if opts.top_p < 1.0:
        out.append(TopPLogitsWarper(opts.top_p))
    return out


class ContinuousBatcher:
    """Decode many sequences in `max_rows` slots of one cache; see the module docstring."""

    def __init__(
        self,
        model: Any,
        eos_ids: set[int],
        pad_id: int,
        max_rows: int,
        refill_every: int = 0,
        fast_paths: bool = True,
    ):
        self.model, self.eos_ids, self.pad_id = model, set(eos_ids), pad_id
        # CPU only: packed linears where measured faster, one-token attention (fastpath.py)
        self.fast_paths = fast_paths and model.device.type == "cpu"
        self.fast_info: dict[str, Any] = {}
        self.max_rows = max(1, max_rows)
        # Refill once this many slots are free (or the queue is down to that many prompts): each
        # prefill is one more forward call (~one decode step of Python overhead), so waiting for
        # 1/8 of the slots bounds the calls to ~8 per batch turnover while leaving few slots idle.
        # A design choice, not measured against alternatives.
        self.refill_every = refill_every or max(1, self.max_rows // 8)
        Slab(model, 1, 1)  # raises UnsupportedModel early

    # ------------------------------------------------------------------ public
    def run(
        self,
        prompts: Sequence[Sequence[int]],
        opts: Options,
        samples: int = 1,
        progress: Callable[[int, int, int], None] | None = None,
    ) -> list[list[Row]]:
        """`samples` completions for each tokenized prompt, in input order. `progress(done, total,
        generated)` is called after every decode step: completions finished, completions asked
        for, tokens generated so far (finished and in-flight rows)."""
        self.opts, self.prompts, self.progress = opts, prompts, progress
        self.warp = None if opts.greedy else warpers(opts)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # longest first: the edge only grows
        self.queue = [Row(p, j) for p in order for j in range(samples)]
        self.queue.reverse()  # pop() from the end
        self.total = len(self.queue)
        self.done: list[Row] = []
        self.generated = 0
        rows = min(self.max_rows, self.total)
        longest = max((len(p) for p in prompts), default=1)
        self.slab = Slab(self.model, rows, longest + CHUNK)
        self.slots: list[Row | None] = [None] * rows
        self.next_tok = torch.full((rows,), self.pad_id, dtype=torch.long, device=self.slab.device)
        self.pos = torch.zeros(rows, dtype=torch.long, device=self.slab.device)
        fast = fast_inference(self.model) if self.fast_paths else contextlib.nullcontext({})
        with fast as self.fast_info, torch.inference_mode():
            while self.queue or any(self.slots):
                self._refill()
                if any(self.slots):
                    self._decode()
                self._shrink()
        out: list[list[Row]] = [[] for _ in prompts]
        for row in sorted(self.done, key=lambda r: (r.prompt, r.sample)):
            out[row.prompt].append(row)
        return out

    # ------------------------------------------------------------------ steps
    def _live(self) -> list[int]:
        return [s for s, row in enumerate(self.slots) if row is not None]

    def _refill(self) -> None:
        free = [s for s, row in enumerate(self.slots) if row is None]
        if not self.queue or not free:
            return
        if len(free) < min(self.refill_every, len(self.queue)) and any(self.slots):
            return
        take = [self.queue.pop() for _ in range(min(len(free), len(self.queue)))]
        uniq = list(dict.fromkeys(r.prompt for r in take))
        logits, layers_kv, mask = self._prefill([self.prompts[p] for p in uniq])
        src = torch.tensor([uniq.index(r.prompt) for r in take], device=self.slab.device)
        slots = free[: len(take)]
        slot_t = torch.tensor(slots, device=self.slab.device)
        self.slab.insert(slot_t, [(k[src], v[src]) for k, v in layers_kv], mask[src])
        for slot, row in zip(slots, take):
            self.slots[slot] = row
            self.pos[slot] = len(self.prompts[row.prompt])
            if not self.opts.greedy:
                row.generator = torch.Generator(device=self.slab.device)
                row.generator.manual_seed(row_seed(self.opts.seed, row.prompt, row.sample))
        self._emit(slots, logits[src])

    def _prefill(self, prompts: list[Sequence[int]]):
        from transformers import DynamicCache

        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.bool)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
            mask[i, width - len(p) :] = True
        ids, mask = ids.to(self.slab.device), mask.to(self.slab.device)
        position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=ids,
            attention_mask=mask.long(),
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        layers_kv = [(layer.keys, layer.values) for layer in cache.layers]
        return out.logits[:, -1].float(), layers_kv, mask

    def _decode(self) -> None:
        live = self._live()
        self.slab.make_room(torch.tensor(live, device=self.slab.device))
        mask = self.slab.step_mask()
        out = self.model(
            input_ids=self.next_tok[:, None],
            attention_mask=mask,
            position_ids=self.pos[:, None],
            past_key_values=self.slab.cache,
            use_cache=True,
        )
        self.slab.advance()
        self.pos += 1
        live_t = torch.tensor(live, device=self.slab.device)
        self._emit(live, out.logits[live_t, -1].float())

    def _emit(self, slots: list[int], logits: torch.Tensor) -> None:
        """Choose each slot's next token from its raw logits [len(slots), vocab]; retire finished rows."""
        rows = [self.slots[s] for s in slots]
        if self.opts.greedy:
            tokens = logits.argmax(-1)
        else:
            probs = torch.softmax(self.warp(None, logits), dim=-1)
            tokens = torch.cat(
                [torch.multinomial(probs[i : i + 1], 1, generator=r.generator)[0] for i, r in enumerate(rows)]
            )
        lps = None
        if self.opts.logprobs:
            lps = torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, None])[:, 0].tolist()
        self.next_tok[torch.tensor(slots, device=self.slab.device)] = tokens
        for i, (slot, row, tok) in enumerate(zip(slots, rows, tokens.tolist())):
            row.tokens.append(tok)
            if lps is not None:
                row.logprobs.append(lps[i])
            if tok in self.eos_ids or len(row.tokens) >= self.opts.max_new_tokens:
                self.slots[slot] = None
                self.done.append(row)
        self.generated += len(rows)
        if self.progress:
            self.progress(len(self.done), self.total, self.generated)

    def _shrink(self) -> None:
        """Queue empty and at most half the slots live: drop the dead rows from the cache."""
        live = self._live()
        if self.queue or not live or len(live) > len(self.slots) // 2:
            return
        self.slab.reshape(rows=torch.tensor(live, device=self.slab.device))
        self.slots = [self.slots[s] for s in live]
        self.next_tok, self.pos = self.next_tok[live].clone(), self.pos[live].clone()


def decode_step_seconds(
    model: Any, rows: int, context: int, steps: int = 3, fast_paths: bool = True, clock: str = "thread"
) -> float:
    """Fastest of `steps` decode steps for `rows` sequences over `context` cached tokens (random keys).

    clock "thread": CPU time of this (the main) thread, which runs its share of every parallel
    matmul and all the Python: about the wall time of an unshared machine, and blind to other
    processes taking the cores. On this project's shared 2-core machine the same bf16 64-row step
    read 64-239 tokens/s by the wall clock and 398-543 by thread time. clock "wall": perf_counter.
    """
    fast = fast_inference(model) if fast_paths and model.device.type == "cpu" else contextlib.nullcontext()
    timer = time.thread_time if clock == "thread" and model.device.type == "cpu" else time.perf_counter
    with fast:
        return _decode_step_seconds(model, rows, context, steps, timer)


def _decode_step_seconds(model: Any, rows: int, context: int, steps: int, timer: Callable[[], float]) -> float:
    slab = Slab(model, rows, context + steps + 1)
    gen = torch.Generator(device=slab.device).manual_seed(0)
    for layer in slab.cache.layers:
        for buf in (layer.keys, layer.values):
            buf[:, :, :context] = torch.randn(buf[:, :, :context].shape, generator=gen).to(buf.dtype)
        layer.n = context
    slab.n = context
    slab.valid[:, :context] = True
    vocab = model.config.get_text_config(decoder=True).vocab_size
    tok = torch.randint(10, vocab, (rows, 1), generator=gen)
    times = []
    with torch.inference_mode():
        for _ in range(steps + 1):
            start = timer()
            mask = slab.step_mask()
            pos = torch.full((rows, 1), slab.n)
            out = model(
                input_ids=tok, attention_mask=mask, position_ids=pos, past_key_values=slab.cache, use_cache=True
            )
            slab.advance()
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
            times.append(timer() - start)
    return min(times[1:])  # the first step is a warm-up
