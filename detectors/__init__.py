"""Streaming detectors: score every reading per device and raise anomalies."""
