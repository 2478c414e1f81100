"""compare: runs of the real LiberoRunner (fake env) paired by episode, refusals in one line."""

from __future__ import annotations

import json

import pytest
from test_libero_runner import FakeEnv, FakeEnvs, fake_policy, settings

from rsdvla.evaluation.libero.runner import LiberoRunner
from rsdvla.evaluation.reports import compare, merge


class OutcomeEnvs(FakeEnvs):
    """Fake envs whose episode (task, trial) succeeds iff ``rule(task, trial)``."""

    def __init__(self, rule):
        super().__init__()
        self.rule = rule

    def make(self, suite, task_id, settings):
        env = FakeEnv(task_id, self.starts)
        rule = self.rule

        def step(action, env=env):
            env.t += 1
            return env._obs(), rule(env.task_id, env.trial) and env.t >= 3, {}

        env.step = step
        return env


def reference_rule(task, trial):
    return (task + trial) % 2 == 0


def run_rule(
    task, trial
):  # flips task 0's failures to successes and task 2's successes to failures
    return True if task == 0 else (False if task == 2 else reference_rule(task, trial))


def make_run(path, rule, name, **kw):
    LiberoRunner(settings(trials=4, **kw), path, OutcomeEnvs(rule)).run(
        fake_policy(), identity={"decoder": name}
    )
    return path


def expected(ref_rule, rule, keys):
    both = sum(ref_rule(*k) and rule(*k) for k in keys)
    only_ref = sum(ref_rule(*k) and not rule(*k) for k in keys)
    only_run = sum(rule(*k) and not ref_rule(*k) for k in keys)
    return both, only_ref, only_run, len(keys) - both - only_ref - only_run


def test_compare_pairs_episodes_and_writes_outputs(tmp_path, capsys):
    a = make_run(tmp_path / "a", reference_rule, "ref")
    b = make_run(tmp_path / "b", run_rule, "run")
    result = compare.main([str(a), str(b), "--out", str(tmp_path / "out")])
    comp = result["comparisons"][0]
    keys = [(t, k) for t in range(3) for k in range(4)]
    p = comp["paired"]
    assert (p["both"], p["only_ref"], p["only_run"], p["neither"]) == expected(
        reference_rule, run_rule, keys
    )
    for task in comp["tasks"]:
        tk = [(task["task_id"], k) for k in range(4)]
        assert (task["both"], task["only_ref"], task["only_run"], task["neither"]) == expected(
            reference_rule, run_rule, tk
        )
    assert len(comp["discordant"]) == p["only_ref"] + p["only_run"] == 4
    assert {d["task_id"] for d in comp["discordant"]} == {0, 2}
    for name in ("compare.md", "compare.json", "compare.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert json.loads((tmp_path / "out" / "compare.json").read_text()) == json.loads(
        json.dumps(result)
    )
    out = capsys.readouterr().out
    assert "Δ success" in out
    # both runs timed main-only beside their decoder: the relative speed is printed beside Δ success
    speed = comp["speed"]["main_only"]
    assert speed["ci95"][0] <= speed["ratio"] <= speed["ci95"][1] and comp["speed_refused"] is None
    assert "`b` vs `a`: decoder speed" in out


def test_compare_reads_a_merged_summary_and_a_frontier_point(tmp_path):
    make_run(tmp_path / "main_only" / "libero", reference_rule, "ref")
    for shard in (0, 1):
        LiberoRunner(
            settings(trials=4, num_shards=2, shard_id=shard), tmp_path / "b", OutcomeEnvs(run_rule)
        ).run(fake_policy(), identity={"decoder": "run"})
    merge.main([str(tmp_path / "b")])
    result = compare.compare([tmp_path / "main_only", tmp_path / "b" / "summary.json"])
    assert result["reference"] == "main_only"
    assert result["comparisons"][0]["paired"]["n"] == 12


def test_compare_refuses_other_protocol_in_one_line(tmp_path):
    a = make_run(tmp_path / "a", reference_rule, "ref")
    b = make_run(tmp_path / "b", run_rule, "run", max_steps=10)
    with pytest.raises(ValueError, match=r"settings.max_steps: 12 vs 10") as err:
        compare.compare([a, b])
    assert "\n" not in str(err.value)


def test_compare_refuses_runs_sharing_no_episode(tmp_path):
    a = make_run(tmp_path / "a", reference_rule, "ref")
    b = make_run(tmp_path / "b", run_rule, "run", first_trial=4)
    with pytest.raises(ValueError, match="share no episode"):
        compare.compare([a, b])


def test_compare_cli_error_is_one_line(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rsdvla.evaluation.reports.compare",
            str(tmp_path / "nope"),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "nope" in proc.stderr


def test_speed_across_runs_that_timed_different_references_is_refused_naming_both(tmp_path):
    def records(stage):
        latency = {"decode": [1.0, 2.0, 3.0], stage: [2.0, 4.0, 6.0]}
        return [{"latency_ms": latency}]

    ref = compare.Run("a", tmp_path / "a", [], {})
    run = compare.Run("b", tmp_path / "b", [], {})
    with pytest.raises(ValueError, match=r"against main_only but .*b against main_only_m3"):
        compare.speed_comparison(
            records("baseline_decode"), records("baseline_decode_m3"), ref, run
        )
    same = compare.speed_comparison(
        records("baseline_decode"), records("baseline_decode"), ref, run
    )
    assert same["main_only"]["ratio"] == pytest.approx(1.0)  # both 2x faster than main-only
    assert same["main_only"]["clock_name"] == "wall"  # no CPU times in these records


def test_relative_speed_of_known_ratios():
    from rsdvla.decoding.timing import relative_speed

    ref = [2.0, 4.0, 3.0, 5.0]
    ratio, ci = relative_speed(ref, ref, ref, [x / 2 for x in ref])  # A = its reference, B = 2x
    assert ratio == pytest.approx(2.0) and ci == pytest.approx([2.0, 2.0])
