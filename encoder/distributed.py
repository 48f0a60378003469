"""DistributedDataParallel set-up for `npe train` under `torchrun` (gloo on CPU, nccl on GPU).

`torchrun --standalone --nproc-per-node N $(which npe) train --data ... --model ... --out ...`
sets RANK/WORLD_SIZE/MASTER_ADDR; each rank trains on its share of the chunks and DDP
averages gradients, so all ranks hold identical weights after every step. Only rank 0 writes
files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    backend: str | None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> DistInfo:
    """Join the process group torchrun describes in the environment; single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(rank=0, world_size=1, backend=None)
    import torch.distributed as dist

    backend = "nccl" if device.startswith("cuda") else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), backend=backend)


def shutdown_distributed(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
