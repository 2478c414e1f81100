"""Every config composes to what its comments promise; the used-by commands compose and instantiate."""

from pathlib import Path

import pytest
from conftest import CONF_DIR, compose_config
from helpers_ckpt import write_tiny_checkpoints
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import OmegaConf

EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))


QUICKSTART_EXPERIMENTS = {"oft_smoke"}  # experiments of quickstart.py (tests/test_quickstart.py)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes(tmp_path, experiment):
    if experiment in QUICKSTART_EXPERIMENTS:
        cfg = compose_config(
            "quickstart", [f"experiment={experiment}", "backbone.checkpoint=/c"], tmp_path
        )
        assert cfg.store and cfg.demos and cfg.train
        return
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


def test_sample_cpu_with_the_cpu_models_its_comment_names(tmp_path):
    """``experiment=sample_cpu model=main_cpu|draft_cpu``: the sample store, models smaller than the GPU size."""
    for model, size in (("main", "main"), ("draft", "draft")):
        gpu = compose_config("train", ["experiment=sample_cpu", f"model={model}"], tmp_path)
        cpu = compose_config("train", ["experiment=sample_cpu", f"model={model}_cpu"], tmp_path)
        assert cpu.data.name == "sample" and cpu.data.hidden_dim == 512
        assert cpu.model.name == model
        assert cpu.model.module[size].d_model < gpu.model.module[size].d_model


@pytest.mark.parametrize(
    "root,overrides,expect",
    [
        ("train", ["model=main_cpu"], {"model.name": "main", "model.module.main.d_model": 128}),
        (
            "train",
            ["model=draft_cpu", "trainer=ddp"],
            {"trainer.strategy": "ddp", "model.name": "draft"},
        ),
        ("evaluate", ["decoder=main_only"], {"env.kind": "libero", "trials": 50}),
        (
            "evaluate",
            ["env=offline", "decoder=rsd", "decoder/acceptance=sampling"],
            {
                "env.kind": "offline",
                "decoder.acceptance._target_": "rsdvla.decoding.SamplingAcceptance",
            },
        ),
        ("extract", ["backbone=tiny"], {"backbone._target_": "rsdvla.backbones.TinyVLABackbone"}),
        ("collect", [], {"suite": "libero_object", "episodes_per_task": 5}),
        ("quickstart", [], {"data_name": "sample", "libero.trials": 4}),
    ],
)
def test_root_configs_compose(tmp_path, root, overrides, expect):
    cfg = compose_config(root, overrides, tmp_path)
    for key, value in expect.items():
        assert OmegaConf.select(cfg, key) == value, key


def test_slurm_launcher_composes_when_installed(tmp_path):
    pytest.importorskip(
        "hydra_plugins.hydra_submitit_launcher",
        reason="hydra/launcher=slurm needs hydra-submitit-launcher (the dev or slurm extra)",
    )
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose("evaluate", ["hydra/launcher=slurm"], return_hydra_config=True)
    assert "submitit" in cfg.hydra.launcher._target_.lower()


def test_train_draft_on_libero_hidden_composes_and_instantiates(tmp_path):
    """``python train.py model=draft data=libero_hidden``: the draft builds; the store path is required."""
    cfg = compose_config("train", ["model=draft", "data=libero_hidden"], tmp_path)
    assert OmegaConf.is_missing(cfg.data, "path") and cfg.data.hidden_dim == 4096
    module = instantiate(cfg.model.module, _convert_="all")
    assert module.hparams["kind"] == "draft" and module.model.config.hidden_dim == 4096
    assert cfg.export.endswith("outputs/artifacts/libero_hidden/draft.ckpt")

    import rsdvla.train

    with pytest.raises(ValueError, match=r"data\.path is not set.*data\.path=<store\.h5>"):
        rsdvla.train.run(cfg)


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """What ``python evaluate.py -m <overrides>`` runs: one override list per job (Hydra's basic sweeper)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    parsed = OverridesParser.create().parse_overrides(overrides)
    (batch,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return batch


def test_evaluate_multirun_threshold_sweep_expands_and_instantiates(tmp_path):
    """``python evaluate.py -m env=offline decoder=rsd decoder/acceptance=agreement decoder.acceptance.threshold=...``."""
    from rsdvla.evaluation.stack import load_stack

    jobs = sweep_jobs(
        [
            "env=offline",
            "decoder=rsd",
            "decoder/acceptance=agreement",
            "decoder.acceptance.threshold=0.5,0.7,0.9",
        ]
    )
    assert len(jobs) == 3
    ckpts = write_tiny_checkpoints(tmp_path / "ck", 16)
    thresholds = []
    for job in jobs:
        paths = [f"ckpt.{kind}={path}" for kind, path in ckpts.items()]
        cfg = compose_config("evaluate", [*job, *paths, "device=cpu"], tmp_path)
        assert cfg.env.kind == "offline"
        stack = load_stack(cfg)
        thresholds.append(stack.decoder.acceptance.threshold)
    assert thresholds == [0.5, 0.7, 0.9]


def test_collected_demos_render_at_the_rollouts_size(tmp_path):
    """Demos (collect.py) and rollouts (evaluate.py) must render alike: an image backbone's
    training frames go through the same policy_image pipeline as its deployment frames."""
    from rsdvla.envs.libero import RENDER_SIZE

    collect = compose_config("collect", [], tmp_path / "c")
    evaluate = compose_config("evaluate", [], tmp_path / "e")
    assert collect.camera_size == evaluate.env.camera_size == RENDER_SIZE
