"""Per-episode decoder seeding: an episode's actions do not depend on the episodes run before it.

A sampled RSD decoder with a private generator (``decoder.acceptance.seed``) runs through the
LIBERO runner with the fake env of test_libero_runner: the episode (task 0, trial 1) run alone
in a fresh directory (as a resumed evaluation would) must give the same actions as when it
follows trial 0 in one uninterrupted run.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_libero_runner import FakeEnvs, settings
from test_policy import NORMALIZER, FakeBackbone

from rsdvla.decoding import ExactAcceptance, MainOnlyDecoder, SamplingAcceptance, SpeculativeDecoder
from rsdvla.decoding.rows import RowState
from rsdvla.evaluation.libero.runner import LiberoRunner
from rsdvla.models import DraftModel, MainModel
from rsdvla.policy import RSDPolicy
from rsdvla.tokenizer import RFSQTokenizer

H = 6  # FakeBackbone's width

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class LoggingPolicy(RSDPolicy):
    """Keeps every chunk of every episode (a new list per episode slot), in slot order."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.episodes: list[list[np.ndarray]] = []
        self.seeds: list[int] = []

    def new_slot(self, episode_seed):
        slot = super().new_slot(episode_seed)
        self.episodes.append([])
        self.seeds.append(int(episode_seed))
        slot.log = self.episodes[-1]
        return slot

    def predict_action_chunk(self, obs_batch, slots=None):
        chunk = super().predict_action_chunk(obs_batch, slots)
        for slot, rows in zip(slots, chunk, strict=True):
            slot.log.append(rows.copy()[None])
        return chunk


def sampled_policy() -> LoggingPolicy:
    torch.manual_seed(0)
    main = MainModel(
        hidden_dim=H,
        d_model=16,
        n_layers=1,
        n_heads=2,
        num_code_layers=3,
        tokens_per_layer=16,
        levels=5,
    )
    draft = DraftModel(
        hidden_dim=H, d_model=16, n_heads=2, num_draft_layers=2, tokens_per_layer=16, levels=5
    )
    tokenizer = RFSQTokenizer(chunk_size=8, latent_dim=2, num_layers=3, levels=5, hidden=8)
    rule = SamplingAcceptance(temperature=1.0, seed=3)
    decoder = SpeculativeDecoder(main.eval(), draft.eval(), tokenizer.eval(), rule)
    policy = LoggingPolicy(
        FakeBackbone(), decoder, NORMALIZER, baseline=MainOnlyDecoder(main, tokenizer)
    )
    return policy


def run(tmp_path, name: str, policy, first_trial: int, trials: int) -> list[list[np.ndarray]]:
    runner = LiberoRunner(
        settings(task_ids=(0,), trials=trials, first_trial=first_trial, max_steps=24),
        tmp_path / name,
        envs=FakeEnvs(),
    )
    runner.run(policy)
    return policy.episodes


def test_an_episode_run_alone_equals_the_same_episode_after_another(tmp_path):
    both = run(tmp_path, "both", sampled_policy(), first_trial=0, trials=2)
    alone = run(tmp_path, "alone", sampled_policy(), first_trial=1, trials=1)
    assert len(both) == 2 and len(alone) == 1 and len(alone[0]) == 3  # 24 steps = 3 chunks
    np.testing.assert_array_equal(np.stack(alone[0]), np.stack(both[1]))
    # the two episodes do sample differently (the check above is not trivially true)
    assert not np.array_equal(np.stack(both[0]), np.stack(both[1]))


def _decode_rows(decoder, h, seeds, calls=3):
    """``calls`` consecutive decoder calls on ``h`` with one row state per seed -> codes per call."""
    rows = [RowState(seed) for seed in seeds]
    return [decoder(h, rows).codes for _ in range(calls)], rows


@pytest.mark.parametrize("rule", ["sampling", "exact"])
@pytest.mark.parametrize("skip_below", [None, 1.5])
def test_a_row_decodes_the_same_whoever_shares_its_batch(rule, skip_below):
    """Each row of a batch of 3 gives the codes (and the skip_below state) it gives alone, call
    after call, for the sampling rule and for a greedy one, with and without skip_below."""
    policy = sampled_policy()
    decoder = policy.decoder
    decoder.skip_below, decoder.probe_every = skip_below, 2
    if rule == "exact":
        decoder.acceptance = ExactAcceptance()
    torch.manual_seed(1)
    h = torch.randn(3, H)
    seeds = [11, 12, 13]
    together, rows_together = _decode_rows(decoder, h, seeds)
    for b, seed in enumerate(seeds):
        alone, (row_alone,) = _decode_rows(decoder, h[b : b + 1], [seed])
        for call_together, call_alone in zip(together, alone, strict=True):
            torch.testing.assert_close(call_together[b : b + 1], call_alone, rtol=0, atol=0)
        assert rows_together[b] == row_alone
    if rule == "sampling":  # rows with other seeds do sample differently (not trivially equal)
        assert not torch.equal(together[0][0], together[0][1])
    if skip_below is not None:  # the 3 rows did run through the fallback at some call
        assert any(
            r.accepted_ema is not None and r.accepted_ema < skip_below for r in rows_together
        )


def test_the_same_row_state_repeats_and_another_seed_differs():
    decoder = sampled_policy().decoder
    h = torch.randn(1, H)
    first, _ = _decode_rows(decoder, h, [5])
    again, _ = _decode_rows(decoder, h, [5])
    other, _ = _decode_rows(decoder, h, [6])
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
