"""Benchmark harnesses (`meterline bench ...`): they print figures and never gate CI."""
