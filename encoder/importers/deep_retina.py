"""`deep-retina`: the Baccus-lab HDF5 files of McIntosh et al. 2016 and Maheswaranathan et al. 2023.

One file per stimulus of an experiment (e.g. `15-10-07/naturalscene.h5`, `whitenoise.h5`),
as read by the lab's `deepretina.experiments.loadexpt` and OpenRetina's loaders:

    /train/stimulus              [T, H, W] pixel values (50×50 in the papers)
    /train/time                  [T] frame times in s (10 ms bins in the papers)
    /train/response/binned       [n_cells, T] spike counts per frame  ← imported
    /train/response/firing_rate_10ms (and _5ms, _20ms) smoothed rates in Hz (not counts; ignored)
    /test/...                    the same for the repeated test clip
    /test/repeats/cellNN         [R, T_test] spike counts of each trial, one dataset per cell

The frame rate is 1 / the median interval of `time`. Firing-rate datasets are never
turned into counts. Cell types and centres are not stored: types become "unknown", centres
NaN (or the STA's, with --centers-from-sta); the pixel size must be given.
"""

from __future__ import annotations

from pathlib import Path

from encoder.importers.base import ImportOptions, Progress
from encoder.importers.train_test_h5 import TrainTestLayout, cell_number, import_train_test

LAYOUT = TrainTestLayout(
    format="deep-retina",
    response_field="response/binned",
    time_field="time",
    default_frame_rate_hz=None,
    repeat_key=cell_number,
)


def import_deep_retina(
    sources: list[Path], out: Path, options: ImportOptions, progress: Progress
) -> Path:
    """Import Baccus-lab train/test files (concatenated in order) into one recording."""
    return import_train_test(LAYOUT, sources, out, options, progress)
