"""The states a task and a batch move through, named once for the API, the pages and the metrics.

The worker side writes them (db/, batch_lifecycle); everything that reads or publishes them imports
these tuples, so a new state cannot be served by one part and missing from another.
"""

from __future__ import annotations

# A task: queued, running, waiting to retry, then one of the two final states.
TASK_STATES = ("pending", "started", "retry", "success", "failure")
FINAL_TASK_STATES = frozenset({"success", "failure"})
# A batch: its tasks run, then its ZIP is written, then it is done.
BATCH_STATES = ("listing", "running", "finalizing", "done")
