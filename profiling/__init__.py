"""speedtrace.profiling"""
