"""The openretina peer: its Höfling 2024 core + readout, trained through its own modules.

Why a minimal loop instead of openretina's trainer: `openretina.models.core_readout` and its
CLI need hydra, lightning and omegaconf, whose requirements (with torchvision/torchaudio)
would pull gigabytes of CUDA wheels next to the one allowed `torch==2.13.0`. The *model* is
entirely openretina's: `SimpleCoreWrapper` (its space-time separable Conv3d core with batch
norm, ELU and its temporal-smoothness regulariser), `MultiGaussianMaskReadout` (its
Gaussian-mask readout, bias initialised from the training mean activity as openretina's data
pipeline does) and `PoissonLoss3d`; the loop reproduces what `BaseCoreReadout` does in
lightning: loss + core regulariser + readout regulariser, AdamW at the configured rate,
ReduceLROnPlateau on the validation correlation (factor 0.3, patience 5, abs threshold
5e-4, floor lr·0.3³), best weights by validation correlation. Nothing of openretina is
copied; it is imported (install it with `scripts/install-peer`).

Data: exactly npe's chunks (`encoder.batching`), so both see the same frames in the same
contrast units. Training is capped by epochs (not wall clock), so a result does not depend
on the load of the machine; CPU and wall time are both measured by the caller.

`OpenRetinaAdapter` exposes `window_frames` and `forward_chunk`, the two things
`encoder.evaluate.evaluate` needs, so the peer is scored by exactly npe's evaluation.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from hoefling import HoeflingDefaults  # sibling module: run as benchmarks/accuracy/peer.py
from numpy.typing import NDArray
from torch import Tensor, nn

from encoder.batching import batches, predict_frames, segments
from encoder.checkpoint import CellsMeta, CheckpointMeta, LoadedCheckpoint
from encoder.evaluate import pearson
from encoder.recording import Recording
from encoder.timebase import frames_from_ms

SESSION = "session"


class OpenRetinaAdapter(nn.Module):
    """openretina core + readout behind npe's chunk interface.

    forward_chunk(x [B, L, H, W] contrast) → [B, L − T + 1, n_cells] expected counts, entry j
    predicting frame j + T − 1, like every npe model (T = `window_frames`).
    """

    name = "openretina"

    def __init__(
        self,
        hp: HoeflingDefaults,
        n_cells: int,
        frame_shape: tuple[int, int],
        frame_rate_hz: float,
        mean_counts: NDArray[np.floating] | None = None,
    ) -> None:
        super().__init__()
        from openretina.modules.core.base_core import SimpleCoreWrapper
        from openretina.modules.readout.multi_readout import MultiGaussianMaskReadout

        self.hp = hp
        self.frame_rate_hz = float(frame_rate_hz)
        self.temporal_kernels = hp.temporal_kernel_frames(frame_rate_hz)
        self.window_frames = hp.window_frames(frame_rate_hz)
        spatial2 = hp.spatial_kernel_sizes[1] // 2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # openretina warns about cut frames / no padding
            self.core = SimpleCoreWrapper(
                channels=(1, *hp.hidden_channels),
                temporal_kernel_sizes=self.temporal_kernels,
                spatial_kernel_sizes=hp.spatial_kernel_sizes,
                gamma_input=hp.core_gamma_input,
                gamma_temporal=hp.core_gamma_temporal,
                gamma_in_sparse=hp.core_gamma_in_sparse,
                gamma_hidden=hp.core_gamma_hidden,
                cut_first_n_frames=hp.cut_first_n_frames_in_core,
                input_padding=0,  # base_core_readout.yaml: core_input_padding 0
                hidden_padding=(0, spatial2, spatial2),  # yaml: [0, 2, 2] for the 5 px layer
            )
            probe = torch.zeros(1, 1, self.window_frames, *frame_shape)
            with torch.no_grad():
                core_shape = tuple(self.core(probe).shape[1:])
            mean = (
                None
                if mean_counts is None
                else {SESSION: torch.as_tensor(np.asarray(mean_counts), dtype=torch.float32)}
            )
            self.readout = MultiGaussianMaskReadout(
                core_shape,
                {SESSION: n_cells},
                hp.readout_scale,
                hp.readout_bias,
                hp.readout_gaussian_mean_scale,
                hp.readout_gaussian_var_scale,
                hp.readout_positive,
                hp.readout_gamma,
                hp.readout_gamma_masks,
                False,
                mean_activity_dict=mean,
            )

    def forward_chunk(self, x: Tensor) -> Tensor:
        out: Tensor = self.readout(self.core(x.unsqueeze(1)), data_key=SESSION)
        return out

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, T, H, W] → [B, n_cells] for the newest frame."""
        return self.forward_chunk(x[:, -self.window_frames :])[:, -1]

    def regularizer(self) -> Tensor:
        core_reg = self.core.regularizer()
        readout_reg = self.readout.regularizer(SESSION)
        return torch.as_tensor(core_reg) + readout_reg

    def n_parameters(self) -> int:
        return sum(int(p.numel()) for p in self.parameters())


