"""The trusted test process: it runs the reference's tests and decides pass/fail.

Run as `python -I -S <this file>` by nebula_utils.verifiers.sandbox.run_tests, in a process of
its own, next to (never inside) the sandbox that holds the candidate. It executes only trusted
text: the reference's prelude (HumanEval's prompt: imports and helpers such as `poly` or
`encode_cyclic`) and its test code (`def check(candidate): assert ...`). Where that code calls
`candidate(...)`, or the entry point by its own name (HumanEval/33's test calls `sort_third`),
it calls `call_candidate` below: the arguments go to the sandbox as plain data (_wire.py), the
reply comes back as fresh built-in objects. No object, frame or builtin of the candidate's
exists in this process, so nothing the candidate does can reach the asserts or the verdict.

The verdict is one JSON line on the stdout this process was started with (a pipe only the
parent holds): {"passed", "status", "reason", "calls"}. Test code's own prints go to stderr.
passed is true only when check() returned normally AND every call got a well-formed reply
(a sandbox that died or sent garbage fails the run, even if the test code caught the error).
"""

import json
import os
import resource
import sys


def load_wire():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_wire.py")
    module = type(sys)("_wire")
    module.__file__ = path
    with open(path, encoding="utf-8") as fh:
        exec(compile(fh.read(), path, "exec"), module.__dict__)
    return module


class SandboxGone(BaseException):
    """The sandbox ended or broke the protocol. A BaseException, so that test code's own
    `except Exception` cannot swallow it."""


class CandidateExit(BaseException):
    """The candidate called exit() during a call."""


class CandidateError(Exception):
    """An exception the candidate raised whose type is not a built-in exception."""


def exception_from(name, message):
    import builtins

    kind = getattr(builtins, name, None) if isinstance(name, str) and name.isidentifier() else None
    if isinstance(kind, type) and issubclass(kind, Exception):
        try:
            return kind(message)
        except Exception:  # e.g. UnicodeDecodeError needs five arguments
            pass
    return CandidateError(f"{name}: {message}")


def describe(exc, sources):
    """'Type: message (test line N: code)' for the deepest frame in the trusted code."""
    where, tb = "", exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name in sources:
            lines = sources[name]
            n = tb.tb_lineno
            if 0 < n <= len(lines):
                where = f" ({name[1:-1]} line {n}: {lines[n - 1].strip()[:120]})"
        tb = tb.tb_next
    message = str(exc)[:300]
    return f"{type(exc).__name__}{': ' + message if message else ''}{where}"


def main():
    job = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    wire = load_wire()
    verdict_fd = os.dup(1)
    os.dup2(2, 1)  # the test code's prints go to stderr; the verdict pipe carries only the verdict
    resource.setrlimit(resource.RLIMIT_CPU, (job["cpu_seconds"], job["cpu_seconds"] + 1))
    resource.setrlimit(resource.RLIMIT_AS, (job["memory_bytes"], job["memory_bytes"]))
    req, resp, cap, entry = job["req_fd"], job["resp_fd"], job["channel_bytes"], job["entry_point"]
    state = {"calls": 0, "broken": None, "ready": None}

    def report(passed, status, reason):
        line = json.dumps({"passed": passed, "status": status, "reason": reason[:1000], "calls": state["calls"]})
        os.write(verdict_fd, (line + "\n").encode("utf-8"))
        os._exit(0)

    def receive():
        try:
            message = wire.recv(resp, cap)
        except wire.WireError as exc:
            state["broken"] = ("channel_error", f"bad reply from the sandbox: {exc}")
            raise SandboxGone(state["broken"][1]) from None
        except OSError:
            message = None
        if type(message) is not list or not message or type(message[0]) is not str:
            if message is None:
                state["broken"] = ("sandbox_ended", "the sandbox ended during a test call")
            else:
                state["broken"] = ("channel_error", "malformed reply from the sandbox")
            raise SandboxGone(state["broken"][1])
        return message

    def wait_ready():
        if state["ready"] is None:
            try:
                state["ready"] = receive()
            except SandboxGone:
                state["broken"] = ("sandbox_ended", "the sandbox ended before the program was loaded")
                raise
        first = state["ready"]
        if first[0] == "load_error" and len(first) == 3:
            state["broken"] = (str(first[1]), str(first[2]))
            raise SandboxGone(str(first[2]))
        if first != ["ready"]:
            state["broken"] = ("channel_error", "malformed greeting from the sandbox")
            raise SandboxGone(state["broken"][1])

    def call_candidate(*args, **kwargs):
        if state["broken"] is not None:
            raise SandboxGone(state["broken"][1])
        wait_ready()
        state["calls"] += 1
        try:
            wire.send(req, ["call", wire.encode(list(args)), wire.encode(kwargs)], cap)
        except wire.WireError as exc:  # the test passed something that is not plain data
            raise TypeError(f"argument cannot be sent to the sandboxed candidate: {exc}") from None
        except OSError:
            state["broken"] = ("sandbox_ended", "the sandbox ended during a test call")
            raise SandboxGone(state["broken"][1]) from None
        reply = receive()
        kind = reply[0]
        if kind == "ok" and len(reply) == 2:
            try:
                return wire.decode(reply[1])
            except wire.WireError as exc:
                state["broken"] = ("channel_error", f"bad value from the sandbox: {exc}")
                raise SandboxGone(state["broken"][1]) from None
        if kind == "raise" and len(reply) == 4 and all(type(x) is str for x in reply[1:]):
            exc = exception_from(reply[1], reply[2])
            exc.candidate_where = reply[3]
            raise exc
        if kind == "exit":
            state["broken"] = ("early_exit", "the candidate called exit() during a test call")
            raise CandidateExit(state["broken"][1])
        state["broken"] = ("channel_error", "malformed reply from the sandbox")
        raise SandboxGone(state["broken"][1])

    call_candidate.__name__ = call_candidate.__qualname__ = entry
    sources = {"<prelude>": job["prelude"].splitlines(), "<test>": job["test"].splitlines()}
    namespace = {"__name__": "__main__"}
    try:
        exec(compile(job["prelude"], "<prelude>", "exec"), namespace)
        exec(compile(job["test"], "<test>", "exec"), namespace)
    except BaseException as exc:  # noqa: B902 - the reference itself is broken
        report(False, "setup_error", f"the reference's own code fails: {describe(exc, sources)}")
    check = namespace.get(job.get("check_name", "check"))
    if not callable(check):
        report(False, "setup_error", "the reference's test code defines no check(candidate)")
    namespace[entry] = call_candidate  # a test that calls the entry point by name reaches the sandbox too
    try:
        wait_ready()
        check(call_candidate)
    except BaseException as exc:  # noqa: B902 - any failure of the tests is a failed verdict
        if state["broken"] is not None:
            report(False, *state["broken"])
        by_candidate = hasattr(exc, "candidate_where")
        at = f" at {exc.candidate_where}" if by_candidate and exc.candidate_where else ""
        if isinstance(exc, MemoryError):
            if by_candidate:
                report(False, "memory_limit", f"the candidate ran out of memory (MemoryError{at})")
            report(False, "setup_error", f"the test process ran out of memory: {describe(exc, sources)}")
        report(False, "error", describe(exc, sources) + (f" [raised by the candidate{at}]" if by_candidate else ""))
    if state["broken"] is not None:  # the test code swallowed the failure itself
        report(False, *state["broken"])
    report(True, "ok", "all tests passed")


if __name__ == "__main__":
    main()
