"""wsisam-engine: slides, prompts, detectors, scheduling, Ray execution, stitching, CLI.

``engine.segment_slides`` is the Python API (imported lazily: ``import engine`` stays light).
"""

__all__ = ["segment_slides", "ModelSpec", "ScheduleConfig", "OutputConfig", "ExecutionConfig"]


def __getattr__(name: str):
    if name == "segment_slides":
        from .api import segment_slides

        return segment_slides
    if name == "ModelSpec":
        from .distributed.model_spec import ModelSpec

        return ModelSpec
    if name == "ExecutionConfig":
        from .distributed.executor import ExecutionConfig

        return ExecutionConfig
    if name == "ScheduleConfig":
        from .scheduler import ScheduleConfig

        return ScheduleConfig
    if name == "OutputConfig":
        from .pipeline import OutputConfig

        return OutputConfig
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
