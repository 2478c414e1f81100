"""Offline evaluation on a tiny store, the episode split and the sweep collector."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_decoding_models
from omegaconf import OmegaConf

from rsdvla.data import HiddenStateStore
from rsdvla.data.split import split_episodes
from rsdvla.decoding import AgreementAcceptance, MainOnlyDecoder, SpeculativeDecoder
from rsdvla.evaluation.offline import load_split_rows, run_offline
from rsdvla.evaluation.reports import sweep
from rsdvla.models import MainModel
from rsdvla.tokenizer import RFSQTokenizer

HIDDEN = 32  # conftest's synthetic store


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is fastest


def tiny_models(draft_k: int = 3):
    return tiny_decoding_models(HIDDEN, draft_k)


def offline_cfg(store: Path, out: Path, **env):
    return OmegaConf.create(
        {
            "data": {"path": str(store), "val_fraction": 0.25, "seed": 0},
            "env": {
                "kind": "offline",
                "split": "val",
                "batch_size": 8,
                "max_batches": 4,
                "warmup": 1,
                "shuffle": True,
                **env,
            },
            "paths": {"output_dir": str(out)},
        }
    )


def main_only_stack(main, tokenizer, store: Path, depth: int | None = None) -> SimpleNamespace:
    """A stack whose decoder is main-only (at ``depth``), with the store's normalizer."""
    return SimpleNamespace(
        main=main,
        tokenizer=tokenizer,
        normalizer=HiddenStateStore(store).normalizer,
        decoder=MainOnlyDecoder(main, tokenizer, depth=depth),
    )


# ------------------------------------------------------------------------------------ split


def test_split_by_episode_is_deterministic_disjoint_and_complete():
    episodes = np.repeat(np.arange(20), 5)
    train, val = split_episodes(episodes, 0.2, seed=3)
    assert len(val) == 4 and len(train) == 16
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(range(20))
    again = split_episodes(np.random.default_rng(0).permutation(episodes), 0.2, seed=3)
    assert np.array_equal(again[1], val)  # independent of row order
    assert not np.array_equal(split_episodes(episodes, 0.2, seed=4)[1], val)
    assert len(split_episodes(np.arange(3), 0.01, 0)[1]) == 1  # at least one held out
    with pytest.raises(ValueError, match="val_fraction"):
        split_episodes(episodes, 1.0, 0)


def test_load_split_rows_reads_only_val_episodes(synthetic_store):
    arrays = HiddenStateStore(synthetic_store).load()
    _, val = split_episodes(arrays["episode"], 0.25, 0)
    hidden, actions = load_split_rows(synthetic_store, "val", 0.25, 0, shuffle=True, limit=None)
    mask = np.isin(arrays["episode"], val)
    assert len(hidden) == mask.sum()
    # the same rows (as a set), with hidden and actions still paired
    expected = {tuple(np.round(r[:4], 2)) for r in arrays["hidden"][mask].astype(np.float32)}
    assert {tuple(np.round(r[:4], 2)) for r in hidden} == expected
    first = np.flatnonzero((arrays["hidden"].astype(np.float32) == hidden[0]).all(1))[0]
    np.testing.assert_array_equal(actions[0], arrays["actions"][first])
    with pytest.raises(ValueError, match="env.split"):
        load_split_rows(synthetic_store, "test", 0.25, 0, True, None)
    with pytest.raises(ValueError, match="val_fraction"):
        load_split_rows(synthetic_store, "val", 0.0, 0, True, None)


# ------------------------------------------------------------------------------------ run_offline


