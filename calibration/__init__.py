"""Calibration: per-patient thresholds, brightness curves and phosphene maps from psychophysics,
and representative frames for INT8 quantisation.

Imports `hardware` (arrays, link, safety, the calibration-file schema) and nothing upstream.
"""
