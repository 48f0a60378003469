"""DistributedDataParallel: two CPU processes under torchrun (gloo) end with identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from encoder.train import TrainConfig, train

    data, out, cfg = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    result = train(data, out + "/run", TrainConfig(model="streaming", model_config=cfg, lr=1e-2,
                   batch_size=2, chunk_ms=800.0, max_epochs=2, threads=1, seed=3))
    rank = os.environ["RANK"]
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump({"world": os.environ["WORLD_SIZE"], "sha": result.weights_sha256,
                   "epochs": len(result.epochs)}, f)
    """
)


def _load_helper():  # type: ignore[no-untyped-def]
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "npe_models_testdata_ddp", Path(__file__).with_name("test_models_data.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_two_cpu_ranks_agree_on_weights(tmp_path: Path) -> None:
    helper = _load_helper()
    data = helper.write_tiny(tmp_path / "tiny.h5", n_frames=1200)
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            str(script),
            str(data),
            str(tmp_path),
            json.dumps(helper.TINY_STREAMING),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == "2" and r["epochs"] == 2 for r in ranks)
    assert ranks[0]["sha"] == ranks[1]["sha"]  # gradients were averaged: weights identical
    # only rank 0 wrote the run directory, and it holds a loadable checkpoint
    from encoder.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "run").meta.model_name == "streaming"
