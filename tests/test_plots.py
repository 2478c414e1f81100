"""Summary figures: acceptance per layer and latency per stage, for both summary layouts."""

from rsdvla.evaluation.plots import plot_summary


def test_plot_summary_writes_png_for_offline_and_libero_layouts(tmp_path):
    offline = {
        "acceptance_per_layer": [0.9, 0.6, 0.2],
        "latency_ms": {
            "decoder": {"draft": {"p50": 1.0}, "verify": {"p50": 3.0}},
            "main_only": {"main_steps": {"p50": 8.0}},
        },
    }
    libero = {
        "acceptance_per_layer": [1.0],
        "latency_ms": {"backbone": {"p50": 0.3}, "decode": {"p50": 5.0}},
    }
    for name, summary in (("offline", offline), ("libero", libero)):
        path = plot_summary(summary, tmp_path / f"{name}.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        plot_summary({}, tmp_path / "empty.png") is None and not (tmp_path / "empty.png").exists()
    )
    assert not list(tmp_path.glob(".*tmp*"))
