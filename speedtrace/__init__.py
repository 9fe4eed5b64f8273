"""speedtrace: profile the record-233 speedrun trainer and explain its GPU traces.

Subpackages: ``speedtrace.analysis`` (traces -> metrics, reports, diffs),
``speedtrace.kernels`` (Triton kernels beside their PyTorch references),
``speedtrace.trainer`` (the bundled speedrun trainer) and ``speedtrace.profiling``.
"""

__version__ = "0.1.0"
