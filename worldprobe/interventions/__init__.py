"""Stage beside extraction: ask the model its dataset's question and steer it along the probe direction
(science.md section 10).

Python API::

    from worldprobe.interventions import run_ask, run_steer
    folder = run_ask("historical_figure", "smollm2-135m", limit=200)
    folder = run_steer("historical_figure", "smollm2-135m", limit=50)

Where they hook, per architecture family, is the one table in ``worldprobe.anchors``.
"""

from worldprobe.lazy import lazy_exports

_EXPORTS = {
    "run_ask": "worldprobe.interventions.ask", "run_steer": "worldprobe.interventions.steer",
    "generate": "worldprobe.interventions.generate", "Edit": "worldprobe.interventions.generate",
    "get_question": "worldprobe.interventions.questions",
}  # fmt: skip
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
