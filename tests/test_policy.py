"""RSDPolicy: action queue, un-normalization, gripper conversion, per-chunk stats, baseline timing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rsdvla.data.normalization import ActionNormalizer
from rsdvla.decoding import DecodeResult, DecodeStats
from rsdvla.policy import RSDPolicy, batch_observation, read_decode_stats, to_env_actions

H = 6


class FakeBackbone:
    """h = proprio padded to H; counts calls."""

    hidden_dim = H
    required_obs = ("proprio",)

    def __init__(self):
        self.calls = 0

    def encode(self, batch):
        self.calls += 1
        proprio = torch.as_tensor(np.asarray(batch["proprio"]), dtype=torch.float32)
        return torch.nn.functional.pad(proprio, (0, H - proprio.shape[1]))


class FakeDecoder:
    """Returns a fixed normalized chunk [B, T, 7] (row t = t / 10 on dims 0..5, gripper given)."""

    k = 3

    def __init__(
        self,
        gripper=(0.3, -0.1, 0.0, 1.0, -1.0, 0.7, -0.7, 0.2),
        horizon=8,
        log=None,
        name="decoder",
    ):
        self.gripper = gripper
        self.horizon = horizon
        self.calls = 0
        self.log = log
        self.name = name

    def chunk(self) -> torch.Tensor:
        t = torch.arange(self.horizon, dtype=torch.float32)[:, None] / 10
        chunk = t.repeat(1, 7)
        chunk[:, 6] = torch.tensor(self.gripper[: self.horizon])
        return chunk

    def __call__(self, h):
        self.calls += 1
        if self.log is not None:
            self.log.append(self.name)
        b = h.shape[0]
        stats = DecodeStats(
            accepted_layers=torch.full((b,), 2),
            layer_accepted=torch.tensor([[True, True, False]] * b),
            token_agreement=torch.ones(b, 3),
            num_main_steps=1,
            seconds={"draft": 0.001, "verify": 0.002, "main_steps": 0.003, "detokenize": 0.0005},
        )
        return DecodeResult(
            codes=torch.zeros(b, 8, 2, 4, dtype=torch.long),
            actions=self.chunk().expand(b, -1, -1),
            stats=stats,
        )


NORMALIZER = ActionNormalizer(q01=[-0.2] * 6 + [-1.0], q99=[0.6] * 6 + [1.0])


def obs(value: float = 0.0) -> dict:
    return {
        "proprio": np.full(8, value, np.float32)[:4],
        "instruction": "put the bowl on the plate",
    }


def make_policy(**kwargs) -> tuple[RSDPolicy, FakeBackbone, FakeDecoder]:
    backbone, decoder = FakeBackbone(), kwargs.pop("decoder", FakeDecoder())
    return RSDPolicy(backbone, decoder, NORMALIZER, **kwargs), backbone, decoder


def test_predict_action_chunk_unnormalizes_with_statistics():
    policy, _, _ = make_policy()
    chunk = policy.predict_action_chunk(batch_observation(obs()))
    assert chunk.shape == (1, 8, 7)
    # normalized x -> (x + 1) / 2 * (0.6 - -0.2) + -0.2 ; x = 0.5 -> 0.4, x = 0 -> 0.2, x = 0.7 -> 0.48
    np.testing.assert_allclose(chunk[0, 5, :6], 0.4, atol=1e-6)
    np.testing.assert_allclose(chunk[0, 0, :6], 0.2, atol=1e-6)
    np.testing.assert_allclose(chunk[0, 7, :6], 0.48, atol=1e-6)


def test_gripper_binarized_at_zero_in_libero_convention():
    policy, _, _ = make_policy()
    chunk = policy.predict_action_chunk(batch_observation(obs()))
    # gripper normalized values (left as is by the normalizer): 0.3 -0.1 0 1 -1 0.7 -0.7 0.2
    np.testing.assert_array_equal(chunk[0, :, 6], [1, -1, -1, 1, -1, 1, -1, 1])


def test_invert_gripper_is_openvla_oft_conversion():
    # RLDS convention [0, 1] (1 = open): -sign(2g - 1); 0.5 -> 0 as in OpenVLA-OFT
    actions = np.zeros((4, 7))
    actions[:, 6] = [0.8, 0.2, 0.5, 1.0]
    np.testing.assert_array_equal(
        to_env_actions(actions, invert_gripper=True)[:, 6], [-1, 1, 0, -1]
    )
    np.testing.assert_array_equal(to_env_actions(actions, invert_gripper=False)[:, 6], [1, 1, 1, 1])
    assert actions[0, 6] == 0.8  # input untouched


def test_action_queue_refills_with_one_decoder_call_per_chunk():
    policy, backbone, decoder = make_policy()
    expected = policy.predict_action_chunk(batch_observation(obs()))[0]
    policy.reset()
    decoder.calls = backbone.calls = 0
    actions = [policy.select_action(obs()) for _ in range(8)]
    assert decoder.calls == 1 and backbone.calls == 1
    np.testing.assert_allclose(np.stack(actions), expected)
    policy.select_action(obs())
    assert decoder.calls == 2
    assert len(policy.chunk_log) == 2
    policy.reset()
    assert policy.chunk_log == []
    policy.select_action(obs())
    assert decoder.calls == 3  # reset dropped the 7 queued actions


def test_chunk_size_shorter_than_horizon_executes_a_prefix():
    policy, _, decoder = make_policy(chunk_size=4)
    actions = np.stack([policy.select_action(obs()) for _ in range(8)])
    assert decoder.calls == 2
    np.testing.assert_allclose(actions[4], actions[0])  # each chunk restarts at row 0


def test_decoder_with_short_horizon_fails_with_shape():
    policy, _, _ = make_policy(decoder=FakeDecoder(horizon=4))
    with pytest.raises(ValueError, match=r"expected \[B, T>=8, 7\]"):
        policy.select_action(obs())


def test_chunk_stats_record_acceptance_and_latency():
    policy, _, _ = make_policy()
    policy.select_action(obs())
    (stats,) = policy.chunk_log
    assert stats.accepted_layers == [2]
    assert stats.layer_acceptance == [1.0, 1.0, 0.0]
    latency = stats.latency_s
    assert {"backbone", "draft", "verify", "main_steps", "detokenize", "decode", "total"} <= set(
        latency
    )
    assert latency["draft"] == 0.001
    assert latency["total"] == pytest.approx(latency["backbone"] + latency["decode"])
    assert "baseline_decode" not in latency


def test_baseline_decodes_the_same_hidden_state_interleaved():
    log: list[str] = []
    decoder = FakeDecoder(log=log, name="decoder")
    baseline = FakeDecoder(log=log, name="baseline", gripper=(-1.0,) * 8)
    policy, _, _ = make_policy(decoder=decoder, baseline=baseline)
    first = policy.predict_action_chunk(batch_observation(obs()))
    policy.predict_action_chunk(batch_observation(obs()))
    assert log == ["decoder", "baseline", "baseline", "decoder"]
    assert all("baseline_decode" in c.latency_s for c in policy.chunk_log)
    assert first[0, 0, 6] == 1  # actions come from the decoder, never from the baseline


def test_read_decode_stats_falls_back_to_prefix_lengths():
    class Stats:
        accepted_layers = torch.tensor([0, 2, 3])
        seconds = {"verify": 0.5}

    class Result:
        stats = Stats()

    accepted, per_layer, seconds = read_decode_stats(Result(), num_draft_layers=3)
    assert accepted == [0, 2, 3]
    assert per_layer == pytest.approx([2 / 3, 2 / 3, 1 / 3])
    assert seconds == {"verify": 0.5}


def test_batch_observation_needs_instruction():
    with pytest.raises(KeyError, match="instruction"):
        batch_observation({"proprio": np.zeros(8)})
    batch = batch_observation({"proprio": np.zeros(8), "instruction": "x"})
    assert batch["proprio"].shape == (1, 8) and batch["instruction"] == ["x"]


def test_warmup_runs_decoder_and_baseline_untimed():
    baseline = FakeDecoder()
    policy, _, decoder = make_policy(baseline=baseline)
    policy.warmup(calls=2)
    assert decoder.calls == 2 and baseline.calls == 2
    assert policy.chunk_log == []