@dataclass(frozen=True)
class PeerTrainConfig:
    """How the peer is trained; the data settings equal npe's `TrainConfig` defaults."""

    max_epochs: int = 20
    epoch_ms: float | None = 81920.0
    chunk_ms: float = 640.0
    batch_size: int = 8
    patience: int = 10  # early stopping on validation correlation (epochs without gain)
    seed: int = 0
    threads: int = 2


@dataclass(frozen=True)
class PeerTrainResult:
    model: OpenRetinaAdapter
    epochs: int
    best_epoch: int
    best_val_pcc: float
    stopped: str


def _mean_counts(rec: Recording) -> NDArray[np.float64]:
    ranges = rec.splits["train"].reshape(-1, 2).tolist()
    total = sum(rec.responses[a:b].astype(np.float64).sum(0) for a, b in ranges)
    n = sum(b - a for a, b in ranges)
    return np.asarray(total, np.float64) / max(1, n)


def _val_pcc(model: OpenRetinaAdapter, rec: Recording, chunk_frames: int) -> float:
    model.eval()
    frames, pred = predict_frames(
        model,
        rec.stimulus,
        rec.splits["val"],
        model.window_frames,
        out_frames=max(chunk_frames, 128),
    )
    r = pearson(pred, rec.responses[frames].astype(np.float64))
    return float(np.nanmean(r)) if np.isfinite(r).any() else float("nan")


def train_openretina(
    rec: Recording, hp: HoeflingDefaults, cfg: PeerTrainConfig, log: Any = print
) -> PeerTrainResult:
    """Train the peer on `rec`'s train split; best weights by validation correlation."""
    from openretina.modules.losses import PoissonLoss3d

    torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = OpenRetinaAdapter(
        hp, rec.n_cells, rec.frame_shape, rec.frame_rate_hz, mean_counts=_mean_counts(rec)
    )
    window = model.window_frames
    chunk = frames_from_ms(cfg.chunk_ms, rec.frame_rate_hz)
    segs = [
        s for s in segments(rec.splits["train"], window, chunk) if s.out_stop - s.out_start == chunk
    ]
    if not segs:
        raise ValueError(f"train split has no chunk of {window} + {chunk} frames")
    per_epoch = (
        len(segs)
        if cfg.epoch_ms is None
        else max(1, math.ceil(frames_from_ms(cfg.epoch_ms, rec.frame_rate_hz) / chunk))
    )
    loss_fn = PoissonLoss3d()
    optimizer = torch.optim.AdamW(model.parameters(), lr=hp.learning_rate)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode="max",
        factor=0.3,
        patience=5,
        threshold=0.0005,
        threshold_mode="abs",
        min_lr=hp.learning_rate * 0.3**3,
    )
    cells = np.arange(rec.n_cells, dtype=np.int64)
    best, best_epoch, best_state, bad = -math.inf, 0, None, 0
    stopped, epoch = "max-epochs", 0
    for epoch in range(1, cfg.max_epochs + 1):
        t0 = time.monotonic()
        model.train()
        order = rng.permutation(len(segs))[:per_epoch]
        losses = []
        for x, y in batches(
            rec.stimulus, rec.responses, [segs[i] for i in order], window, cfg.batch_size, cells
        ):
            optimizer.zero_grad(set_to_none=True)
            pred = model.forward_chunk(x)
            loss = loss_fn(pred, y)
            (loss + model.regularizer()).backward()
            optimizer.step()
            losses.append(float(loss.detach()) / y.numel())
        val = _val_pcc(model, rec, chunk)
        scheduler.step(val)
        log(
            f"  openretina epoch {epoch}: train loss/bin {np.mean(losses):.4f}, val PCC {val:.3f}, "
            f"lr {optimizer.param_groups[0]['lr']:.2g}, {time.monotonic() - t0:.0f} s"
        )
        if val > best + 1e-6:
            best, best_epoch, bad = val, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= cfg.patience:
                stopped = "early-stopping"
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return PeerTrainResult(model, epoch, best_epoch, best, stopped)


def as_checkpoint(model: OpenRetinaAdapter, rec: Recording) -> LoadedCheckpoint:
    """Wrap the trained peer so that `encoder.evaluate.evaluate` scores it like npe's models."""
    meta = CheckpointMeta(
        model_name="openretina",
        model_config_dict={"temporal_kernels_frames": list(model.temporal_kernels)},
        loss="poisson",
        frame_rate_hz=rec.frame_rate_hz,
        window_frames=model.window_frames,
        frame_shape=rec.frame_shape,
        pixel_size_deg=rec.pixel_size_deg,
        stimulus_kind=rec.stimulus_kind,
        cells=CellsMeta(
            ids=tuple(rec.cells.ids),
            types=tuple(rec.cells.types),
            center_deg=tuple((None, None) for _ in rec.cells.ids),
        ),
    )
    from pathlib import Path

    return LoadedCheckpoint(model=model, meta=meta, run_dir=Path("."))  # type: ignore[arg-type]
