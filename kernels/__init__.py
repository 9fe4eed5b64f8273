"""speedtrace.kernels"""
