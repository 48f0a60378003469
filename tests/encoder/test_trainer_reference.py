"""The trainer refactor changed no weight: same seeds → the digests main's old trainer made.

`tests/encoder/data/train_reference.json` was generated once with the unmodified trainer
(main at 2b3198d) by `tests/support/train_reference.py --write`; see that module.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.train_reference import REFERENCE_FILE, cases, run_case, write_data


@pytest.fixture(scope="module")
def reference_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_data(tmp_path_factory.mktemp("reference"))


@pytest.mark.parametrize("name", sorted(cases()))
def test_same_seed_gives_the_old_trainers_weights(
    name: str, reference_data: Path, tmp_path: Path
) -> None:
    expected = json.loads(REFERENCE_FILE.read_text())[name]
    got = run_case(name, reference_data, tmp_path / name)
    assert got["weights_sha256"] == expected["weights_sha256"]
    assert got["best_epoch"] == expected["best_epoch"]
    assert got["epochs"] == expected["epochs"]  # losses and PCC bit for bit (JSON floats)


def test_prefetching_changes_no_weight(reference_data: Path, tmp_path: Path) -> None:
    """Batches built in line (prefetch 0) and on the background thread give one result."""
    from encoder.train import TrainConfig, train

    kw = cases()["streaming"]
    a = train(reference_data, tmp_path / "a", TrainConfig(**{**kw, "prefetch": 0}))
    b = train(reference_data, tmp_path / "b", TrainConfig(**{**kw, "prefetch": 3}))
    assert a.weights_sha256 == b.weights_sha256
