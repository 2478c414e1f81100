"""Every config composes; every experiment composes with its root config and builds what needs no files."""

from pathlib import Path

import pytest
from conftest import CONF_DIR, compose_config
from hydra.utils import instantiate

EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes(tmp_path, experiment):
    root = "evaluate" if experiment.startswith("eval_") else "train"
    cfg = compose_config(root, [f"experiment={experiment}"], tmp_path)
    assert cfg.data.path and cfg.data.name
    if root == "train":
        for model in ("tokenizer", "main", "draft"):
            cfg = compose_config(
                root,
                [f"experiment={experiment}", f"model={model}", "trainer.accelerator=cpu"],
                tmp_path,
            )
            module = instantiate(cfg.model.module, _convert_="all")
            assert module.hparams["kind"] == model
            assert instantiate(cfg.trainer).max_epochs == cfg.trainer.max_epochs
    else:
        assert cfg.env.kind == "libero" and cfg.backbone._target_


@pytest.mark.parametrize(
    "root,overrides",
    [
        ("train", ["model=main_cpu"]),
        ("train", ["model=draft_cpu", "trainer=ddp"]),
        ("evaluate", ["decoder=main_only", "env=libero"]),
        ("evaluate", ["decoder=rsd", "decoder/acceptance=sampling"]),
        ("evaluate", ["hydra/launcher=slurm"]),
        ("extract", ["backbone=tiny"]),
        ("collect", []),
        ("quickstart", []),
    ],
)
def test_root_configs_compose(tmp_path, root, overrides):
    cfg = compose_config(root, overrides, tmp_path)
    assert cfg is not None
