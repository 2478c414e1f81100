"""The decoding benchmark runs end to end and its rows say what the settings promise (no timing asserted)."""

from __future__ import annotations

import json

import pytest
from conftest import load_benchmark

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_bench_rows_in_both_precisions_and_docs_section(tmp_path):
    bench = load_benchmark("bench_decode")
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n## Other\n\nkept\n")
    out = tmp_path / "bench.json"
    argv = ["--repeats", "1", "--warmup", "0", "--batch-sizes", "1", "--hidden-dim", "64"]
    argv += ["--docs", str(docs), "--section", "## Decoding speed (test)", "--json", str(out)]
    bench.main(argv)
    payload = json.loads(out.read_text())
    rows = {(r["precision"], r["setting"]): r for r in payload["rows"]}
    for precision in ("float32", "bfloat16"):
        oracle = rows[(precision, "oracle k=3")]
        assert oracle["accepted"] == 3.0  # the oracle returns main's own codes
        never = rows[(precision, "never-agree k=3")]
        assert never["accepted"] == 0.0
        assert never["same_codes"] == 1.0  # exact: main's answer whatever the draft
        assert rows[(precision, "main-only m=3")]["same_codes"] is None  # other depth
        # passes counted from what the decoders did: draft + verify + L-1-3 steps for the oracle
        assert (oracle["draft_passes"], oracle["verify_passes"], oracle["step_passes"]) == (1, 1, 4)
        assert never["passes"] == 1 + 1 + 7 and rows[(precision, "main-only")]["passes"] == 8
        assert rows[(precision, "main-only m=3")]["passes"] == 3
        assert oracle["predicted_gpu"] == "NVIDIA H100 SXM5 80GB"
        assert rows[(precision, "main-only")]["predicted_speedup"] == 1.0
    assert {g["precision"] for g in payload["goals"]} == {"float32", "bfloat16"}
    text = docs.read_text()
    assert "## Decoding speed (test)" in text and "kept" in text
    assert "| bfloat16 | 1 | oracle k=3 | 3.00 | 1.0000 |" in text
    assert "predicted speedup (roofline, not measured)" in text


def test_an_unknown_gpu_is_refused_before_anything_runs():
    with pytest.raises(ValueError, match=r"^--gpu='V100' is not in the roofline table"):
        load_benchmark("bench_decode").main(["--gpu", "V100", "--no-docs"])
    with pytest.raises(ValueError, match=r"^--blocks=3: .* >= 5 of them"):
        load_benchmark("bench_decode").main(["--blocks", "3", "--no-docs"])


def test_markdown_section_is_replaced_in_place_appended_or_starts_a_file(tmp_path):
    from rsdvla.evaluation.reports.aggregate import write_markdown_section

    doc = tmp_path / "doc.md"
    write_markdown_section(doc, "## A", "first", title="# Title")
    assert doc.read_text() == "# Title\n\n## A\n\nfirst\n"
    doc.write_text("# Title\n\n## A\n\nold\nlines\n\n## B\n\nkept\n")
    write_markdown_section(doc, "## A", "new", title="# Title")
    assert doc.read_text() == "# Title\n\n## A\n\nnew\n\n## B\n\nkept\n"
    write_markdown_section(doc, "## C", "added", title="# Title")
    assert doc.read_text().endswith("## B\n\nkept\n\n## C\n\nadded\n")
    assert not list(tmp_path.glob("*.tmp"))


def test_goals_table_reads_runs_and_refuses_one_without_intervals(tmp_path):
    bench, table = load_benchmark("bench_decode"), load_benchmark("decoding_goals_table")
    argv = ["--repeats", "5", "--warmup", "0", "--batch-sizes", "1", "--hidden-dim", "64"]
    argv += ["--blocks", "5", "--precisions", "float32", "--no-docs"]
    bench.main(argv + ["--json", str(tmp_path / "a.json")])
    payload = json.loads((tmp_path / "a.json").read_text())
    oracle = next(g for g in payload["goals"] if (g["setting"], g["batch"]) == ("oracle k=3", 1))
    low, high = oracle["ci95"]
    assert low <= oracle["measured"] <= high
    docs = tmp_path / "benchmarks.md"
    body = table.main([str(tmp_path / "a.json"), "--labels", "one run", "--docs", str(docs)])
    expected = table.cell(oracle["measured"], oracle["ci95"], oracle["met"])
    assert f"| oracle k=3 >= 1.45x at batch 1 | {expected} |" in body
    assert "## Decoding goals at a glance" in docs.read_text()
    assert "skip_below=0.7`, batch 1 |" in body and "float32, one run" in body
    del payload["goals"][0]["ci95"]  # as the runs written before the intervals
    (tmp_path / "old.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match=r"old\.json: goals\[\]\.ci95 is missing"):
        table.main([str(tmp_path / "old.json")])


def test_render_rewrites_the_measured_section_from_its_json(tmp_path):
    bench = load_benchmark("bench_decode")
    docs, out = tmp_path / "benchmarks.md", tmp_path / "bench.json"
    argv = ["--repeats", "5", "--warmup", "0", "--batch-sizes", "1", "--hidden-dim", "64"]
    argv += ["--precisions", "float32", "--section", "## Decoding speed (tiny run)"]
    bench.main(argv + ["--docs", str(docs), "--json", str(out)])
    measured = docs.read_text()
    docs.write_text("# Benchmarks\n\n## Decoding speed (tiny run)\n\nstale\n")
    bench.main(["--render", "--json", str(out), "--docs", str(docs)])
    rendered = docs.read_text()
    note = f" (this section rendered from `{out}` by `python benchmarks/bench_decode.py --render --json {out}`)"
    assert "stale" not in rendered and note in rendered
    assert rendered.replace(note, "") == measured  # the same figures, timing nothing
    payload = json.loads(out.read_text())
    del payload["goals"][0]["ci95"]
    out.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match=r"bench\.json: goals\[\]\.ci95 is missing"):
        bench.main(["--render", "--json", str(out), "--docs", str(docs)])
