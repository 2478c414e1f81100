"""compare --videos: discordant episodes replay through the runner and reproduce their records."""

from __future__ import annotations

import pytest
from test_compare import OutcomeEnvs, make_run, reference_rule, run_rule
from test_libero_runner import fake_policy

from rsdvla.evaluation.libero.replay import check_reproduced, read_frames, replay_discordant
from rsdvla.evaluation.reports import compare

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_replayed_discordant_episodes_reproduce_their_records_and_make_videos(tmp_path):
    a = make_run(tmp_path / "a", reference_rule, "ref")
    b = make_run(tmp_path / "b", run_rule, "run")
    runs = compare.load_runs([a, b])
    result = compare.compare_loaded(runs)
    rules = {"a": reference_rule, "b": run_rule}
    discordant = result["comparisons"][0]["discordant"]
    assert len(discordant) == 4

    def make(run):
        return fake_policy(), OutcomeEnvs(rules[run.label])

    report = replay_discordant(runs, result, tmp_path / "out", chunk_size=8, make=make)
    assert report["b"]["not_reproduced"] == []
    videos = report["b"]["videos"]
    assert len(videos) == len(discordant)
    # only the discordant episodes ran again, and each repeats its record
    replayed = tmp_path / "out" / "replay" / "b_for_b" / "episodes.jsonl"
    from rsdvla.evaluation.libero.episodes import read_episode_file, record_key

    records = read_episode_file(replayed)
    assert sorted(record_key(r) for r in records) == sorted(
        (d["suite"], d["task_id"], d["trial"]) for d in discordant
    )
    assert check_reproduced(runs[1].records, records) == []
    frames = read_frames(videos[0])
    longest = max(r["steps"] for r in records)
    assert len(frames) == longest  # A | B padded to the longer episode, one frame per step


def test_check_reproduced_names_the_differing_fields():
    original = [{"suite": "s", "task_id": 0, "trial": 1, "success": True, "steps": 5}]
    replayed = [{"suite": "s", "task_id": 0, "trial": 1, "success": False, "steps": 9}]
    assert check_reproduced(original, replayed) == [
        "('s', 0, 1): success, steps differ from the record"
    ]


def test_replay_without_the_runs_hydra_config_is_one_line(tmp_path):
    from rsdvla.evaluation.libero.replay import replay_run

    a = make_run(tmp_path / "a", reference_rule, "ref")
    (run,) = compare.load_runs([a, a])[:1]
    with pytest.raises(FileNotFoundError, match=r"\.hydra/config\.yaml: the run's Hydra config"):
        replay_run(run, {("libero_object", 0, 0)}, tmp_path / "out")
