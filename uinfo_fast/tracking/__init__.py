"""Measurement during training: feature capture (``capture.py``), the measurement schedule
(``schedule.py``), the run log (``log.py``), the tracker that ties them to the probe engine
(``tracker.py``), its background worker (``worker.py``) and its ranks under torch.distributed
(``distributed.py``).

Names load on first use: reading a log (``uinfo_fast.tracking.log``) never loads the compiled
extension.
"""
from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "FeatureCapture": ".capture",
    "JsonlLog": ".log",
    "Schedule": ".schedule",
    "UsableInfoTracker": ".tracker",
    "read_log": ".log",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .capture import FeatureCapture
    from .log import JsonlLog, read_log
    from .schedule import Schedule
    from .tracker import UsableInfoTracker
