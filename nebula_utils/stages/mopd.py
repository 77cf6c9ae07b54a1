"""Stage 51_mopd: multi-teacher on-policy distillation (MOPD): every prompt is distilled from the
domain-specialist teacher its task label routes it to.

The 50_opd knobs (student, data, sample budget, batch, LR, rollout and divergence settings) plus
the routing: `teachers` maps a task label (the `task` column 14_classify_sample writes) to a
teacher; prompts with any other label go to `teacher`, the default. With `teachers: {}` every
prompt goes to `teacher` and the run is exactly plain OPD (tested).

Two backends:
* `local` (runs here): nebula_utils.train.mopd.MOPDTrainer, a subclass of TRL's
  `DistillationTrainer`; teachers load lazily, at most `max_resident_teachers` on the device.
* `vllm_servers` (the full-scale recipe; needs CUDA, vLLM and running servers, NOT exercised by
  any test here): TRL's experimental `AsyncDistillationTrainer` with one vLLM server per teacher
  (`teacher_servers`: teacher id -> URL, ids "default" and each routed task) and the student's
  own vLLM server (`student_server`). Its teachers report only their top-k logprobs, so its loss
  approximates the local backend's full-vocabulary one (see nebula_utils.train.mopd_async).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..config import ConfigError, doc
from .opd import OPDStageConfig

BACKENDS = ("local", "vllm_servers")
OFFLOAD = ("cpu", "disk")  # nebula_utils.train.mopd.OFFLOAD (not imported: it imports torch)
DEFAULT_TEACHER = "default"


@dataclass
class MOPDStageConfig(OPDStageConfig):
    upstream: ClassVar[dict[str, str]] = {"data": "14_classify_sample/data"}
    builtin_inputs: ClassVar[dict[str, str]] = {"data": "rl"}

    teachers: dict[str, str] = doc(
        "task label -> teacher (model spec or checkpoint folder); other labels go to `teacher`; {} = plain OPD"
    )
    route_by: str = doc("the column holding each prompt's label (14_classify_sample writes `task`)")
    max_resident_teachers: int = doc("teachers on the device at once (1: memory of the largest, not the sum)")
    teacher_offload: str = doc("where a teacher off the device waits: cpu (RAM) | disk (reloaded when routed to)")
    backend: str = doc("local (DistillationTrainer subclass) | vllm_servers (TRL's async trainer; full scale only)")
    teacher_servers: dict[str, str] = doc('vllm_servers: teacher id ("default" or a routed task) -> vLLM server URL')
    student_server: str = doc("vllm_servers: URL of the student's vLLM server (generation and weight sync)")

    def check(self) -> None:
        super().check()
        if DEFAULT_TEACHER in self.teachers:
            raise ConfigError(f"key 'teachers': '{DEFAULT_TEACHER}' is the fallback; set it with key 'teacher'")
        empty = [task for task, spec in self.teachers.items() if not spec]
        if empty:
            raise ConfigError(f"key 'teachers': task '{empty[0]}' has no teacher")
        self.one_of("backend", BACKENDS)
        self.one_of("teacher_offload", OFFLOAD)
        self.at_least("max_resident_teachers", 1)
        if not self.route_by:
            raise ConfigError("key 'route_by': name the label column (e.g. task)")
        if self.backend == "vllm_servers":
            missing = [t for t in self.teacher_ids() if t not in self.teacher_servers]
            if missing:
                raise ConfigError(f"key 'teacher_servers': no server URL for teacher '{missing[0]}'")
            if not self.student_server:
                raise ConfigError("key 'student_server': the vllm_servers backend needs the student's server URL")

    def check_teacher_is_not_the_student(self) -> None:
        """A teacher may be the student's starting checkpoint (it then anchors those tasks to where
        the student began: a KL penalty), as long as some teacher differs."""
        if all(spec == self.model for spec in [self.teacher, *self.teachers.values()]):
            raise ConfigError("key 'teacher': every teacher is the student itself; the divergence is 0")

    def teacher_ids(self) -> list[str]:
        return [DEFAULT_TEACHER, *self.teachers]

    def teacher_table(self) -> Any:
        """One row per teacher id: the labels routed to it and its model (for the notebook)."""
        import pandas as pd

        rows = [{"teacher_id": DEFAULT_TEACHER, "labels": "(any other)", "model": self.teacher}]
        rows += [{"teacher_id": task, "labels": task, "model": spec} for task, spec in self.teachers.items()]
        return pd.DataFrame(rows)


def teacher_frame(metrics: dict[str, Any]) -> Any:
    """Per-teacher rows, tokens and mean divergence from a finished run's metrics."""
    import pandas as pd

    rows: dict[str, dict[str, Any]] = {}
    for name, entry in metrics.items():
        parts = name.split("/")
        if len(parts) == 3 and parts[0] == "mopd" and parts[1] != "pool":
            rows.setdefault(parts[1], {})[parts[2]] = entry["value"]
    return pd.DataFrame(rows).T.rename_axis("teacher_id")


def plot_teacher_divergence(log: list[dict[str, Any]], teacher_ids: list[str], title: str) -> Any:
    """Each teacher's mean divergence per token, step by step (gaps: that teacher had no rows)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    for tid in teacher_ids:
        points = [(h["step"], h[f"mopd/{tid}/divergence"]) for h in log if h.get(f"mopd/{tid}/divergence") is not None]
        if points:
            ax.plot(*zip(*points), marker="o", ms=3, label=tid)
    ax.set(xlabel="optimizer step", ylabel="divergence (nats/token)", title=title)
    ax.legend(title="teacher")
    fig.tight_layout()
    return fig
