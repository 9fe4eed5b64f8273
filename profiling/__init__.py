"""Capture: run training steps under torch.profiler and write trace sets that analysis reads.

``profile(step_fn, settings)`` profiles any step function (``ProfileSettings`` says how many
steps, which activities, where to write); ``speedtrace profile`` does it for the bundled trainer.
"""

from speedtrace.profiling.capture import ProfileSettings, profile  # noqa: F401
