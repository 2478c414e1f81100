"""The frontier, quickstart and sweep tables carry the same paired figures as compare."""

from __future__ import annotations

import csv

from omegaconf import OmegaConf
from test_compare import make_run, reference_rule, run_rule

from rsdvla.evaluation import frontier
from rsdvla.evaluation.reports import compare, sweep
from rsdvla.evaluation.reports.paired import format_paired
from rsdvla.evaluation.reports.quickstart_report import collect_rows, render


def test_quickstart_rows_pair_with_main_only(tmp_path):
    make_run(tmp_path / "libero_main_only", reference_rule, "main_only")
    make_run(tmp_path / "libero_rsd", run_rule, "rsd")
    rows = {r["decoder"]: r for r in collect_rows(tmp_path, ["main_only", "rsd"])}
    direct = compare.compare([tmp_path / "libero_main_only", tmp_path / "libero_rsd"])
    assert rows["main_only"]["paired"] is None
    assert rows["rsd"]["paired"] == direct["comparisons"][0]["paired"]
    table = render(list(rows.values()), {})
    assert format_paired(rows["rsd"]["paired"])[0] in table.columns[-2]._cells


def test_sweep_pairs_jobs_with_the_main_only_job(tmp_path):
    for job, decoder, rule in (("0", "main_only", reference_rule), ("1", "rsd", run_rule)):
        make_run(tmp_path / job, rule, decoder)
        (tmp_path / job / ".hydra").mkdir()
        (tmp_path / job / ".hydra" / "overrides.yaml").write_text(f"- decoder={decoder}\n")
    sweep.main([str(tmp_path)])
    rows = {r["job"]: r for r in csv.DictReader(open(tmp_path / "sweep.csv"))}
    paired = compare.compare([tmp_path / "0", tmp_path / "1"])["comparisons"][0]["paired"]
    assert float(rows["1"]["paired_delta_vs_main_only"]) == paired["delta"]
    assert float(rows["1"]["paired_p_mcnemar"]) == paired["p_mcnemar"]
    assert rows["0"]["paired_delta_vs_main_only"] == ""


def test_frontier_row_pairs_libero_points_with_main_only(tmp_path):
    for name, rule in (("main_only", reference_rule), ("rsd_x", run_rule)):
        make_run(tmp_path / name / "libero", rule, name)
    cfg = OmegaConf.create(
        {
            "frontier": {
                "work_dir": str(tmp_path),
                "libero": {
                    "suite": "libero_object",
                    "task_ids": [0, 1, 2],
                    "trials": 2,
                    "first_trial": 0,
                },
            }
        }
    )
    libero = {"main_only": {}, "rsd_x": {}}
    paired = frontier.paired_vs_main_only(cfg, "rsd_x", libero)
    # only the planned trials 0..1 of the 4 on disk count
    direct = compare.compare([tmp_path / "main_only", tmp_path / "rsd_x"])["comparisons"][0]
    planned = [t for t in direct["discordant"] if t["trial"] < 2]
    assert paired["n"] == 6 and paired["only_ref"] + paired["only_run"] == len(planned)
    assert frontier.paired_vs_main_only(cfg, "main_only", libero) is None
    row = frontier.row_for(
        "rsd_x", {}, {"success_rate": 0.5, "success_ci95": [0.2, 0.8], "episodes": 6}, False, paired
    )
    line = frontier.markdown([row]).splitlines()[-1]
    delta, p = format_paired(paired)
    # then the columns against its own stack's main-only: none for the quickstart's RFSQ stack
    assert line.endswith(f"| {delta} | {p} | - | - |")
