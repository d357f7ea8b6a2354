"""Studies: prompts × models × analyses, split into tasks, run resumably on one machine or on Ray.

    from compare import study
    summary = study.run({"prompts": [...], "models": ["mamba-130m", "gpt2"], "seed": 0,
                         "analyses": [{"analysis": "compare"},
                                      {"analysis": "noise_sweep", "component": "h", "target": " Mary"}]},
                        out="out/study1", executor="embedded")   # or executor="ray"
    summary.read("noise_sweep")       # = pd.read_parquet("out/study1/noise_sweep")

Modules: `spec` (the declaration, checked), `tasks` (the split, the seeds, running one task),
`results` (the folder: atomic per-task files, resuming, failures), `executors` (embedded, Ray),
`runner` (`run`, progress), `cli` (`python -m compare study`).
"""
from .executors import EXECUTORS, RETRIES
from .results import failures, read
from .runner import Progress, Summary, run
from .spec import ANALYSES, Analysis, Spec, SpecError, from_mapping, load
from .tasks import Task, split, task_seed

__all__ = ["ANALYSES", "Analysis", "EXECUTORS", "Progress", "RETRIES", "Spec", "SpecError", "Summary", "Task",
           "failures", "from_mapping", "load", "read", "run", "split", "task_seed"]
