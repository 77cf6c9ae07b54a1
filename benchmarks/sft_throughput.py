"""SFT throughput on CPU: packed vs unpacked, fp32 vs bf16, side by side in one process.

    PYTHONPATH=. OMP_NUM_THREADS=2 python benchmarks/sft_throughput.py [--samples 48] [--rounds 3]
        [--threads 2] [--configs unpacked-fp32,unpacked-bf16,packed-fp32,packed-bf16,packed4-bf16]
        [--curve-steps 12] [--ceiling-steps 3] [--data demo|alpaca] [--json out.json]

Data: the demo's SFT rows (reasoning-gym worked answers for the 10_data_sft_mix tasks + HumanEval
train-half solutions, from nebula_utils.data.sources), or ../shared/data's Alpaca demo file with
--data alpaca. Model: SmolLM2-135M-Instruct (packaged:smollm2-135m-instruct), the stage's TRL path
(nebula_utils.train.sft.make_trainer: full-logits loss on CPU, assistant-only loss, max_length 512,
lr 5e-5); batch layouts in LAYOUTS; a config name is <layout>-<fp32|bf16>[-fused], where -fused
uses TRL's own chunked LM-head loss instead.

Each round takes the next `--samples` rows; every config trains one epoch on those same rows from
the same initial weights (fresh model and optimizer), in a rotated order so that a busy neighbour
does not always hit the same config. Throughput counts from the end of the first optimizer step to
the end of the last (the first step pays one-off kernel selection): tokens/s = real tokens (not
padding) / wall seconds, target tokens/s = tokens that carry loss. Ratios are taken per round
(same rows, adjacent in time) and summarised as median [min, max] over rounds.

MFU = 6 * params * tokens/s / the matmul peak of the precision used, both measured in this
process (nebula_utils.train.throughput.measure_matmul_peak, 2048^2 matmul, CPU-time basis). The
wall-clock MFU is what a user waits for; the CPU-time MFU divides by the CPU time the process got
(per thread) and stays meaningful when other processes share the cores (`cpu share` < 100%).

The loss-curve check trains `--curve-steps` packed steps in fp32 and in bf16 from the same weights
on the same batches and compares the per-step losses.

Measured 2026-12-02 on the project's 2-core AMD EPYC with nothing else running (`--rounds 2
--samples 24 --curve-steps 4`; peaks fp32 189, bf16 811 GFLOP/s CPU time; tokens = real tokens):

    config          tok/s   MFU wall  MFU CPU  padding | ratio per round, median [min, max]
    unpacked-fp32    87.5    37.3%    42.9%    33.6%   | packed / unpacked, bf16: 1.54 [1.47, 1.60] wall
    unpacked-bf16   153.0    15.2%    19.2%    33.6%   | packed / unpacked, fp32: 1.48 [1.36, 1.60] wall
    packed-fp32     128.9    55.0%    63.5%     0.0%   | bf16 / fp32, packed:     1.82 [1.71, 1.92] wall
    packed-bf16     234.1    23.3%    30.4%     0.0%   | packed-bf16 / unpacked-fp32: 2.68 [2.61, 2.75]

bf16 vs fp32 loss over 4 packed steps: mean relative difference 2.1%, max 5.4%. The bf16 MFU stays
at ~23% of the bf16 peak: the matmuls of a 576-wide model at 512 tokens run far below the 2048^2
peak, and norms, softmax, the fp32 loss and AdamW do not speed up with bf16 (the fp32 path's MFU
is higher because its peak is 4.3x lower, not because it is faster).

Longer packed rows (quiet, 2026-12-02, `--rounds 1 --samples 24 --configs packed-bf16,packed4-bf16
--curve-steps 0`; bf16 peak 834 GFLOP/s): packed-bf16 181.5 tokens/s (MFU 17.6% wall, 23.8% CPU
time), packed4-bf16 157.6 (15.3%, 18.6%): 0.87x wall, 0.78x CPU time. The 2048-token block-diagonal
attention costs more than the bigger matmuls gain.

The matmul-only ceiling (`--ceiling-steps`, default 3): after the rounds, each config trains 2 + k
steps with torch.profiler on the last k and sums the time of the matmul ops (MATMUL_OPS). Ceiling =
6N x tokens / that time / peak: the MFU the step would reach if everything but its matmuls were
free. Measured on a 2-core Intel Xeon with AMX (quiet, 2026-12-02, GLIBC_TUNABLES as the runner
sets them, `--rounds 1 --samples 24 --configs packed-fp32,packed-bf16,packed4-bf16 --curve-steps 0`;
peaks fp32 328, bf16 2,229 GFLOP/s, 6.8x):

    config          tok/s   MFU wall  MFU CPU | matmul share  ceiling | largest other ops (share of step)
    packed-fp32     163.7    40.3%    49.0%   |     50%        73.5%  | flash-attn bwd 8%, mul 7%, flash-attn fwd 4%
    packed-bf16     207.0     7.5%    11.0%   |     22%        29.8%  | autocast copies 15%, flash-attn bwd 11%, mul 9%
    packed4-bf16    204.9     7.4%     9.3%   |     18%        41.3%  | flash-attn bwd 38%, copies 7%, flash-attn fwd 6%

With AMX the bf16 peak is 6.8x the fp32 one but a 576-wide model's matmuls at ~480 tokens run at
30% of it even with nothing else in the step, and the rest (casts, attention, elementwise ops,
AdamW) does not speed up: bf16 is 1.26x faster than fp32 by wall clock (1.53x per CPU-second)
while its MFU is 5x lower. 40% of the bf16 peak is out of reach at the demo's 512-token steps on
this CPU; 2048-token steps lift the ceiling to 41% but the block-diagonal attention eats the gain.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
MODEL = "packaged:smollm2-135m-instruct"
CONFIGS = ("unpacked-fp32", "unpacked-bf16", "packed-fp32", "packed-bf16")
# Batch layouts. unpacked: 4 samples padded to the longest (the stage before this benchmark).
# packed: one bfd row of <= 512 tokens per step (~2.7 demo samples, about the real tokens of an
# unpacked batch of 4, so the optimizer takes about as many steps per epoch). packed4: 4 such rows
# per step, which TRL's padding-free collator joins into one 2048-token sequence: attention runs
# over the whole 2048 x 2048 block-diagonal mask, ~4x the attention FLOPs of 4 separate rows.
LAYOUTS = {
    "unpacked": dict(packing=False, per_device_train_batch_size=4),
    "packed": dict(packing=True, per_device_train_batch_size=1),
    "packed4": dict(packing=True, per_device_train_batch_size=4),
}


def demo_rows(kind: str):
    """The SFT rows the demo trains on (or the Alpaca demo file), as a `messages` dataset."""
    import datasets

    if kind == "alpaca":
        path = REPO.parent / "shared" / "data" / "llamafactory_demo" / "alpaca_en_demo.json"
        rows = json.loads(path.read_text())
        msgs = [
            [
                {"role": "user", "content": (r["instruction"] + "\n" + r.get("input", "")).strip()},
                {"role": "assistant", "content": r["output"]},
            ]
            for r in rows
        ]
        return datasets.Dataset.from_dict({"messages": msgs})
    from nebula_utils.data import sources as S

    mix = yaml.safe_load((REPO / "params" / "stages" / "10_data_sft_mix.yaml").read_text())
    parts = [S.reasoning_gym_sft(t, mix["sft_math_per_task"], 0).dataset for t in mix["sft_math_tasks"]]
    parts.append(S.humaneval_sft(mix["sft_code_n"], split="train").dataset)
    rows = datasets.concatenate_datasets([p.select_columns(["messages"]) for p in parts])
    return rows.shuffle(seed=0)


def stage_config(layout: str, bf16: bool, **over):
    from nebula_utils.config import merge_layers
    from nebula_utils.stages import stage_defaults
    from nebula_utils.stages.sft import SFTStageConfig

    values = merge_layers(SFTStageConfig, "20_sft", stage_defaults("20_sft"))
    values |= dict(model=MODEL, data="-", device="cpu", bf16=bf16, run_dir="-", run_id="") | LAYOUTS[layout]
    values |= dict(learning_rate=5e-5, warmup_ratio=0.0, logging_steps=1, max_steps=0, num_train_epochs=1.0)
    return SFTStageConfig(**(values | over))


def train_once(name: str, rows, state: dict, tokenizer, profile_steps: int = 0, **over) -> dict:
    """One epoch (or max_steps) of the stage's trainer on `rows` from weights `state`; the measurements.
    profile_steps > 0: torch.profiler records optimizer steps 3 .. 2 + profile_steps (result "profile")."""
    import torch
    from transformers import AutoModelForCausalLM, TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTTrainer

    from nebula_utils.inference.models import resolve_model_path
    from nebula_utils.train.sft import make_trainer
    from nebula_utils.train.throughput import TokenCounter

    layout, precision, *head = name.split("-")
    cfg = stage_config(layout, precision == "bf16", **over)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(MODEL), dtype=torch.float32)
    model.load_state_dict(state)
    with tempfile.TemporaryDirectory() as out:
        if head == ["fused"]:  # TRL's own chunked LM-head loss, which the stage uses on CUDA only
            args = cfg.to_trl(out, bf16=precision == "bf16")
            trainer = SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer)
        else:
            trainer = make_trainer(cfg, model, rows, tokenizer, Path(out), bf16=precision == "bf16")
        counter = TokenCounter().attach(trainer.model)
        marks: list[tuple[float, float, int, int, dict]] = []
        phases = time_phases(trainer)

        class Marks(TrainerCallback):
            def mark(self, *args, **kwargs):
                now = (time.perf_counter(), time.process_time(), counter.tokens, counter.target_tokens)
                marks.append((*now, {k: v for k, v in phases.items() if k != "remove"}))

            on_train_begin = on_step_end = mark

        trainer.add_callback(Marks())
        profiler = step_profiler(counter, first=3, last=2 + profile_steps) if profile_steps else None
        if profiler:
            trainer.add_callback(profiler)
        trainer.remove_callback(PrinterCallback)  # the per-step log dicts; this script prints a summary
        try:
            trainer.train()
        finally:
            phases["remove"]()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    # from the end of the first step when there are two or more, else from the start of training
    (t0, c0, n0, g0, p0), (t1, c1, n1, g1, p1) = marks[1 if len(marks) > 2 else 0], marks[-1]
    threads = torch.get_num_threads()
    wall, cpu = t1 - t0, (c1 - c0) / threads
    return {
        "config": name,
        "steps": len(marks) - 1,
        "tokens": n1 - n0,
        "target_tokens": g1 - g0,
        "tokens_per_s": (n1 - n0) / wall,
        "target_tokens_per_s": (g1 - g0) / wall,
        "tokens_per_cpu_s": (n1 - n0) / cpu,
        "cpu_share": cpu / wall,
        "padding_fraction": counter.padding_fraction,
        "rows_per_forward": round(counter.slots / max(counter.batches, 1)),
        "losses": losses,
        "phases_cpu_s": {k: (p1[k] - p0[k]) / threads for k in p1} | {"total": (c1 - c0) / threads},
        "profile": profiler.summary() if profiler else None,
    }


# The ops that run the model's matmuls (linear layers: mm/addmm; batched: bmm/baddbmm). Attention's
# score matmuls run inside the fused SDPA kernel and are not model FLOPs (6N leaves them out).
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation")


def step_profiler(counter, first: int, last: int):
    """A TrainerCallback running torch.profiler over optimizer steps `first`..`last` (1-based): the
    wall time of those steps, the tokens they trained, and each op's own time (an op's self time is
    measured on the thread that calls it, across the intra-op threads it fans out to: wall time)."""
    from transformers import TrainerCallback

    class StepProfiler(TrainerCallback):
        def __init__(self, counter, first: int, last: int) -> None:
            self.counter, self.first, self.last = counter, first, last
            self.prof = None
            self.t0 = self.tokens0 = 0

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step + 1 == self.first:
                import torch.profiler

                self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                self.prof.start()
                self.t0, self.tokens0 = time.perf_counter(), self.counter.tokens

        def on_step_end(self, args, state, control, **kwargs):
            if self.prof is not None and state.global_step == self.last:
                self.prof.stop()
                self.window = (time.perf_counter() - self.t0, self.counter.tokens - self.tokens0)

        def summary(self) -> dict:
            ops = {e.key: e.self_cpu_time_total / 1e6 for e in self.prof.key_averages()}
            seconds, tokens = self.window
            matmul = sum(v for k, v in ops.items() if k in MATMUL_OPS)
            rest = sorted(((v, k) for k, v in ops.items() if k not in MATMUL_OPS), reverse=True)[:6]
            return {
                "seconds": seconds,
                "tokens": tokens,
                "matmul_s": matmul,
                "top_other_ops_s": {k: v for v, k in rest},
            }

    return StepProfiler(counter, first, last)


def time_phases(trainer) -> dict:
    """CPU seconds spent in the collator, forward+backward (training_step) and optimizer steps
    (grad clipping is in neither); the rest of a step is Trainer/TRL bookkeeping and logging."""
    import torch.optim.optimizer as optimizer_hooks

    spent = {"collate": 0.0, "forward_backward": 0.0, "optimizer": 0.0}

    def timed(key, fn):
        def run(*a, **k):
            start = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                spent[key] += time.process_time() - start

        return run

    trainer.data_collator = timed("collate", trainer.data_collator)
    trainer.training_step = timed("forward_backward", trainer.training_step)
    opt_start = [0.0]
    pre = optimizer_hooks.register_optimizer_step_pre_hook(lambda *a: opt_start.__setitem__(0, time.process_time()))
    post = optimizer_hooks.register_optimizer_step_post_hook(
        lambda *a: spent.__setitem__("optimizer", spent["optimizer"] + time.process_time() - opt_start[0])
    )
    spent["remove"] = lambda: (pre.remove(), post.remove())
    return spent


def summarise(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}, {max(values):.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=48, help="rows per round (every config trains on them)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--curve-steps", type=int, default=12, help="0 = skip the fp32/bf16 loss-curve check")
    parser.add_argument("--data", choices=["demo", "alpaca"], default="demo")
    parser.add_argument("--json", default="", help="also write every measurement here")
    parser.add_argument(
        "--ceiling-steps",
        type=int,
        default=3,
        help="profiled steps per config for the matmul-only MFU ceiling (0 = skip)",
    )
    args = parser.parse_args()

    import datasets
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    from nebula_utils.inference.models import load_tokenizer, resolve_model_path
    from nebula_utils.train.throughput import count_params, measure_matmul_peak, native_cpu_bf16, remember_peak

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    configs = args.configs.split(",")
    rows = demo_rows(args.data)
    tokenizer = load_tokenizer(MODEL)
    base = AutoModelForCausalLM.from_pretrained(resolve_model_path(MODEL), dtype=torch.float32)
    state = {k: v.clone() for k, v in base.state_dict().items()}
    params = count_params(base)
    del base
    peaks = {p: measure_matmul_peak(p, threads=args.threads) for p in ("float32", "bfloat16")}
    for dtype, flops in peaks.items():  # training runs read their MFU against the best peak seen here
        remember_peak(dtype, flops, args.threads)
    print(
        f"{len(rows)} {args.data} rows; {MODEL}: {params / 1e6:.1f}M params; {args.threads} threads; "
        f"bf16 flags: {native_cpu_bf16() or 'none'}; matmul peak (CPU time): "
        f"fp32 {peaks['float32'] / 1e9:.0f}, bf16 {peaks['bfloat16'] / 1e9:.0f} GFLOP/s "
        f"({peaks['bfloat16'] / peaks['float32']:.1f}x)"
    )
    results: list[dict] = []
    for r in range(args.rounds):
        subset = rows.select([(r * args.samples + i) % len(rows) for i in range(args.samples)])
        order = configs[r % len(configs) :] + configs[: r % len(configs)]
        for name in order:
            res = train_once(name, subset, state, tokenizer) | {"round": r}
            peak = peaks["bfloat16" if "-bf16" in name else "float32"]
            res["mfu"] = 6 * params * res["tokens_per_s"] / peak
            res["mfu_cpu_time"] = 6 * params * res["tokens_per_cpu_s"] / peak
            results.append(res)
            ph = res["phases_cpu_s"]
            split = ", ".join(f"{k} {v / ph['total']:.0%}" for k, v in ph.items() if k != "total")
            print(
                f"round {r} {name:14s} {res['steps']:3d} steps {res['tokens']:6d} tokens  "
                f"{res['tokens_per_s']:6.1f} tok/s ({res['target_tokens_per_s']:5.1f} trained)  "
                f"{res['tokens_per_cpu_s']:6.1f} tok/CPU-s  padding {res['padding_fraction']:.1%}  "
                f"MFU {res['mfu']:.1%} wall, {res['mfu_cpu_time']:.1%} CPU time  cpu share {res['cpu_share']:.0%}  CPU time: {split}",
                flush=True,
            )
    report(results, configs, args.rounds)
    ceilings = {}
    if args.ceiling_steps:
        print(f"\nmatmul-only MFU ceiling: {args.ceiling_steps} profiled steps per config (after 2 unprofiled ones)")
        for name in configs:
            run = train_once(
                name, rows, state, tokenizer, profile_steps=args.ceiling_steps, max_steps=2 + args.ceiling_steps
            )
            ceilings[name] = matmul_ceiling(name, run["profile"], params, peaks)
    curve = loss_curve(rows, state, tokenizer, args.curve_steps) if args.curve_steps else None
    if args.json:
        Path(args.json).write_text(
            json.dumps({"peaks": peaks, "params": params, "runs": results, "ceilings": ceilings, "curve": curve})
        )


def report(results: list[dict], configs: list[str], rounds: int) -> None:
    by = {(r["round"], r["config"]): r for r in results}
    print(f"\nper config, median [min, max] over {rounds} rounds:")
    for name in configs:
        runs = [by[(r, name)] for r in range(rounds)]
        print(
            f"  {name:14s} tok/s {summarise([x['tokens_per_s'] for x in runs])}  "
            f"trained tok/s {summarise([x['target_tokens_per_s'] for x in runs])}  "
            f"tok/CPU-s {summarise([x['tokens_per_cpu_s'] for x in runs])}  "
            f"MFU% wall {summarise([100 * x['mfu'] for x in runs])}  CPU {summarise([100 * x['mfu_cpu_time'] for x in runs])}  "
            f"padding {runs[0]['padding_fraction']:.1%}"
        )
    pairs = [
        ("packed-fp32", "unpacked-fp32"),
        ("packed-bf16", "unpacked-bf16"),
        ("unpacked-bf16", "unpacked-fp32"),
        ("packed-bf16", "packed-fp32"),
        ("packed-bf16", "unpacked-fp32"),
        ("packed4-fp32", "packed-fp32"),
        ("packed4-bf16", "packed-bf16"),
        ("packed-bf16", "packed-bf16-fused"),
        ("packed-fp32", "packed-fp32-fused"),
    ]
    print(f"\nratios per round (same rows, adjacent in time), median [min, max], n = {rounds}:")
    for a, b in pairs:
        if a not in configs or b not in configs:
            continue
        for key, label in (("tokens_per_s", "wall"), ("tokens_per_cpu_s", "CPU time")):
            ratios = [by[(r, a)][key] / by[(r, b)][key] for r in range(rounds)]
            print(f"  {a} / {b} ({label}): {summarise(ratios)}")


def matmul_ceiling(name: str, profile: dict, params: int, peaks: dict) -> dict:
    """The MFU a config's step would reach if nothing but its matmuls took time (6N FLOPs per token
    over the time of the matmul ops alone), printed with where the rest of the step goes."""
    peak = peaks["bfloat16" if "-bf16" in name else "float32"]
    flops = 6 * params * profile["tokens"]
    out = {
        "ceiling": flops / profile["matmul_s"] / peak,
        "mfu_profiled": flops / profile["seconds"] / peak,
        "matmul_share": profile["matmul_s"] / profile["seconds"],
    } | profile
    others = ", ".join(
        f"{k.removeprefix('aten::')} {v / profile['seconds']:.0%}" for k, v in profile["top_other_ops_s"].items()
    )
    print(
        f"  {name:14s} matmuls {out['matmul_share']:.0%} of the step ({profile['matmul_s']:.2f} of {profile['seconds']:.2f} s, "
        f"{profile['tokens']} tokens): ceiling {out['ceiling']:.1%} of the {peak / 1e9:.0f} GFLOP/s peak "
        f"(profiled MFU {out['mfu_profiled']:.1%}); rest: {others}",
        flush=True,
    )
    return out


def loss_curve(rows, state, tokenizer, steps: int) -> dict:
    """Packed fp32 vs packed bf16, same weights and batches: per-step training loss."""
    runs = {p: train_once(f"packed-{p}", rows, state, tokenizer, max_steps=steps) for p in ("fp32", "bf16")}
    a, b = runs["fp32"]["losses"], runs["bf16"]["losses"]
    rel = [abs(y - x) / x for x, y in zip(a, b)]
    print(f"\nloss curve, packed, {steps} steps, lr 5e-5 (fp32 | bf16 | rel. diff):")
    for i, (x, y, d) in enumerate(zip(a, b, rel), 1):
        print(f"  step {i:2d}  {x:.4f}  {y:.4f}  {d:.2%}")
    print(
        f"  mean rel. diff {statistics.mean(rel):.2%}, max {max(rel):.2%}; mean loss fp32 {statistics.mean(a):.4f} "
        f"bf16 {statistics.mean(b):.4f}; bf16 speed {runs['bf16']['tokens_per_cpu_s'] / runs['fp32']['tokens_per_cpu_s']:.2f}x "
        "(CPU time)"
    )
    return {"fp32": a, "bf16": b, "mean_rel_diff": statistics.mean(rel), "max_rel_diff": max(rel)}


if __name__ == "__main__":
    main()
