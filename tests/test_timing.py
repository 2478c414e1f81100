"""Paired timing (rsdvla.decoding.timing): ratio of medians, bootstrap interval, rotation, refusals.

No test here measures a clock: every figure is computed on given timings.
"""

import numpy as np
import pytest
from scipy import stats

from rsdvla.decoding.timing import (
    MIN_BLOCKS,
    PairedTimer,
    bootstrap_ratio_interval,
    check_reference,
    decoder_depth,
    depth_reference,
    paired_speed,
    ratio_of_medians,
    rotated,
    rounds_per_block,
)


def test_ratio_of_medians_on_synthetic_timings():
    reference = [4.0, 1.0, 3.0, 100.0, 2.0]  # median 3 (the outlier does not move it)
    setting = [1.0, 2.0, 1.5, 0.5, 50.0]  # median 1.5
    assert ratio_of_medians(reference, setting) == pytest.approx(2.0)


def test_bootstrap_interval_matches_scipy_percentile_bootstrap():
    rng = np.random.default_rng(1)
    reference = rng.gamma(5.0, 2.0, size=300)
    setting = reference / 1.6 * rng.lognormal(0.0, 0.2, size=300)  # paired, about 1.6x faster
    ours = bootstrap_ratio_interval(reference, setting, resamples=4000, seed=0)
    theirs = stats.bootstrap(
        (reference, setting),
        lambda a, b, axis: np.median(a, axis=axis) / np.median(b, axis=axis),
        paired=True,
        vectorized=True,
        n_resamples=4000,
        method="percentile",
        random_state=np.random.default_rng(5),
    ).confidence_interval
    # independent resampling streams: endpoints agree to Monte Carlo error
    assert ours[0] == pytest.approx(theirs.low, rel=0.01)
    assert ours[1] == pytest.approx(theirs.high, rel=0.01)
    assert ours[0] < ratio_of_medians(reference, setting) < ours[1]


def test_bootstrap_of_identical_pairs_is_the_point_and_seeded():
    same = [1.0, 2.0, 3.0, 4.0]
    assert bootstrap_ratio_interval(same, [2 * x for x in same]) == [0.5, 0.5]
    a, b = [1.0, 5.0, 2.0, 8.0, 3.0], [2.0, 1.0, 4.0, 2.0, 1.0]
    assert bootstrap_ratio_interval(a, b, seed=3) == bootstrap_ratio_interval(a, b, seed=3)


def test_blocks_of_one_call_resample_exactly_as_calls_do():
    rng = np.random.default_rng(2)
    reference = rng.gamma(5.0, 2.0, size=60)
    setting = reference / 1.3 * rng.lognormal(0.0, 0.1, size=60)
    by_call = bootstrap_ratio_interval(reference, setting, seed=4)
    assert bootstrap_ratio_interval(reference, setting, seed=4, blocks=list(range(60))) == by_call
    # fewer than MIN_BLOCKS blocks: the interval resamples calls, and the entry says so
    few = [i % (MIN_BLOCKS - 1) for i in range(60)]
    assert bootstrap_ratio_interval(reference, setting, seed=4, blocks=few) == by_call
    entry = paired_speed({"wall": reference}, {"wall": setting}, "main_only", blocks=few)
    assert entry["interval_unit"] == "call" and entry["blocks"] == MIN_BLOCKS - 1


def drifting_run(seed: int, blocks: int = 10, calls: int = 40) -> tuple:
    """A run whose true ratio drifts from block to block (N(1.10, 0.04) per block, as the machine's
    state does between stretches of time), with 1% noise per call: (reference, setting, labels)."""
    rng = np.random.default_rng(seed)
    block_ratio = rng.normal(1.10, 0.04, size=blocks)
    labels = np.repeat(np.arange(blocks), calls)
    setting = rng.gamma(400.0, 1e-5, size=blocks * calls)
    reference = setting * block_ratio[labels] * rng.lognormal(0.0, 0.01, size=len(labels))
    return reference, setting, labels


def test_block_intervals_cover_a_drifting_ratio_where_call_intervals_do_not():
    """60 simulated runs whose ratio drifts between blocks around 1.10: the interval over blocks
    holds 1.10 about as often as a 95% interval should; the interval over calls, which only
    measures one run's own stretch of time, misses it in most runs."""
    covered = {"call": 0, "block": 0}
    runs = 60
    for seed in range(runs):
        reference, setting, labels = drifting_run(seed)
        for unit, blocks in (("call", None), ("block", labels)):
            low, high = bootstrap_ratio_interval(reference, setting, 200, seed, blocks=blocks)
            covered[unit] += low < 1.10 < high
    assert covered["block"] >= 0.85 * runs
    assert covered["call"] <= 0.6 * runs


