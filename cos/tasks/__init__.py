"""Synthetic reasoning tasks with exact scorers, candidate sets and masks (see `cos.tasks.base`)."""
from cos.tasks.base import (PASS_THRESHOLD, TASKS, TaskInstance, entropy, live_candidates, make_instance, read_cells,
                            render)
from cos.tasks import suite  # noqa: F401  (registers the tasks)

__all__ = ["TASKS", "TaskInstance", "make_instance", "render", "read_cells", "entropy", "live_candidates",
           "PASS_THRESHOLD"]
