"""Our ``prismatic`` modules (``backbones/oft_shim``) against the published ones in ``../shared/oft/shim``.

OpenVLA-OFT's ``modeling_prismatic.py`` imports two action-mask functions and a handful of
constants from ``prismatic``; ours are written from their contract. Both packages are imported
by path (each under the name ``prismatic``, one after the other) and fed the same labels.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from rsdvla.backbones.oft_loading import SHIM_DIR

ROOT = Path(__file__).resolve().parents[1]
SHARED_SHIM = Path(os.environ.get("RSDVLA_SHARED_OFT", ROOT.parent / "shared" / "oft")) / "shim"
CONSTANTS = (
    "ACTION_DIM",
    "ACTION_PROPRIO_NORMALIZATION_TYPE",
    "ACTION_TOKEN_BEGIN_IDX",
    "IGNORE_INDEX",
    "NUM_ACTIONS_CHUNK",
    "PROPRIO_DIM",
    "STOP_INDEX",
)


def _import_prismatic(root: Path) -> tuple[ModuleType, ModuleType]:
    """(train_utils, constants) of the ``prismatic`` package under ``root``; sys.path/modules restored."""
    saved = {k: v for k, v in sys.modules.items() if k == "prismatic" or k.startswith("prismatic.")}
    for k in saved:
        del sys.modules[k]
    argv, path = sys.argv, list(sys.path)
    sys.argv = ["python"]  # the published constants pick a robot platform from the command line
    sys.path.insert(0, str(root))
    try:
        utils = importlib.import_module("prismatic.training.train_utils")
        constants = importlib.import_module("prismatic.vla.constants")
        return utils, constants
    finally:
        sys.argv, sys.path[:] = argv, path
        for k in [k for k in sys.modules if k == "prismatic" or k.startswith("prismatic.")]:
            del sys.modules[k]
        sys.modules.update(saved)


@pytest.fixture(scope="module")
def both():
    if not (SHARED_SHIM / "prismatic").is_dir():
        reason = f"the published prismatic modules are not at {SHARED_SHIM}"
        if os.environ.get("RSDVLA_REQUIRE_OPENVLA") == "1":
            pytest.fail(f"RSDVLA_REQUIRE_OPENVLA=1 but: {reason}")
        pytest.skip(reason)
    return _import_prismatic(SHIM_DIR), _import_prismatic(SHARED_SHIM)


def test_ours_is_not_the_published_package(both):
    (ours, _), (theirs, _) = both
    assert Path(ours.__file__).resolve().is_relative_to(SHIM_DIR.resolve())
    assert Path(theirs.__file__).resolve().is_relative_to(SHARED_SHIM.resolve())


def test_constants_equal_the_published_libero_ones(both):
    (_, ours), (_, theirs) = both
    for name in CONSTANTS:
        assert getattr(ours, name) == getattr(theirs, name), name
    assert {m.value for m in ours.NormalizationType} == {m.value for m in theirs.NormalizationType}
    assert ours.ACTION_PROPRIO_NORMALIZATION_TYPE.value == "bounds_q99"


def _label_rows(c) -> torch.Tensor:
    """Label rows exercising the edge cases, all of one length (right-padded with IGNORE)."""
    ign, stop, first = c.IGNORE_INDEX, c.STOP_INDEX, c.ACTION_TOKEN_BEGIN_IDX
    act = [first + 1 + (i % 200) for i in range(c.ACTION_DIM * c.NUM_ACTIONS_CHUNK)]
    rows = [
        [ign] * 5 + act + [stop],  # predict_action's layout
        [ign] * 5 + act[:3] + [stop],  # fewer than ACTION_DIM supervised tokens
        [ign] * 5 + act[: c.ACTION_DIM] + [stop],  # exactly one action
        [ign] * 5 + act[: c.ACTION_DIM + 1] + [stop],  # one token past the first action
        act + [stop],  # no prompt at all
        [ign] * 9,  # nothing supervised
        [ign] * 3 + [stop] + act,  # a stop token first: it counts, but is never marked
        [ign] * 2 + [first, first + 1, 5, ign, first + 2] + act,  # the boundary id, text ids, gaps
        [ign] * 4 + [first + 1] * 3 + [ign] * 2 + act[:10],  # IGNORE inside the supervised part
    ]
    width = max(map(len, rows))
    return torch.tensor([r + [ign] * (width - len(r)) for r in rows])


@pytest.mark.parametrize("name", ["get_current_action_mask", "get_next_actions_mask"])
def test_action_masks_equal_the_published_ones(both, name):
    (ours, _), (theirs, constants) = both
    labels = _label_rows(constants)
    torch.manual_seed(0)
    noise = torch.randint(-2, 3, labels.shape) * (labels != constants.IGNORE_INDEX)
    for batch in (labels, labels + noise, labels[:1], labels[:, :0]):
        got, want = getattr(ours, name)(batch), getattr(theirs, name)(batch)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert torch.equal(got, want), (name, batch)
    # the masks mark something: the test cannot pass on two all-False answers
    assert getattr(ours, name)(labels).any()
