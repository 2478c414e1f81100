"""Summary figures: the bars show the summary's acceptance and latency numbers, for both layouts."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from rsdvla.evaluation.reports.plots import plot_summary  # noqa: E402


@pytest.fixture
def figures(monkeypatch):
    """The figures plot_summary draws, kept instead of closed."""
    kept = []
    monkeypatch.setattr(plt, "close", kept.append)
    yield kept
    monkeypatch.undo()
    for fig in kept:
        plt.close(fig)


def bars(ax) -> list[tuple[str, float]]:
    return [(p.get_label(), round(p.get_height(), 6)) for p in ax.patches]


def test_offline_layout_plots_both_series_per_stage(tmp_path, figures):
    offline = {
        "acceptance_per_layer": [0.9, 0.6, 0.2],
        "latency_ms": {
            "decoder": {"draft": {"p50": 1.0}, "verify": {"p50": 3.0}},
            "main_only": {"main_steps": {"p50": 8.0}},
        },
    }
    path = plot_summary(offline, tmp_path / "offline.png", title="offline")
    (fig,) = figures
    acc, lat = fig.axes
    assert [p.get_height() for p in acc.patches] == [0.9, 0.6, 0.2]
    assert [t.get_text() for t in acc.get_xticklabels()] == ["L0", "L1", "L2"]
    assert [t.get_text() for t in lat.get_xticklabels()] == ["draft", "verify", "main_steps"]
    # decoder bars then main_only bars, one per stage; absent stages are 0
    assert [p.get_height() for p in lat.patches] == [1.0, 3.0, 0.0, 0.0, 0.0, 8.0]
    assert [t.get_text() for t in lat.get_legend().get_texts()] == ["decoder", "main_only"]
    image = mpimg.imread(path)
    assert image.shape[:2] == (396, 1100)  # 10 x 3.6 in at 110 dpi
    assert image[..., :3].std() > 0.05  # not a blank canvas
    assert not list(tmp_path.glob(".*tmp*"))


def test_libero_layout_and_empty_summary(tmp_path, figures):
    libero = {
        "acceptance_per_layer": [1.0],
        "latency_ms": {"backbone": {"p50": 0.3}, "decode": {"p50": 5.0}, "total": {"n": 3}},
    }
    plot_summary(libero, tmp_path / "libero.png")
    (fig,) = figures
    acc, lat = fig.axes
    assert [p.get_height() for p in acc.patches] == [1.0]
    # stages without a p50 are left out; one series: no legend
    assert [t.get_text() for t in lat.get_xticklabels()] == ["backbone", "decode"]
    assert [p.get_height() for p in lat.patches] == [0.3, 5.0] and lat.get_legend() is None
    assert plot_summary({}, tmp_path / "empty.png") is None
    assert not (tmp_path / "empty.png").exists()
