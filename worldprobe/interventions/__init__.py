"""Stage beside extraction: ask the model its dataset's question, steer it (which direction, layer and position move
its answer), and tell it otherwise in context (docs/how-to/behaviour.md).

Python API::

    from worldprobe.interventions import run_ask, run_context, run_steer
    from worldprobe.interventions import Steering
    folder = run_ask("historical_figure", "smollm2-135m", limit=200)
    folder = run_steer("historical_figure", "smollm2-135m", steering=Steering(layers=[4, 8, 12]), limit=50)
    folder = run_context("historical_figure", "smollm2-135m", limit=100)

Where they hook, per architecture family, is the one table in ``worldprobe.anchors``.
"""

from worldprobe.lazy import lazy_dir, lazy_exports

_EXPORTS = {
    "run_ask": "worldprobe.interventions.ask", "run_steer": "worldprobe.interventions.steer",
    "run_context": "worldprobe.interventions.context",
    "generate": "worldprobe.interventions.generate", "Edit": "worldprobe.interventions.generate",
    "get_question": "worldprobe.interventions.questions",
    **dict.fromkeys(["Asking", "Steering", "DasSettings"], "worldprobe.interventions.options"),
}  # fmt: skip
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
__dir__ = lazy_dir(_EXPORTS)
