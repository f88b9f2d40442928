"""aiobound: awaitable, bounded, cancellation-safe submission to executors.

``loop.run_in_executor`` never waits: every call goes onto the pool's
unbounded queue. :class:`BoundedLoopExecutor` makes ``await submit(...)`` wait
for one of ``bound`` slots first, so producers get backpressure and memory
stays flat. :class:`BoundedExecutor` is its synchronous twin, and
:class:`SharedBound` one bound shared by several executors, threads and
loops. This module only re-exports; the code lives in private modules,
one job each.
"""

from __future__ import annotations

from ._deadlines import remaining as remaining
from ._errors import ClosedError as ClosedError
from ._errors import DeadlineExceeded as DeadlineExceeded
from ._errors import OverloadedError as OverloadedError
from ._executor import BoundedLoopExecutor as BoundedLoopExecutor
from ._executor import Partition as Partition
from ._histogram import LatencyHistogram as LatencyHistogram
from ._limits import AIMD as AIMD
from ._limits import Gradient as Gradient
from ._limits import LimitPolicy as LimitPolicy
from ._map import MapIterator as MapIterator
from ._observe import CallObserver as CallObserver
from ._partitions import Share as Share
from ._shared import SharedBound as SharedBound
from ._shared import SharedBoundStats as SharedBoundStats
from ._stats import ExecutorStats as ExecutorStats
from ._stats import PartitionStats as PartitionStats
from ._sync import BoundedExecutor as BoundedExecutor
from ._sync import TimeLimitedExecutor as TimeLimitedExecutor
from ._views import TimeLimited as TimeLimited

__version__ = "0.1.0"

__all__ = (
    "AIMD",
    "BoundedExecutor",
    "BoundedLoopExecutor",
    "CallObserver",
    "ClosedError",
    "DeadlineExceeded",
    "ExecutorStats",
    "Gradient",
    "LatencyHistogram",
    "LimitPolicy",
    "MapIterator",
    "OverloadedError",
    "Partition",
    "PartitionStats",
    "Share",
    "SharedBound",
    "SharedBoundStats",
    "TimeLimited",
    "TimeLimitedExecutor",
    "remaining",
)

# Show the public path in reprs, tracebacks and docs.
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