def test_paired_timer_labels_calls_by_block_of_rounds():
    timer = PairedTimer(["a", "b"], block_rounds=3)
    for _ in range(7):
        timer.round({"a": lambda: None, "b": lambda: None})
    assert timer.blocks() == [0, 0, 0, 1, 1, 1, 2]
    timer.cpu = {"a": [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 4.0], "b": [1.0] * 7}
    assert timer.block_speeds("b", "a") == [1.0, 2.0, 4.0]  # each block's own ratio
    assert PairedTimer(["a"]).blocks() is None
    with pytest.raises(ValueError, match="block_rounds=0"):
        PairedTimer(["a"], block_rounds=0)


def test_fewer_than_100_resamples_and_unpaired_timings_are_refused():
    with pytest.raises(ValueError, match=r"resamples=99: .* >= 100 resamples"):
        bootstrap_ratio_interval([1.0, 2.0], [1.0, 2.0], resamples=99)
    with pytest.raises(ValueError, match="same number of calls"):
        bootstrap_ratio_interval([1.0, 2.0], [1.0])


def test_rounds_rotate_the_call_order():
    assert rotated(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert rotated(["a", "b", "c"], 1) == ["b", "c", "a"]
    assert rotated(["a", "b", "c"], 5) == ["c", "a", "b"]
    order = []
    timer = PairedTimer(["a", "b", "c"])
    calls = {n: (lambda x, n=n: order.append(n) or x) for n in "abc"}
    for _ in range(3):
        assert timer.round(calls, 7) == {"a": 7, "b": 7, "c": 7}
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert all(len(timer.cpu[n]) == len(timer.wall[n]) == 3 for n in "abc")


def test_a_reference_that_was_not_timed_is_refused_naming_the_field():
    with pytest.raises(
        ValueError,
        match=r"^env.speed_reference='main_only_m3' was not timed.*set env.speed_reference",
    ):
        check_reference("main_only_m3", ["decoder", "main_only"], "env.speed_reference")
    timer = PairedTimer(["decoder", "main_only"])
    timer.add("decoder", 1.0, 1.0)
    timer.add("main_only", 2.0, 2.0)
    with pytest.raises(ValueError, match="'main_only_m2' was not timed"):
        timer.speed("decoder", "main_only_m2")
    entry = timer.speed("decoder", "main_only", resamples=100)
    assert entry["ratio"] == 2.0 and entry["reference"] == "main_only" and entry["clock"] == "cpu"


def test_speed_entry_keeps_both_clocks_and_reads_the_named_one():
    reference = {"cpu": [2.0, 2.0, 2.0], "wall": [6.0, 6.0, 6.0]}
    setting = {"cpu": [1.0, 1.0, 1.0], "wall": [2.0, 2.0, 2.0]}
    cpu = paired_speed(reference, setting, "main_only", clock="cpu", resamples=100)
    wall = paired_speed(reference, setting, "main_only", clock="wall", resamples=100)
    assert cpu["ratio"] == 2.0 and cpu["wall_ratio"] == 3.0 and cpu["ci95"] == [2.0, 2.0]
    assert wall["ratio"] == 3.0 and wall["clock_name"] == "wall"
    assert cpu["median_ms"] == {"cpu": 1000.0, "wall": 2000.0}


def test_depth_reference_of_truncated_decoders(tiny_stack_models):
    from rsdvla.decoding import (
        AdaptiveDepthDecoder,
        AgreementAcceptance,
        DraftOnlyDecoder,
        MainOnlyDecoder,
        SpeculativeDecoder,
    )

    main, draft, tokenizer = tiny_stack_models
    layers = main.config.num_code_layers
    cases = {
        MainOnlyDecoder(main, tokenizer): None,
        MainOnlyDecoder(main, tokenizer, depth=3): "main_only_m3",
        SpeculativeDecoder(main, draft, tokenizer, AgreementAcceptance(0.0)): None,
        SpeculativeDecoder(
            main, draft, tokenizer, AgreementAcceptance(0.0), depth=3
        ): "main_only_m3",
        AdaptiveDepthDecoder(main, tokenizer, depth=4): "main_only_m4",
        DraftOnlyDecoder(main, draft, tokenizer): f"main_only_m{draft.num_draft_layers}",
    }
    for decoder, expected in cases.items():
        assert depth_reference(decoder_depth(decoder), layers) == expected, repr(decoder)


def test_rounds_per_block_splits_into_at_most_that_many_blocks():
    assert rounds_per_block(400, 10) == 40
    assert rounds_per_block(12, 5) == 3  # 4 blocks of 3: never more blocks than asked
    assert rounds_per_block(400, 1) is None


def test_speed_entries_carry_the_load_the_timer_metered():
    class Meter:  # stands in for machine.NeighbourLoad (its own test measures real processes)
        def cores(self):
            return 0.4567

    timer = PairedTimer(["main_only", "rsd"])
    for _ in range(3):
        timer.round({"main_only": lambda: None, "rsd": lambda: None})
    timer.neighbour_load = Meter()
    assert timer.speed("rsd")["neighbour_cores"] == 0.46
    entry = paired_speed({"wall": [2.0, 2.0]}, {"wall": [1.0, 1.0]}, "main_only")
    assert entry["neighbour_cores"] is None  # not metered: unknown, never 0