def test_run_offline_exact_rsd_agrees_with_main_only(synthetic_store, tmp_path):
    main, draft, tokenizer = tiny_models()
    store = HiddenStateStore(synthetic_store)
    stack = SimpleNamespace(
        main=main,
        draft=draft,
        tokenizer=tokenizer,
        normalizer=store.normalizer,
        decoder=SpeculativeDecoder(main, draft, tokenizer),
    )
    summary = run_offline(offline_cfg(synthetic_store, tmp_path), stack)
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["speedup"] == pytest.approx(summary["speedup"])
    assert not list(tmp_path.glob("*.tmp"))
    # 3 of 12 episodes (72 rows) cut to 4 batches of 8
    assert summary["num_chunks"] == 32 and summary["num_batches"] == 4
    assert summary["token_agreement"] == 1.0 and summary["chunk_agreement"] == 1.0
    assert summary["action_mse"] == pytest.approx(summary["main_only_action_mse"])
    assert summary["action_mse_vs_main_only"] == 0.0
    assert len(summary["acceptance_per_layer"]) == 3
    assert set(summary["latency_ms"]["decoder"]) == {
        "draft",
        "verify",
        "main_steps",
        "detokenize",
        "total",
        "total_cpu",
    }
    assert summary["latency_ms"]["main_only"]["verify"]["p50"] == 0.0
    latency = summary["latency_ms"]
    # the speedup is the paired timer's ratio of CPU-time medians against full main-only
    assert summary["speed_reference"] == "main_only" and set(summary["speed"]) == {"main_only"}
    assert summary["speedup"] == pytest.approx(
        latency["main_only"]["total_cpu"]["p50"] / latency["decoder"]["total_cpu"]["p50"]
    )
    assert summary["speed"]["main_only"]["wall_ratio"] == pytest.approx(
        latency["main_only"]["total"]["p50"] / latency["decoder"]["total"]["p50"]
    )
    low, high = summary["speedup_ci95"]
    assert low <= high and summary["speed"]["main_only"]["calls"] == 4
    assert summary["action_mse"] > 0  # untrained models: far from the ground truth


def test_run_offline_reports_acceptance_and_difference_from_main_only(synthetic_store, tmp_path):
    main, draft, tokenizer = tiny_models()
    accept_all = SpeculativeDecoder(main, draft, tokenizer, AgreementAcceptance(0.0))
    stack = SimpleNamespace(
        main=main,
        draft=draft,
        tokenizer=tokenizer,
        normalizer=None,
        decoder=accept_all,
        baseline=MainOnlyDecoder(main, tokenizer),
    )
    summary = run_offline(offline_cfg(synthetic_store, tmp_path, max_batches=2), stack)
    assert summary["mean_accepted_layers"] == 3.0 and summary["acceptance_per_layer"] == [
        1.0,
        1.0,
        1.0,
    ]
    assert summary["num_chunks"] == 16 and summary["mean_main_steps"] == 4
    assert summary["token_agreement"] < 1.0 and summary["action_mse_vs_main_only"] > 0


def test_run_offline_rejects_a_store_of_another_width(synthetic_store, tmp_path):
    torch.manual_seed(0)
    main = MainModel(hidden_dim=64, d_model=32, n_layers=1, n_heads=4, tokens_per_layer=32)
    tokenizer = RFSQTokenizer(chunk_size=8, latent_dim=4, hidden=16)
    stack = SimpleNamespace(
        main=main, tokenizer=tokenizer, normalizer=None, decoder=MainOnlyDecoder(main, tokenizer)
    )
    with pytest.raises(ValueError, match="hidden states are 32-d"):
        run_offline(offline_cfg(synthetic_store, tmp_path), stack)


# ------------------------------------------------------------------------------------ sweep


def fake_job(root: Path, num: int, overrides: list[str], **metrics) -> None:
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / "summary.json").write_text(json.dumps({"latency_ms": {"decoder": {}}, **metrics}))


def test_sweep_collects_overrides_and_metrics(tmp_path):
    for i, threshold in enumerate((0.5, 0.7, 0.9)):
        fake_job(
            tmp_path,
            i,
            [
                "decoder=rsd",
                "decoder/acceptance=agreement",
                f"decoder.acceptance.threshold={threshold}",
            ],
            speedup=1.5 - 0.2 * i,
            action_mse=0.01 / (i + 1),
            token_agreement=0.9,
        )
    csv_path, png_path = sweep.main([str(tmp_path)])
    rows = list(csv.DictReader(open(csv_path)))
    assert [r["decoder.acceptance.threshold"] for r in rows] == ["0.5", "0.7", "0.9"]
    assert [float(r["speedup"]) for r in rows] == pytest.approx([1.5, 1.3, 1.1])
    assert "latency_ms" not in rows[0] and rows[0]["decoder/acceptance"] == "agreement"
    assert sweep.setting_labels(sweep.collect(tmp_path))[0] == "decoder.acceptance.threshold=0.5"
    shown = sweep.plot(sweep.collect(tmp_path), tmp_path / "again.png")
    assert list(shown) == ["action_mse"]  # no success_rate in these summaries: one panel
    assert [(x, round(y, 6)) for x, y, _ in shown["action_mse"]] == [
        (1.5, 0.01),
        (1.3, 0.005),
        (1.1, round(0.01 / 3, 6)),
    ]
    assert shown["action_mse"][0][2] == "decoder.acceptance.threshold=0.5"
    assert png_path.stat().st_size > 5_000


