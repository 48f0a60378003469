"""`goldin2022`: the HDF5 files of Goldin et al. 2022 (Nat. Commun., flashed natural images).

Mouse and axolotl retinas on a multi-electrode array; ~3000 van Hateren images, each shown
for 300 ms after 300 ms of grey; 30 (mouse) or 20 (axolotl) test images repeated. The
published files (Zenodo record 6868362; mirrored by OpenRetina on Hugging Face under
`marre_lab/goldin_2022`) hold, as read by OpenRetina's loaders:

    /train/stimulus          [n_images, H, W] the images only (no grey frames)
    /train/response/binned   [n_cells, n_images] spikes summed over each 300 ms image
    /test/stimulus           [n_test, H, W]
    /test/response/binned    [n_cells, n_test] the trial average (not counts)
    /test/repeats/cell_K     [R, n_test] spike counts of each trial, one dataset per cell

What is implemented: one npe frame per image at 1000 / 300 ≈ 3.33 Hz (the image rate; the
grey gaps are not represented, so the recording's "frames" are image presentations), the
response of a frame is its image's spike count; train images (last --val-fraction → val), then
test images with the first trial's counts; /repeats holds every trial. There is no time
dataset, so --frame-rate-hz overrides the rate if a file was recorded differently. Cell types
become "unknown", centres NaN unless --centers-from-sta; the pixel size must be given (the
paper reports 28 µm per pixel on the retina, which is species-dependent in degrees).
"""

from __future__ import annotations

from pathlib import Path

from encoder.importers.base import ImportOptions, Progress
from encoder.importers.train_test_h5 import TrainTestLayout, cell_number, import_train_test

IMAGE_DURATION_MS = 300.0

LAYOUT = TrainTestLayout(
    format="goldin2022",
    response_field="response/binned",
    time_field=None,
    default_frame_rate_hz=1000.0 / IMAGE_DURATION_MS,
    repeat_key=cell_number,
)


def import_goldin2022(
    sources: list[Path], out: Path, options: ImportOptions, progress: Progress
) -> Path:
    """Import Goldin et al. 2022 files (concatenated in order) into one recording."""
    return import_train_test(LAYOUT, sources, out, options, progress)
