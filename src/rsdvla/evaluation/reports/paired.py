"""Paired statistics of two decoders' successes on the same episodes (one place for all tables).

Every episode of a comparison ran under both decoders (same task, initial state and seed), so
the outcomes form a paired 2x2 table: ``both`` succeeded, ``only_ref`` (the reference only),
``only_run`` (the compared run only), ``neither``. Only the discordant episodes carry evidence
of a difference:

- the success difference ``delta = p_run - p_ref = (only_run - only_ref) / n`` with Newcombe's
  (1998, Stat. Med. 17:2635, method 10) hybrid-score interval for paired proportions: Wilson
  intervals of the two marginal rates combined with their correlation (continuity-corrected phi);
- McNemar's exact test: under "no difference" each discordant episode goes either way with
  probability 1/2, so the two-sided p is a binomial test of ``only_run`` of ``only_ref + only_run``
  (statsmodels' ``mcnemar(exact=True)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

CI_METHOD = "Newcombe (1998) method 10, hybrid score with continuity-corrected phi"
TEST_METHOD = "McNemar exact (two-sided binomial test on discordant pairs)"


@dataclass(frozen=True)
class PairedTable:
    """Counts of a paired comparison: reference (``ref``) vs compared run (``run``)."""

    both: int
    only_ref: int
    only_run: int
    neither: int

    @property
    def n(self) -> int:
        return self.both + self.only_ref + self.only_run + self.neither

    @classmethod
    def from_outcomes(cls, ref: Sequence[bool], run: Sequence[bool]) -> PairedTable:
        """From per-episode successes, in the same episode order: ``[n]`` bool each."""
        if len(ref) != len(run):
            raise ValueError(f"paired outcomes differ in length: {len(ref)} vs {len(run)}")
        pairs = list(zip(map(bool, ref), map(bool, run), strict=True))
        return cls(
            both=sum(a and b for a, b in pairs),
            only_ref=sum(a and not b for a, b in pairs),
            only_run=sum(b and not a for a, b in pairs),
            neither=sum(not a and not b for a, b in pairs),
        )


def newcombe_paired_ci(table: PairedTable, alpha: float = 0.05) -> tuple[float, float]:
    """``(low, high)`` of ``p_run - p_ref``: Newcombe's method 10 (``(-1, 1)`` when ``n == 0``)."""
    n = table.n
    if n == 0:
        return -1.0, 1.0
    ref_wins, run_wins = table.both + table.only_ref, table.both + table.only_run
    p_run, p_ref = run_wins / n, ref_wins / n
    l_run, u_run = proportion_confint(run_wins, n, alpha=alpha, method="wilson")
    l_ref, u_ref = proportion_confint(ref_wins, n, alpha=alpha, method="wilson")
    # phi: correlation of the paired outcomes, continuity-corrected as Newcombe's phi*
    margins = run_wins * (n - run_wins) * ref_wins * (n - ref_wins)
    cross = table.both * table.neither - table.only_run * table.only_ref
    corrected = cross - n / 2 if cross > n / 2 else (cross if cross < 0 else 0.0)
    phi = corrected / math.sqrt(margins) if margins > 0 else 0.0
    delta = p_run - p_ref
    low = delta - math.sqrt(
        (p_run - l_run) ** 2 - 2 * phi * (p_run - l_run) * (u_ref - p_ref) + (u_ref - p_ref) ** 2
    )
    high = delta + math.sqrt(
        (p_ref - l_ref) ** 2 - 2 * phi * (p_ref - l_ref) * (u_run - p_run) + (u_run - p_run) ** 2
    )
    return max(-1.0, low), min(1.0, high)


def mcnemar_exact_p(table: PairedTable) -> float:
    """Two-sided exact McNemar p (1.0 when no episode is discordant)."""
    if table.only_ref + table.only_run == 0:
        return 1.0
    return float(
        mcnemar([[table.both, table.only_ref], [table.only_run, table.neither]], exact=True).pvalue
    )


def paired_comparison(ref: Sequence[bool], run: Sequence[bool]) -> dict:
    """Paired outcomes -> ``{both, only_ref, only_run, neither, n, success_ref, success_run, delta,
    delta_ci95: [low, high], p_mcnemar}`` (rates as fractions)."""
    table = PairedTable.from_outcomes(ref, run)
    n = table.n
    low, high = newcombe_paired_ci(table)
    return {
        **asdict(table),
        "n": n,
        "success_ref": (table.both + table.only_ref) / n if n else None,
        "success_run": (table.both + table.only_run) / n if n else None,
        "delta": (table.only_run - table.only_ref) / n if n else None,
        "delta_ci95": [low, high],
        "p_mcnemar": mcnemar_exact_p(table),
    }


def format_paired(entry: dict | None) -> tuple[str, str]:
    """``("-6 [-11, -1] pp", "0.03")`` for tables; ``("-", "-")`` without a paired result."""
    if not entry or entry.get("delta") is None:
        return "-", "-"
    low, high = entry["delta_ci95"]
    p = entry["p_mcnemar"]
    return (
        f"{100 * entry['delta']:+.0f} [{100 * low:+.0f}, {100 * high:+.0f}] pp",
        f"{p:.2g}" if p >= 0.001 else "<0.001",
    )
