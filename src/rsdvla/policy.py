"""``RSDPolicy``: backbone + decoder + normalizer behind LeRobot's policy contract.

    reset()                                   clear the action queue and the chunk log
    predict_action_chunk(obs_batch) -> [B, chunk_size, 7]   env-ready actions (float64)
    select_action(obs) -> [7]                 pop from a queue refilled by one decoder call

One chunk: ``obs -> backbone.encode -> h [B, H] -> decoder(h) -> normalized actions [B, T, 7]
-> un-normalize (the checkpoint's statistics) -> gripper conversion -> [B, chunk_size, 7]``.
Every decoder call appends a :class:`ChunkStats` to ``policy.chunk_log`` (accepted layers,
per-layer acceptance, latency per stage) that the LIBERO runner writes to its episode records.

Gripper (last dim). Our tokenizer/heads are trained on LIBERO-native actions (-1 = open,
+1 = close), so by default the gripper is binarized at 0 (``> 0 -> +1``, else ``-1``).
``invert_gripper=True`` is OpenVLA-OFT's conversion for policies that output the RLDS
convention (gripper in [0, 1], 1 = open): ``sign(2 * g - 1)``, then flip the sign.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rsdvla.decoding.stats import speculated_acceptance, synchronize, timed_call
from rsdvla.envs.conversions import (
    binarize_gripper,
    invert_gripper_action,
    normalize_gripper_action,
)

__all__ = ["RSDPolicy", "ChunkStats", "to_env_actions", "read_decode_stats", "batch_observation"]


def to_env_actions(actions: np.ndarray, invert_gripper: bool = False) -> np.ndarray:
    """Un-normalized actions ``[..., 7]`` -> actions LIBERO's ``env.step`` takes (float64 copy).

    ``invert_gripper=False``: gripper already in LIBERO's convention, binarized at 0 (-1 open /
    +1 close). ``True``: OpenVLA-OFT's conversion of RLDS-convention outputs (``[0, 1]``, 1 = open):
    ``-sign(2 * g - 1)``.
    """
    if invert_gripper:
        return invert_gripper_action(normalize_gripper_action(actions, binarize=True))
    return binarize_gripper(actions)


def batch_observation(obs: Mapping[str, Any]) -> dict[str, Any]:
    """One observation (``proprio [8]``, images ``[h, w, 3]``, ``instruction: str``, ...) -> a batch of 1."""
    batch: dict[str, Any] = {}
    for key, value in obs.items():
        if key == "instruction":
            batch[key] = [value] if isinstance(value, str) else list(value)
        elif isinstance(value, torch.Tensor):
            batch[key] = value.unsqueeze(0)
        else:
            batch[key] = np.asarray(value)[None]
    if "instruction" not in batch:
        raise KeyError(
            "RSDPolicy.select_action: observation lacks `instruction` (the task's language instruction)"
        )
    return batch


@dataclass
class ChunkStats:
    """What one decoder call cost and accepted (B samples decoded together).

    ``accepted_layers``: drafted layers accepted per sample ``[B]`` (0 for main-only; None without stats).
    ``layer_acceptance``: per drafted layer, the fraction of the B samples that accepted it ``[k]``.
    ``latency_s``: seconds per stage: ``backbone``, the decoder's own stages (``draft``, ``verify``,
    ``main_steps``, ``detokenize``), ``decode`` (decoder wall time), ``total`` (backbone + decode)
    and, with a baseline, ``baseline_decode`` (main-only on the same hidden state).
    """

    accepted_layers: list[int] | None
    layer_acceptance: list[float] | None
    latency_s: dict[str, float] = field(default_factory=dict)
    # rsdvla.evaluation.divergence: this row vs main-only (only with a baseline), and the
    # relative move of h since the previous chunk (None for an episode's first chunk)
    divergence: dict | None = None
    hidden_shift: float | None = None


def _as_list(value: Any) -> list | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    return np.asarray(value).tolist()


def read_decode_stats(
    result: Any, num_draft_layers: int | None = None
) -> tuple[list[int] | None, list[float] | None, dict[str, float]]:
    """``DecodeResult.stats`` (``rsdvla.decoding.DecodeStats``) -> (accepted layers ``[B]``,
    per-layer acceptance ``[k]`` = share of the B samples that accepted drafted layer j,
    seconds per decoder stage).

    Acceptance is read through :func:`rsdvla.decoding.stats.speculated_acceptance`, the same
    function the offline evaluation uses: a call that drafted nothing (main-only, or RSD's
    ``skip_below`` fallback) gives ``(None, None)``, never a rejection. Without ``layer_accepted``
    the per-layer acceptance follows from the prefix lengths (layer j accepted iff
    ``accepted > j``) when ``num_draft_layers`` is known.
    """
    stats = getattr(result, "stats", None)
    if stats is None:
        return None, None, {}
    accepted_t, flags_t = speculated_acceptance(stats)
    accepted = _as_list(accepted_t)
    if accepted is not None:
        accepted = [int(a) for a in np.ravel(accepted)]
    per_layer = None
    if flags_t is not None:
        flags = np.asarray(_as_list(flags_t), dtype=np.float64)
        per_layer = flags.mean(0).tolist() if flags.ndim == 2 and flags.shape[1] else None
    elif accepted is not None and num_draft_layers:
        per_layer = [
            float(np.mean([a > layer for a in accepted])) for layer in range(num_draft_layers)
        ]
    seconds = getattr(stats, "seconds", None) or {}
    return accepted, per_layer, {str(stage): float(s) for stage, s in seconds.items()}


class RSDPolicy:
    """A VLA policy whose actions are decoded from backbone hidden states by ``decoder``.

    Args:
        backbone: ``encode(batch) -> Tensor[B, H]`` (``rsdvla.backbones.Backbone``).
        decoder: ``decoder(h[B, H]) -> DecodeResult(codes, actions[B, T, 7] normalized, stats)``.
        normalizer: ``ActionNormalizer`` holding the checkpoint's statistics.
        chunk_size: actions executed open loop per decoder call (``<= T``).
        baseline: optional main-only decoder; it decodes the same ``h`` every call (order
            alternating with ``decoder``) to time it and to record how far the decoder's codes
            and actions depart from it (``ChunkStats.divergence``); its actions are not executed.
        invert_gripper: see :func:`to_env_actions`.
        device: where ``h`` goes before decoding (None: leave it where the backbone put it).
    """

    def __init__(
        self,
        backbone,
        decoder,
        normalizer,
        chunk_size: int = 8,
        baseline=None,
        *,
        invert_gripper: bool = False,
        device: torch.device | str | None = None,
    ):
        if chunk_size < 1:
            raise ValueError(f"RSDPolicy: chunk_size={chunk_size} must be >= 1")
        self.backbone = backbone
        self.decoder = decoder
        self.normalizer = normalizer
        self.chunk_size = int(chunk_size)
        self.baseline = baseline
        self.invert_gripper = bool(invert_gripper)
        self.device = None if device is None else torch.device(device)
        self.num_draft_layers = _num_draft_layers(decoder)
        self.chunk_log: list[ChunkStats] = []
        self._queue: deque[np.ndarray] = deque()
        self._calls = 0
        self._previous_h: torch.Tensor | None = None  # h of the episode's last chunk

    @property
    def required_obs(self) -> tuple[str, ...]:
        """Observation keys the backbone reads (besides ``instruction``)."""
        return tuple(getattr(self.backbone, "required_obs", ()))

    def reset(self) -> None:
        """Start a new episode: empty the action queue and the chunk log."""
        self._queue.clear()
        self.chunk_log = []
        self._previous_h = None

    def seed_episode(self, episode_seed: int) -> None:
        """Re-seed the decoders' private generators (and RSD's ``skip_below`` state) for one episode.

        ``episode_seed`` comes from the evaluation seed and the episode's identity (task, trial), so
        an episode's actions do not depend on which episodes ran before it in the process: a
        resumed evaluation equals an uninterrupted one.
        """
        for decoder in (self.decoder, self.baseline):
            if hasattr(decoder, "reseed"):
                decoder.reseed(int(episode_seed))

    @torch.inference_mode()
    def predict_action_chunk(self, obs_batch: Mapping[str, Any]) -> np.ndarray:
        """Observations of B samples (backbone batch format) -> env-ready actions ``[B, chunk_size, 7]``."""
        h, backbone_s = timed_call(self.backbone.encode, obs_batch)
        if self.device is not None:
            h = h.to(self.device)
        result, decode_s, baseline_s, baseline_result = self._decode(h)
        actions = result.actions
        actions = (
            actions.detach().float().cpu().numpy()
            if isinstance(actions, torch.Tensor)
            else np.asarray(actions, np.float32)
        )
        if actions.ndim != 3 or actions.shape[1] < self.chunk_size:
            raise ValueError(
                f"RSDPolicy: decoder returned actions of shape {tuple(actions.shape)}; expected [B, T>={self.chunk_size}, 7] "
                "(lower chunk_size or use a tokenizer with a longer chunk)"
            )
        accepted, per_layer, stage_s = read_decode_stats(result, self.num_draft_layers)
        latency = {
            "backbone": backbone_s,
            **stage_s,
            "decode": decode_s,
            "total": backbone_s + decode_s,
        }
        if baseline_s is not None:
            latency["baseline_decode"] = baseline_s
        env_actions = self._env_actions(actions)
        divergence, shift = self._chunk_diagnostics(
            h, result, baseline_result, actions, env_actions
        )
        # single-env chunk log (B = 1): row 0, as ``accepted_layers[0]`` in rollout._chunk_fields
        self.chunk_log.append(ChunkStats(accepted, per_layer, latency, divergence[0], shift[0]))
        return env_actions

    def _env_actions(self, normalized: np.ndarray) -> np.ndarray:
        """Normalized ``[B, T, 7]`` -> the executed chunk as the env takes it ``[B, chunk_size, 7]``."""
        raw = self.normalizer.unnormalize(normalized[:, : self.chunk_size])
        return to_env_actions(raw, self.invert_gripper)

    def _chunk_diagnostics(self, h, result, baseline_result, actions, env_actions):
        """Per row: divergence from main-only (None without a baseline) and hidden-state shift
        (``rsdvla.evaluation.divergence``); untimed, and no extra model call."""
        from rsdvla.evaluation.divergence import divergence_rows, hidden_shift

        shift = hidden_shift(h, self._previous_h)
        self._previous_h = h.detach().clone()
        if baseline_result is None:
            return [None] * len(shift), shift
        base = baseline_result.actions.detach().float().cpu().numpy()
        rows = divergence_rows(
            result.codes,
            baseline_result.codes,
            actions[:, : self.chunk_size],
            base[:, : self.chunk_size],
            env_actions,
            self._env_actions(base),
            getattr(getattr(result, "stats", None), "decoded_layers", None),
        )
        return rows, shift

    def _decode(self, h: torch.Tensor) -> tuple[Any, float, float | None, Any]:
        """Decode ``h`` with the decoder (and the baseline, alternating which runs first):
        ``(result, decode_s, baseline_s, baseline_result)`` (None, None without a baseline)."""
        self._calls += 1
        if self.baseline is None:
            result, decode_s = timed_call(self.decoder, h)
            return result, decode_s, None, None
        if self._calls % 2:
            result, decode_s = timed_call(self.decoder, h)
            baseline, baseline_s = timed_call(self.baseline, h)
        else:
            baseline, baseline_s = timed_call(self.baseline, h)
            result, decode_s = timed_call(self.decoder, h)
        return result, decode_s, baseline_s, baseline

    @torch.inference_mode()
    def warmup(self, calls: int = 2) -> None:
        """Run the decoder (and baseline) ``calls`` times on a zero hidden state, untimed, so that
        one-off costs (allocator, kernel selection, CUDA init) stay out of the measured chunks.
        Draws no random numbers from the global generators in greedy decoding; call it before
        seeding an episode."""
        width = getattr(self.backbone, "hidden_dim", None)
        if width is None:
            return
        h = torch.zeros(1, int(width), device=self.device)
        for _ in range(calls):
            self.decoder(h)
            if self.baseline is not None:
                self.baseline(h)
        synchronize()

    def select_action(self, obs: Mapping[str, Any]) -> np.ndarray:
        """One observation (unbatched, with ``instruction``) -> the next action ``[7]``.

        Calls the decoder once every ``chunk_size`` steps; the chunk is executed open loop.
        """
        if not self._queue:
            chunk = self.predict_action_chunk(batch_observation(obs))
            self._queue.extend(chunk[0])
        return self._queue.popleft()


def _num_draft_layers(decoder) -> int | None:
    """Layers the decoder drafts (``SpeculativeDecoder.k``, else its draft's k), None for main-only."""
    k = getattr(decoder, "k", None)
    if k is None:
        k = getattr(getattr(decoder, "draft", None), "num_draft_layers", None)
    return int(k) if k is not None else None
