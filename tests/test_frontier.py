"""The frontier experiment: selection of frontier points, the offline pass over every setting on
tiny checkpoints, its CSV / PNG / markdown, and a rerun that skips finished points."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import CONF_DIR
from helpers_ckpt import write_tiny_checkpoints
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from rsdvla.evaluation import frontier

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_frontier_flags_by_hand():
    points = [
        {"speedup": 1.0, "error": 0.010},  # reference: nothing faster is better
        {"speedup": 2.0, "error": 0.011},  # faster, slightly worse: on
        {"speedup": 1.5, "error": 0.012},  # dominated by the 2.0x point (faster and better)
        {"speedup": 3.0, "error": 0.100},  # fastest: on
        {"speedup": 0.8, "error": 0.020},  # slower and worse than the reference
        {"speedup": float("nan"), "error": 0.0},  # unmeasured: never on
    ]
    assert frontier.frontier_flags(points) == [True, True, False, True, False, False]
    # near (25%): 0.012 is within 25% of the 2.0x point's 0.011
    assert frontier.frontier_flags(points, near=0.25) == [True, True, True, True, False, False]


def test_libero_points_always_include_the_reference_then_fastest_near_frontier():
    rows = [
        {"name": "main_only", "offline_speedup": 1.0, "action_mse": 0.01},
        {"name": "m3", "offline_speedup": 2.5, "action_mse": 0.011},
        {"name": "rsd", "offline_speedup": 1.2, "action_mse": 0.0105},
        {"name": "m1", "offline_speedup": 5.0, "action_mse": 0.5},
    ]
    cfg = {"always": ["main_only"], "near": 0.0, "max_points": 3, "exclude": []}
    from omegaconf import OmegaConf

    # all four are on the frontier; after `always`, the most accurate come first
    chosen = frontier.choose_libero_points(rows, OmegaConf.create(cfg))
    assert chosen == ["main_only", "rsd", "m3"]
    cfg["exclude"] = ["rsd"]
    assert frontier.choose_libero_points(rows, OmegaConf.create(cfg)) == ["main_only", "m3", "m1"]
    rows.append(
        {"name": "slow", "offline_speedup": 0.9, "action_mse": 0.0104}
    )  # dominated, but near
    cfg.update(exclude=[], max_points=6)
    assert frontier.choose_libero_points(rows, OmegaConf.create(cfg))[-1] == "m1"
    cfg.update(near=0.1)
    assert frontier.choose_libero_points(rows, OmegaConf.create(cfg))[-1] == "slow"


def test_offline_frontier_runs_every_setting_and_a_rerun_skips_them(
    tmp_path, synthetic_store, monkeypatch
):
    ckpts = write_tiny_checkpoints(tmp_path / "artifacts", hidden_dim=32)
    docs = tmp_path / "results.md"
    docs.write_text("# Results\n\n## Other\n\nkept\n")
    overrides = [
        "experiment=frontier",
        f"frontier.work_dir={tmp_path / 'frontier'}",
        f"frontier.artifacts={tmp_path / 'artifacts'}",
        f"frontier.store={synthetic_store}",
        f"frontier.context_draft={ckpts['draft']}",  # exists: no training in this test
        f"frontier.docs={docs}",
        "frontier.libero.enabled=false",
    ]
    settings = {
        "main_only": ["decoder=main_only"],
        "main_only_m2": ["decoder=main_only", "decoder.depth=2"],
        "rsd_exact": ["decoder=rsd"],
        "rsd_corr0": [
            "decoder=rsd",
            "decoder/acceptance=agreement_corrected",
            "decoder.acceptance.threshold=0.0",
        ],
        "draft_only": ["decoder=draft_only"],
    }
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose(config_name="evaluate", overrides=overrides)
        with open_dict(cfg):
            cfg.frontier.settings = settings
            cfg.frontier.stacks = {}  # the tokenizer axis has its own test below
            cfg.frontier.offline = ["env.batch_size=1", "env.max_batches=6", "env.warmup=1"]
            cfg.paths.output_dir = str(tmp_path / "run")
        result = frontier.run_frontier(cfg)
        rows = {r["name"]: r for r in csv.DictReader(open(result["csv"]))}
        assert set(rows) == set(settings)
        assert float(rows["main_only"]["action_mse_vs_main_only"]) == 0.0
        assert float(rows["rsd_exact"]["action_mse_vs_main_only"]) == 0.0  # exact = main-only
        assert float(rows["main_only_m2"]["mean_decoded_layers"]) == 2.0
        assert float(rows["draft_only"]["mean_main_steps"]) == 0.0
        summary = json.loads((tmp_path / "frontier/main_only_m2/offline/summary.json").read_text())
        assert summary["overrides"] == settings["main_only_m2"]
        text = docs.read_text()
        assert "## Frontier" in text and "| main_only_m2 |" in text and "kept" in text
        assert "](frontier.png)" in text and (tmp_path / "frontier.png").exists()
        assert (tmp_path / "frontier.csv").read_text() == (
            tmp_path / "frontier/frontier.csv"
        ).read_text()
        # a rerun of the same command evaluates nothing again
        import rsdvla.evaluation.offline as offline

        def refuse(*args, **kwargs):
            raise AssertionError("a finished point was evaluated again")

        monkeypatch.setattr(offline, "run_offline", refuse)
        again = frontier.run_frontier(cfg)
        assert [r["name"] for r in again["rows"]] == list(settings)
        assert (tmp_path / "frontier/frontier.png").stat().st_size > 10_000
        monkeypatch.undo()
        # other checkpoints under the same paths: the finished points are stale
        write_tiny_checkpoints(tmp_path / "artifacts", hidden_dim=32, seed=1)
        with pytest.raises(
            frontier.StaleResultError,
            match=r"main_only/offline/summary\.json: "
            r"computed with other checkpoints than this run's; rerun with "
            r"frontier\.restart=true",
        ):
            frontier.run_frontier(cfg)
        with open_dict(cfg):
            cfg.frontier.restart = True
        frontier.run_frontier(cfg)
    assert len(list((tmp_path / "frontier/main_only").glob("offline.replaced-*"))) == 1
    fresh = json.loads((tmp_path / "frontier/main_only/offline/summary.json").read_text())
    assert fresh["identity"]["checkpoints"]["main"] != summary["identity"]["checkpoints"]["main"]


def test_libero_point_summary_counts_only_the_planned_episodes(tmp_path):
    """Episodes of a larger earlier plan in the same files stay on disk but out of the numbers."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {
            "frontier": {
                "libero": {
                    "suite": "libero_object",
                    "task_ids": [0, 1],
                    "trials": 2,
                    "first_trial": 25,
                }
            }
        }
    )
    run_dir = tmp_path / "libero"
    run_dir.mkdir()

    def record(task, trial, success):
        return json.dumps(
            {
                "suite": "libero_object",
                "task_id": task,
                "trial": trial,
                "success": success,
                "steps": 9,
                "instruction": "i",
            }
        )

    shard0 = [
        record(0, 25, True),
        record(0, 26, False),
        record(0, 27, True),
    ]  # trial 27: not planned
    shard1 = [record(1, 25, True)]
    (run_dir / "episodes.shard0of2.jsonl").write_text("\n".join(shard0) + "\n")
    (run_dir / "episodes.shard1of2.jsonl").write_text("\n".join(shard1) + "\n")
    # the run files the runner writes beside its episode files: the last run planned 3 trials
    run = {
        "identity": {"settings": {"suite": "libero_object"}, "decoder": {"depth": None}},
        "plan": {"suite": "libero_object", "task_ids": [0, 1], "trials": 3, "first_trial": 25},
    }
    for shard in (0, 1):
        plan = {**run["plan"], "num_shards": 2, "shard_id": shard}
        (run_dir / f"run.shard{shard}of2.json").write_text(json.dumps({**run, "plan": plan}))
    summary = frontier.merge_planned(cfg, run_dir)
    assert summary["episodes"] == 3 and summary["successes"] == 2 and summary["complete"] is False
    (run_dir / "episodes.shard1of2.jsonl").write_text(
        "\n".join([*shard1, record(1, 26, True)]) + "\n"
    )
    summary = frontier.merge_planned(cfg, run_dir)
    assert summary["episodes"] == 4 and summary["successes"] == 3 and summary["complete"] is True
    assert json.loads((run_dir / "summary.json").read_text())["episodes"] == 4
    # a shard run with other settings in the same folder is refused, as the merge command does
    other = {**run, "identity": {**run["identity"], "decoder": {"depth": 3}}}
    other["plan"] = {**run["plan"], "num_shards": 2, "shard_id": 1}
    (run_dir / "run.shard1of2.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match=r"were run with different settings .*depth"):
        frontier.merge_planned(cfg, run_dir)


@pytest.mark.integration
def test_frontier_runs_a_residual_vq_stack_beside_rfsq(tmp_path, synthetic_store, monkeypatch):
    """``frontier.stacks``: a chunk residual VQ stack (G = 2) evaluated at the stack settings
    against its own main-only, with its tokenizer row (shape, reconstruction, agreement)."""
    from conftest import train_on_store

    ckpts = write_tiny_checkpoints(tmp_path / "artifacts", hidden_dim=32)
    folder = tmp_path / "artifacts" / "rvq_g2"
    tok = folder / "tokenizer.ckpt"
    rvq = ["model.module.tokenizer.groups=2", "model.module.tokenizer.codebook_size=16"]
    rvq += ["model.module.tokenizer.num_layers=4", "model.module.tokenizer.hidden=32"]
    train_on_store(tmp_path, synthetic_store, *rvq, f"export={tok}", model="tokenizer_rvq")
    train_on_store(
        tmp_path,
        synthetic_store,
        f"tokenizer.ckpt={tok}",
        f"export={folder / 'main.ckpt'}",
        model="main_cpu",
        run="main",
    )
    train_on_store(
        tmp_path,
        synthetic_store,
        f"tokenizer.ckpt={tok}",
        f"export={folder / 'draft.ckpt'}",
        f"model.module.teacher_ckpt={folder / 'main.ckpt'}",
        "model.module.draft.num_draft_layers=3",
        model="draft_cpu",
        run="draft",
    )
    docs = tmp_path / "results.md"
    overrides = [
        "experiment=frontier",
        f"frontier.work_dir={tmp_path / 'frontier'}",
        f"frontier.artifacts={tmp_path / 'artifacts'}",
        f"frontier.store={synthetic_store}",
        f"frontier.context_draft={ckpts['draft']}",
        f"frontier.docs={docs}",
        "frontier.libero.enabled=false",
    ]
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose(config_name="evaluate", overrides=overrides)
        with open_dict(cfg):
            cfg.frontier.settings = {
                "main_only": ["decoder=main_only"],
                "rsd_exact": ["decoder=rsd"],
            }
            cfg.frontier.stacks = {"rvq_g2": {"tokenizer": [], "main": [], "draft": []}}
            cfg.frontier.stack_settings = {
                "main_only": ["decoder=main_only"],
                "rsd_exact_k2_tree2": ["decoder=rsd", "decoder.k=2", "decoder.tree_width=2"],
            }
            cfg.frontier.offline = ["env.batch_size=1", "env.max_batches=6", "env.warmup=1"]
            cfg.paths.output_dir = str(tmp_path / "run")
        # the stack's checkpoints exist: nothing is trained
        monkeypatch.setattr(frontier.subprocess, "run", lambda *a, **k: 1 / 0)
        result = frontier.run_frontier(cfg)
    rows = {r["name"]: r for r in csv.DictReader(open(result["csv"]))}
    assert list(rows) == ["main_only", "rsd_exact", "rvq_g2_main_only", "rvq_g2_rsd_exact_k2_tree2"]
    assert float(rows["rvq_g2_rsd_exact_k2_tree2"]["action_mse_vs_main_only"]) == 0.0
    summary = json.loads(
        (tmp_path / "frontier/rvq_g2_rsd_exact_k2_tree2/offline/summary.json").read_text()
    )
    assert f"ckpt.main={folder / 'main.ckpt'}" in summary["overrides"]
    quality = json.loads((tmp_path / "frontier/rvq_g2/quality.json").read_text())
    assert (quality["family"], quality["tokens_per_layer"], quality["vocab_size"]) == ("rvq", 2, 16)
    assert len(quality["recon_mse"]) == 4 and len(quality["draft_layer_agreement"]) == 3
    assert quality["draft_top2_layer_agreement"] >= quality["draft_layer_agreement"][0]
    rfsq = json.loads((tmp_path / "frontier/rfsq/quality.json").read_text())
    assert rfsq["family"] == "rfsq" and rfsq["tokens_per_layer"] > 2
    text = docs.read_text()
    assert "| rvq_g2 | rvq | 2 | 16 | 4 |" in text and "| rfsq | rfsq |" in text


def test_stack_training_commands_chain_tokenizer_main_and_draft(tmp_path, monkeypatch):
    """A missing stack is trained tokenizer -> main (on its codes) -> draft (distilled from it)."""
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose(
            config_name="evaluate",
            overrides=[
                "experiment=frontier",
                f"frontier.artifacts={tmp_path}",
                f"frontier.work_dir={tmp_path / 'w'}",
            ],
        )
    frontier.expand_stack_settings(cfg)
    calls = []

    def fake_run(cmd):
        calls.append(cmd)
        target = next(a for a in cmd if a.startswith("export=")).partition("=")[2]
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text("")
        return type("Done", (), {"returncode": 0})()

    from pathlib import Path

    monkeypatch.setattr(frontier.subprocess, "run", fake_run)
    frontier.train_stacks(cfg, ["main_only", "rvq_g4_rsd_exact_k3"])
    assert len(calls) == 3  # rvq_g4 only: no other stack is chosen
    tok, main, draft = calls
    folder = tmp_path / "rvq_g4"
    assert "model=tokenizer_rvq" in tok and "model.module.tokenizer.groups=4" in tok
    assert f"export={folder / 'tokenizer.ckpt'}" in tok
    assert f"tokenizer.ckpt={folder / 'tokenizer.ckpt'}" in main and "model=main_cpu" in main
    assert f"model.module.teacher_ckpt={folder / 'main.ckpt'}" in draft
    calls.clear()
    frontier.train_stacks(cfg, ["rvq_g4_main_only"])  # everything exists now
    assert calls == []
    # a stack setting colliding with a hand-written one is refused
    with open_dict(cfg):
        cfg.frontier.settings["rvq_g1_main_only"] = ["decoder=main_only"]
    with pytest.raises(
        ValueError, match=r"frontier\.settings\.rvq_g1_main_only is also a stack setting"
    ):
        frontier.expand_stack_settings(cfg)


def test_a_depth_setting_reads_against_main_only_and_its_own_depth_side_by_side():
    def entry(ratio, low, high, ref):
        return {"ratio": ratio, "ci95": [low, high], "reference": ref, "clock_name": "thread CPU"}

    offline = {
        "speed": {
            "main_only": entry(2.4, 2.3, 2.5, "main_only"),
            "main_only_m3": entry(0.96, 0.9, 1.02, "main_only_m3"),
        },
        "cost_per_chunk": {
            "decoder": {"passes": 3.0, "positions": 5.0, "gflops": 0.1, "weight_mb": 9.0}
        },
        "gpu_prediction": {"H100": {"speedup": {"main_only": 2.0, "main_only_m3": 0.8}}},
        "gpu_prediction_openvla_size": {
            "H100": {"speedup": {"main_only": 1.5, "main_only_m3": 0.7}},
            "A100": {"speedup": {}, "oft_step_speedup": {"main_only": 1.01}},
        },
    }
    row = frontier.row_for("rsd_ctx_corr0_m3", offline, None, False)
    assert row["predicted_gpu_speedup_openvla_size"] == 1.5
    assert row["predicted_gpu_speedup_openvla_size_vs_depth"] == 0.7
    assert row["predicted_oft_step_speedup_a100"] == 1.01
    assert row["offline_speedup"] == 2.4 and row["offline_speedup_vs_depth"] == 0.96
    assert row["offline_speedup_vs_depth_reference"] == "main_only_m3"
    assert row["predicted_gpu_speedup_vs_depth"] == 0.8 and row["passes_per_chunk"] == 3.0
    table = frontier.markdown([row])
    assert "2.40x [2.30, 2.50]" in table and "0.96x [0.90, 1.02] vs main_only_m3" in table
    assert "predicted H100 speedup (roofline, not measured)" in table
    assert "2.00x (0.80x vs its depth)" in table and "1.50x (0.70x vs its depth)" in table
    assert "predicted H100 speedup at OpenVLA size (roofline, not measured)" in table
    # accepted layers: offline, and in LIBERO beside it once the point ran there
    offline["mean_accepted_layers"] = 2.0
    libero = {"mean_accepted_layers": 1.25, "episodes": 4, "successes": 2, "success_rate": 0.5}
    libero["success_ci95"] = [0.2, 0.8]
    closed_loop = frontier.row_for("rsd_ctx_corr0_m3", offline, libero, False)
    assert "| 2.00 / 1.25 |" in frontier.markdown([closed_loop])
    assert "| 2.00 |" in frontier.markdown([frontier.row_for("x", offline, None, False)])
