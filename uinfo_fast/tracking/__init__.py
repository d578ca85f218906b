"""Measurement during training: feature capture and its options (``capture.py``), the
measurement schedule (``schedule.py``), the run log (``runlog.py``, on the file primitives of
``log.py``: append, lock, torn-tail repair, reading), the tracker that ties them to the probe engine
(``tracker.py``), its background worker (``worker.py``) and its ranks under torch.distributed
(``distributed.py``).

Names load on first use: reading a log (``uinfo_fast.tracking.log``) never loads the compiled
extension.
"""
from .._lazy import lazy_exports

_EXPORTS = {
    ".capture": ("CaptureOptions", "FeatureCapture"),
    ".log": ("read_log",),
    ".runlog": ("RunLog",),
    ".schedule": ("Schedule",),
    ".tracker": ("UsableInfoTracker",),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
