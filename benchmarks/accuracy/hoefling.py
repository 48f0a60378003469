"""openretina's Höfling 2024 core + readout defaults, with its temporal kernels in ms.

Why a separate module: the peer row must use openretina's published defaults, but its
temporal kernel sizes are frame counts at the 30 Hz of the Höfling et al. 2024 recordings.
Shown frame for frame at 100 or 40 Hz they would be a different network (21 frames = 700 ms
at 30 Hz but 210 ms at 100 Hz). So the kernels are kept as the *durations* they have in the
original (frames / 30 Hz) and turned back into frames at the recording's rate, the same way
npe's own models treat every temporal hyper-parameter (`encoder.timebase`).

This module imports neither torch nor openretina, so its conversion is tested without the
optional peer install. Values: openretina's `configs/model/base_core_readout.yaml` (hidden
channels, kernel sizes, paddings, cut frames) and the defaults of
`openretina.models.core_readout.ExampleCoreReadout` in openretina 1.1.1 (regularisers,
readout scales, learning rate), which agree with that file.
"""

from __future__ import annotations

from dataclasses import dataclass

from encoder.timebase import frames_from_ms, ms_from_frames

#: Frame rate of the Höfling et al. 2024 recordings the defaults were tuned on.
HOEFLING_FRAME_RATE_HZ = 30.0


@dataclass(frozen=True)
class HoeflingDefaults:
    """openretina's Höfling 2024 core + Gaussian-mask readout hyper-parameters."""

    hidden_channels: tuple[int, ...] = (16, 16)
    temporal_kernel_frames_30hz: tuple[int, ...] = (21, 11)
    spatial_kernel_sizes: tuple[int, ...] = (11, 5)
    core_gamma_input: float = 0.0
    core_gamma_hidden: float = 0.0
    core_gamma_in_sparse: float = 0.0
    core_gamma_temporal: float = 40.0
    readout_scale: bool = True
    readout_bias: bool = True
    readout_gaussian_mean_scale: float = 6.0
    readout_gaussian_var_scale: float = 4.0
    readout_positive: bool = True
    readout_gamma: float = 0.4  # the mask's L1 weight in MultiGaussianMaskReadout
    readout_gamma_masks: float = 0.0  # the feature weights' L1 weight
    learning_rate: float = 0.01
    cut_first_n_frames_in_core: int = 0

    @property
    def temporal_kernel_ms(self) -> tuple[float, ...]:
        """The temporal kernels as durations: frames at 30 Hz → ms (21 → 700, 11 → 366.7)."""
        return tuple(
            ms_from_frames(k, HOEFLING_FRAME_RATE_HZ) for k in self.temporal_kernel_frames_30hz
        )

    def temporal_kernel_frames(self, frame_rate_hz: float) -> tuple[int, ...]:
        """The same durations as frames at `frame_rate_hz` (100 Hz: 70, 37; 40 Hz: 28, 15).

        Rounded to the nearest frame; an even count becomes the next odd one, because
        openretina's separable convolution is built around a centre tap.
        """
        out = []
        for ms in self.temporal_kernel_ms:
            k = frames_from_ms(ms, frame_rate_hz)
            out.append(k if k % 2 == 1 else k + 1)
        return tuple(out)

    def window_frames(self, frame_rate_hz: float) -> int:
        """Stimulus history one output sees: the temporal kernels chained (no temporal padding)."""
        return sum(self.temporal_kernel_frames(frame_rate_hz)) - len(self.hidden_channels) + 1
