"""speedtrace.trainer"""
