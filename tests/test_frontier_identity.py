"""The frontier trains the context draft only when a chosen setting needs it, runs only the
settings asked for (`frontier.only`), and does not reuse points computed on another store."""

from __future__ import annotations

import csv

import pytest
from conftest import CONF_DIR, write_synthetic_store
from helpers_ckpt import write_tiny_checkpoints
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from rsdvla.evaluation import frontier

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_frontier_runs_only_the_chosen_settings_and_checks_the_store(tmp_path, monkeypatch):
    store = write_synthetic_store(tmp_path / "store.h5")
    write_tiny_checkpoints(tmp_path / "artifacts", hidden_dim=32)

    def no_training(*args, **kwargs):
        raise AssertionError("the context draft was trained though no chosen setting uses it")

    monkeypatch.setattr(frontier.subprocess, "run", no_training)
    overrides = [
        "experiment=frontier",
        f"frontier.work_dir={tmp_path / 'frontier'}",
        f"frontier.artifacts={tmp_path / 'artifacts'}",
        f"frontier.store={store}",
        f"frontier.context_draft={tmp_path / 'artifacts' / 'missing_context_draft.ckpt'}",
        "frontier.docs=null",
        "frontier.libero.enabled=false",
        "frontier.only=[main_only,rsd_exact]",
    ]
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose(config_name="evaluate", overrides=overrides)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
            cfg.frontier.offline = ["env.batch_size=1", "env.max_batches=3", "env.warmup=0"]
        result = frontier.run_frontier(cfg)
        rows = [r["name"] for r in csv.DictReader(open(result["csv"]))]
        assert rows == ["main_only", "rsd_exact"]
        # the store file changed under the same path: its finished points are stale
        write_synthetic_store(tmp_path / "other.h5", seed=3).replace(store)
        with pytest.raises(
            frontier.StaleResultError,
            match=r"main_only/offline/summary\.json: computed with other store",
        ):
            frontier.run_frontier(cfg)
        with open_dict(cfg):
            cfg.frontier.only = ["main_only", "nonesuch"]
        with pytest.raises(
            ValueError, match=r"frontier\.only: 'nonesuch' is not in frontier\.settings"
        ):
            frontier.run_frontier(cfg)


def test_frontier_settings_can_be_replaced_as_documented(tmp_path):
    """``~frontier.settings '+frontier.settings={...}'`` replaces the defaults (a plain
    ``frontier.settings={...}`` would merge into them)."""
    from conftest import compose_config

    from rsdvla.evaluation.frontier import chosen_settings

    replace = [
        "experiment=frontier",
        "~frontier.settings",
        "+frontier.settings={main_only:['decoder=main_only'],m3:['decoder=main_only','decoder.depth=3']}",
    ]
    cfg = compose_config("evaluate", replace, tmp_path)
    assert chosen_settings(cfg) == ["main_only", "m3"]
    assert list(cfg.frontier.settings.m3) == ["decoder=main_only", "decoder.depth=3"]
    merged = compose_config(
        "evaluate",
        ["experiment=frontier", "frontier.settings={main_only:['decoder=main_only']}"],
        tmp_path,
    )
    assert len(chosen_settings(merged)) > 2  # merging keeps the defaults
