#!/usr/bin/env bash
# Resolve an environment of this package without installing anything: pip's resolver in dry-run
# mode over `.[<extras>]` (default gpu,dev), against PyPI, as a fresh CUDA machine would see it.
#
#   tools/resolve_gpu_env.sh             # the GPU environment: .[gpu,dev]
#   tools/resolve_gpu_env.sh cpu,dev     # the CPU stack `make venv` installs
#
# Exit status: 0 the set resolves (the key versions are printed), 1 it does not (pip's explanation
# is printed), 2 it cannot be checked here (wrong interpreter/platform, index unreachable).
#
# It runs on the target platform (CPython 3.11, Linux x86_64: environment.yml's) instead of using
# pip's --platform/--python-version/--only-binary=:all:, because those accept wheels only and
# deepspeed, langdetect (from lm-eval[ifeval]) and this package are sdists. The machine's own pip
# configuration (local wheel folders, constraints) is ignored so the answer is the index's; set
# GPU_ENV_INDEX_URL to check against a mirror. It takes about 3 minutes (metadata of ~200 packages).
set -euo pipefail

extras="${1:-gpu,dev}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
index="${GPU_ENV_INDEX_URL:-https://pypi.org/simple}"

"$python" - "$index" <<'PY' || exit 2
import platform
import sys
import urllib.request

if not (sys.platform == "linux" and platform.machine() == "x86_64" and sys.version_info[:2] == (3, 11)):
    sys.exit(
        f"resolve_gpu_env: needs CPython 3.11 on Linux x86_64 (the GPU target); "
        f"this is {platform.python_version()} on {sys.platform}/{platform.machine()} (set PYTHON=...)"
    )
try:
    urllib.request.urlopen(sys.argv[1].rstrip("/") + "/pip/", timeout=15).close()
except OSError as exc:
    sys.exit(f"resolve_gpu_env: index {sys.argv[1]} unreachable ({exc})")
PY

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if ! env -u PIP_FIND_LINKS -u PIP_CONSTRAINT -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL -u PIP_NO_INDEX \
    PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 \
    "$python" -m pip install --dry-run --ignore-installed --progress-bar off --report "$work/report.json" \
    --index-url "$index" "$repo[$extras]" >"$work/pip.log" 2>&1; then
    # pip's own explanation: which requirements conflict (or the error), without the build noise
    awk '/conflict is caused by|^ERROR/ {on=1} on' "$work/pip.log" >&2
    echo "resolve_gpu_env: .[$extras] does not resolve against $index (pip's explanation above)" >&2
    exit 1
fi

"$python" - "$work/report.json" "$extras" <<'PY'
import json
import sys

report, extras = json.load(open(sys.argv[1])), sys.argv[2].split(",")
versions = {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"] for i in report["install"]}
keys = ["torch", "transformers", "trl", "peft", "accelerate", "datasets", "vllm", "deepspeed", "liger-kernel", "triton"]
print(f"resolved .[{','.join(extras)}]: {len(versions)} packages")
for key in keys:
    if key in versions:
        print(f"  {key:<14} {versions[key]}")
cuda = sorted(k for k in versions if k.startswith("nvidia-cuda-runtime"))
if "gpu" in extras:
    missing = [k for k in ("vllm", "deepspeed", "liger-kernel") if k not in versions]
    if missing or not cuda:
        sys.exit(f"resolve_gpu_env: the GPU set lacks {missing or 'a CUDA build of torch'}")
    print(f"  CUDA runtime   {versions[cuda[0]]} ({cuda[0]}: torch is the CUDA build)")
    print("  flash-attn     not resolver-checked: see the `flash` extra in pyproject.toml")
PY
