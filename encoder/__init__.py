"""Training side: the recording format, the synthetic retina, retina models, training and evaluation.

Never imports `runtime`, `hardware` or `calibration` (see ARCHITECTURE.md).
"""