def test_sweep_plots_success_rate_when_present(tmp_path):
    fake_job(tmp_path, 0, ["decoder=main_only"], speedup=1.0, success_rate=0.8)
    fake_job(tmp_path, 1, ["decoder=rsd"], speedup=1.4, success_rate=0.78)
    csv_path, png_path = sweep.main([str(tmp_path), "--csv", str(tmp_path / "s.csv")])
    rows = list(csv.DictReader(open(csv_path)))
    assert [r["success_rate"] for r in rows] == ["0.8", "0.78"] and png_path.exists()
    with pytest.raises(FileNotFoundError, match="summary.json"):
        sweep.collect(tmp_path / "0" / ".hydra")
    with pytest.raises(SystemExit):
        sweep.main([str(tmp_path / "0" / ".hydra")])


# ------------------------------------------------------------------------------------ acceptance counting


def test_libero_policy_and_offline_count_acceptance_the_same_way():
    """Calls that did not speculate (skip_below fallback) are no rejections in either path."""
    from rsdvla.decoding import DecodeResult, DecodeStats
    from rsdvla.decoding.timing import PairedTimer
    from rsdvla.evaluation.libero.rollout import _chunk_fields
    from rsdvla.evaluation.offline import SideBySide
    from rsdvla.evaluation.reports.aggregate import acceptance_block
    from rsdvla.policy import ChunkStats, read_decode_stats

    def result(accepted: list[int], speculated: bool) -> DecodeResult:
        acc = torch.tensor(accepted)
        stats = DecodeStats(
            accepted_layers=acc,
            layer_accepted=torch.arange(3) < acc[:, None],
            token_agreement=torch.ones(len(acc), 3),
            num_main_steps=5,
            speculated=speculated,
            seconds={"draft": 0.0, "verify": 0.0, "main_steps": 0.001, "detokenize": 0.0},
        )
        return DecodeResult(
            torch.zeros(len(acc), 2, 1, 8, dtype=torch.long), torch.zeros(len(acc), 2, 7), stats
        )

    # speculated calls accept 3 and 1 layers; the fallback call (speculated=False) reports 0
    calls = [result([3], True), result([0], False), result([1], True)]
    chunk_log = [ChunkStats(*read_decode_stats(r, 3)[:2]) for r in calls]
    libero = acceptance_block([_chunk_fields(chunk_log)])
    side = SideBySide()
    timer = PairedTimer(["decoder", "main_only"])
    for r in calls:
        side.add(r, r, torch.zeros(1, 2, 7), None)
        timer.add("decoder", 1.0, 1.0)
        timer.add("main_only", 1.0, 1.0)
    offline = side.summary(timer)
    assert libero["mean_accepted_layers"] == pytest.approx(2.0)  # (3 + 1) / 2, not / 3
    assert offline["mean_accepted_layers"] == pytest.approx(libero["mean_accepted_layers"])
    assert libero["acceptance_per_layer"] == pytest.approx([1.0, 0.5, 0.5])
    assert offline["acceptance_per_layer"] == pytest.approx(libero["acceptance_per_layer"])
    assert offline["speculated_share"] == pytest.approx(2 / 3)


