"""Paired statistics against published worked examples, and a hand-computed exact McNemar p."""

from math import comb

import pytest

from rsdvla.evaluation.reports.paired import (
    PairedTable,
    mcnemar_exact_p,
    newcombe_paired_ci,
    paired_comparison,
)


def test_newcombe_1998_worked_example():
    # Newcombe (1998), Stat. Med. 17:2635, Table II example (a): 36 / 12 / 2 / 0, method 10
    # gives 0.0569 to 0.3404 for the difference 0.2. Here "ref" is the second measurement.
    table = PairedTable(both=36, only_run=12, only_ref=2, neither=0)
    low, high = newcombe_paired_ci(table)
    assert (round(low, 4), round(high, 4)) == (0.0569, 0.3404)


def test_fagerland_cavo_example():
    # Fagerland, Lydersen & Laake (2017), ch. 8, Cavo et al. (2012): 59 / 6 / 16 / 80 (N = 161):
    # difference -0.0621, Newcombe square-and-add 95% CI -0.1186 to -0.0046, McNemar exact p 0.0525.
    table = PairedTable(both=59, only_run=6, only_ref=16, neither=80)
    low, high = newcombe_paired_ci(table)
    assert (round(low, 4), round(high, 4)) == (-0.1186, -0.0046)
    assert mcnemar_exact_p(table) == pytest.approx(0.0525, abs=5e-5)


def test_mcnemar_exact_equals_binomial_sum():
    # 1 vs 7 discordant pairs: p = 2 * P(X <= 1), X ~ Bin(8, 1/2) = 2 * (1 + 8) / 256
    table = PairedTable(both=1, only_ref=7, only_run=1, neither=12)
    assert mcnemar_exact_p(table) == pytest.approx(2 * (comb(8, 0) + comb(8, 1)) / 2**8)
    assert mcnemar_exact_p(PairedTable(5, 0, 0, 5)) == 1.0


def test_paired_comparison_counts_and_sign():
    ref = [True, True, False, False, True]
    run = [True, False, True, True, True]
    out = paired_comparison(ref, run)
    assert (out["both"], out["only_ref"], out["only_run"], out["neither"]) == (2, 1, 2, 0)
    assert out["delta"] == pytest.approx(out["success_run"] - out["success_ref"]) == 0.2
    low, high = out["delta_ci95"]
    assert low < out["delta"] < high
    with pytest.raises(ValueError, match="length"):
        paired_comparison([True], [True, False])