def test_offline_compares_truncated_depth_with_main_only(synthetic_store, tmp_path):
    main, draft, tokenizer = tiny_models()
    stack = main_only_stack(main, tokenizer, synthetic_store, depth=3)
    summary = run_offline(offline_cfg(synthetic_store, tmp_path, max_batches=2), stack)
    assert summary["mean_decoded_layers"] == 3.0 and summary["mean_main_steps"] == 3
    # the 3 decoded layers are main-only's own: 3 of 8 layers' tokens agree, no chunk is whole
    assert summary["token_agreement"] == pytest.approx(3 / 8) and summary["chunk_agreement"] == 0
    assert summary["action_mse_vs_main_only"] > 0
    # read against full main-only and against main-only at its own depth, timed in the same rounds
    assert set(summary["speed"]) == {"main_only", "main_only_m3"}
    assert summary["speed"]["main_only_m3"]["reference"] == "main_only_m3"
    assert summary["cost_per_chunk"]["main_only_m3"]["step_passes"] == 3
    assert summary["cost_per_chunk"]["main_only"]["step_passes"] == 8


def test_offline_refuses_a_speed_reference_it_did_not_time(synthetic_store, tmp_path):
    main, _, tokenizer = tiny_models()
    stack = main_only_stack(main, tokenizer, synthetic_store)
    cfg = offline_cfg(synthetic_store, tmp_path, max_batches=1, speed_reference="main_only_m3")
    with pytest.raises(ValueError, match=r"env.speed_reference='main_only_m3' was not timed"):
        run_offline(cfg, stack)
    cfg = offline_cfg(synthetic_store, tmp_path, max_batches=1, bootstrap_resamples=50)
    with pytest.raises(ValueError, match=r"env.bootstrap_resamples=50: .* >= 100 resamples"):
        run_offline(cfg, stack)
    cfg = offline_cfg(synthetic_store, tmp_path, max_batches=1, timing_blocks=3)
    with pytest.raises(ValueError, match=r"env.timing_blocks=3: .* >= 5 of them"):
        run_offline(cfg, stack)
    assert not (tmp_path / "summary.json").exists()


def test_offline_speed_interval_resamples_blocks_of_calls(synthetic_store, tmp_path):
    main, _, tokenizer = tiny_models()
    stack = main_only_stack(main, tokenizer, synthetic_store, depth=3)
    cfg = offline_cfg(synthetic_store, tmp_path, batch_size=1, max_batches=12, timing_blocks=6)
    summary = run_offline(cfg, stack)
    speed = summary["speed"]
    for entry in speed.values():  # 12 rounds in 6 blocks of 2
        assert entry["interval_unit"] == "block" and entry["blocks"] == 6 and entry["calls"] == 12
        # the load it ran under: None for a run shorter than a second, else cores >= 0
        assert entry["neighbour_cores"] is None or entry["neighbour_cores"] >= 0
    assert "cores), 1 torch thread(s)" in summary["machine"]
    cfg = offline_cfg(synthetic_store, tmp_path, batch_size=1, max_batches=12, timing_blocks=1)
    assert run_offline(cfg, stack)["speed"]["main_only"]["interval_unit"] == "call"


def test_a_draft_trained_on_another_split_is_refused_and_one_store_spelled_two_ways_is_not(
    synthetic_store, tmp_path
):
    from rsdvla.checkpoints import CheckpointError
    from rsdvla.evaluation.libero.split import use_trained_split

    def trained_on(path, seed=0):
        return SimpleNamespace(
            lineage={"store": {"backbone": "synthetic", "hidden_dim": HIDDEN}},
            train_config={"data": {"path": path, "val_fraction": 0.25, "seed": seed}},
        )

    rel = Path(os.path.relpath(synthetic_store))
    cfg = OmegaConf.create(
        {
            "data": {"path": str(rel), "val_fraction": 0.1, "seed": 3},
            "env": {"split": "val"},
            "ckpt": {"main": "main.ckpt", "draft": "draft.ckpt"},
        }
    )
    same = SimpleNamespace(main=trained_on(str(rel)), draft=trained_on(f"./{rel}"))
    use_trained_split(cfg, same)  # "./x" and "x": one store
    assert (cfg.data.val_fraction, cfg.data.seed) == (0.25, 0)  # main's split is used
    other = SimpleNamespace(main=trained_on(str(rel)), draft=trained_on(str(rel), seed=1))
    with pytest.raises(
        CheckpointError, match=r"^draft\.ckpt: draft was trained on split .*seed': 1"
    ):
        use_trained_split(cfg, other)
