"""Divergence from main-only in episode records equals a direct computation on the same h."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_decoding import HIDDEN, tiny_stack
from test_libero_runner import FakeEnv
from test_policy import NORMALIZER

from rsdvla.decoding import MainOnlyDecoder, SpeculativeDecoder
from rsdvla.decoding.acceptance import AgreementAcceptance
from rsdvla.evaluation.libero.episodes import EpisodeSpec
from rsdvla.evaluation.libero.runner import LiberoEvalSettings
from rsdvla.evaluation.libero.scheduler import run_episodes
from rsdvla.evaluation.libero.workers import InProcessEnvs
from rsdvla.evaluation.reports.aggregate import summarize
from rsdvla.policy import RSDPolicy

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CHUNK = 2  # tiny_stack's tokenizer decodes 2 actions per call


class ProjectingBackbone:
    """h = a fixed random projection of proprio; keeps every h it produced in ``seen``."""

    hidden_dim = HIDDEN
    required_obs = ("proprio",)

    def __init__(self):
        self.weight = torch.randn(8, HIDDEN, generator=torch.Generator().manual_seed(3))
        self.seen: list[torch.Tensor] = []

    def encode(self, batch):
        proprio = torch.as_tensor(np.asarray(batch["proprio"]), dtype=torch.float32)
        h = 1.0 + torch.sin(proprio @ self.weight + 0.3 * len(self.seen))
        self.seen.append(h.clone())
        return h


def env_units(normalized: np.ndarray) -> np.ndarray:
    raw = NORMALIZER.unnormalize(normalized)
    out = raw.astype(np.float64).copy()
    out[..., 6] = np.where(raw[..., 6] > 0, 1.0, -1.0)  # LIBERO convention, binarized at 0
    return out


class OneEnv:
    """An env factory that hands out one given env."""

    def __init__(self, env):
        self.env = env

    def make(self, suite, task_id, settings):
        return self.env


def run_episode(env, policy, spec: EpisodeSpec, max_steps: int) -> dict:
    """One episode through the runner's episode loop (one env in process): its record."""
    records = []
    sims = InProcessEnvs(OneEnv(env), LiberoEvalSettings(max_steps=max_steps))
    run_episodes(sims, policy, [spec], 7, max_steps, lambda record, _: records.append(record))
    return records[0]


def run(decoder, baseline, steps=7):
    backbone = ProjectingBackbone()
    policy = RSDPolicy(backbone, decoder, NORMALIZER, chunk_size=CHUNK, baseline=baseline)
    env = FakeEnv(task_id=1, starts=[])  # task 1, trial 0: never succeeds, runs `steps` steps
    record = run_episode(env, policy, EpisodeSpec("libero_object", 1, 0), max_steps=steps)
    return record, backbone.seen


@pytest.mark.parametrize("depth", [None, 3])
def test_divergence_fields_equal_a_direct_computation(depth):
    main, draft, tokenizer = tiny_stack(draft_k=3)
    decoder = (
        SpeculativeDecoder(main, draft, tokenizer, AgreementAcceptance(0.0))
        if depth is None
        else MainOnlyDecoder(main, tokenizer, depth=depth)
    )
    reference = MainOnlyDecoder(main, tokenizer)
    record, seen = run(decoder, MainOnlyDecoder(main, tokenizer))
    div = record["divergence"]
    assert len(seen) == len(div["max_abs_norm"]) == len(record["accepted_layers"]) == 4
    for i, h in enumerate(seen):
        ours, main_only = decoder(h), reference(h)
        layers = ours.codes.shape[-1]
        expected_match = [
            float((ours.codes[0, ..., j] == main_only.codes[0, ..., j]).sum()) / 8
            if j < layers
            else None
            for j in range(8)
        ]
        assert div["token_match"][i] == pytest.approx(expected_match)
        a = ours.actions[0, :CHUNK].numpy()
        b = main_only.actions[0, :CHUNK].numpy()
        assert div["max_abs_norm"][i] == pytest.approx(np.abs(a - b)[:, :6].max(), abs=1e-6)
        assert div["max_abs_env"][i] == pytest.approx(
            np.abs(env_units(a) - env_units(b))[:, :6].max(), abs=1e-6
        )
        assert div["gripper_differs"][i] == bool((env_units(a)[:, 6] != env_units(b)[:, 6]).any())
        expected_shift = None if i == 0 else float((h - seen[i - 1]).norm() / seen[i - 1].norm())
        assert record["hidden_shift"][i] == pytest.approx(expected_shift, abs=1e-6)
    if depth is None:  # a lossy rule with a random draft departs from main-only somewhere
        assert any(m < 1 for row in div["token_match"] for m in row)
    else:
        assert all(row[3:] == [None] * 5 and row[:3] == [1.0] * 3 for row in div["token_match"])
        assert div["max_abs_norm"] != [0.0] * 4  # the prefix decodes other actions


def test_no_baseline_no_divergence_and_old_records_still_summarize():
    main, _, tokenizer = tiny_stack(draft_k=3)
    record, _ = run(MainOnlyDecoder(main, tokenizer), None)
    assert "divergence" not in record and len(record["hidden_shift"]) == 4
    old = {k: v for k, v in record.items() if k not in ("divergence", "hidden_shift")}
    assert summarize([old])["episodes"] == 1


class DiagnosticEnv(FakeEnv):
    """FakeEnv that reports per-step diagnostics as LiberoEnv(diagnostics=True) does."""

    def step(self, action):
        obs, done, _ = super().step(action)
        info = {"diagnostics": {"ee_speed": 0.1 * self.t, "grasp": self.t >= 3}}
        return obs, done, info


def test_step_diagnostics_become_per_step_record_lists():
    main, _, tokenizer = tiny_stack(draft_k=3)
    policy = RSDPolicy(ProjectingBackbone(), MainOnlyDecoder(main, tokenizer), NORMALIZER, CHUNK)
    record = run_episode(
        DiagnosticEnv(1, []), policy, EpisodeSpec("libero_object", 1, 0), max_steps=5
    )
    assert record["diagnostics"] == {
        "ee_speed": pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5]),
        "grasp": [False, False, True, True, True],
        "chunk": [0, 0, 1, 1, 2],  # two steps per chunk: the step's chunk in accepted_layers etc.
    }
    plain, _ = run(MainOnlyDecoder(main, tokenizer), None)
    assert "diagnostics" not in plain


def test_env_diagnostics_setting_reaches_the_env_and_not_the_identity(tmp_path):
    from test_libero_runner import FakeEnvs, fake_policy, settings

    from rsdvla.evaluation.libero.runner import LiberoRunner

    made = []

    class Envs(FakeEnvs):
        def make(self, suite, task_id, s):
            made.append(s.diagnostics)
            return super().make(suite, task_id, s)

    LiberoRunner(settings(diagnostics=True), tmp_path / "on", Envs()).run(fake_policy())
    LiberoRunner(settings(), tmp_path / "off", Envs()).run(fake_policy())
    assert made == [True] * 3 + [False] * 3
    import json

    on, off = (json.loads((tmp_path / d / "run.json").read_text()) for d in ("on", "off"))
    assert on["identity"] == off["identity"]  # logging does not change what an episode means


class DiagnosticEnvs:
    """The fake env factory of the runner tests, handing out :class:`DiagnosticEnv` s."""

    def __init__(self):
        from test_libero_runner import FakeEnvs

        self.inner = FakeEnvs()

    def num_tasks(self, suite):
        return self.inner.num_tasks(suite)

    def prepare(self, settings):
        pass

    def make(self, suite, task_id, settings):
        return DiagnosticEnv(task_id, [])


def test_new_record_fields_are_per_episode_not_per_batch(tmp_path):
    """divergence, hidden_shift and diagnostics come out the same at one env and at 3 workers."""
    from test_libero_runner import fake_policy, lines, settings
    from test_parallel_eval import by_key

    from rsdvla.evaluation.libero.runner import LiberoRunner

    for name, n in (("one", 1), ("three", 3)):
        LiberoRunner(settings(num_envs=n), tmp_path / name, DiagnosticEnvs()).run(fake_policy())
    one, three = (lines(tmp_path / name / "episodes.jsonl") for name in ("one", "three"))
    assert all({"divergence", "diagnostics"} <= set(r) for r in one)
    assert any("hidden_shift" in r for r in one)  # episodes of more than one chunk
    assert len(three) == len(one) == 6 and by_key(three) == by_key(one)


def test_divergence_of_a_residual_vq_stack_counts_its_g_tokens_a_layer():
    """The LIBERO policy's divergence record at RVQ codes ``[B, G, L]`` (not RFSQ's
    ``[B, T, D, L]``): per layer the share of the G tokens equal to main-only's."""
    from rsdvla.models import DraftModel, MainModel
    from rsdvla.tokenizer import ChunkRVQTokenizer

    torch.manual_seed(0)
    space = dict(tokens_per_layer=2, levels=16, tokenizer_family="rvq", num_code_layers=5)
    main = MainModel(hidden_dim=HIDDEN, d_model=32, n_layers=2, n_heads=4, **space).eval()
    draft_space = {k: v for k, v in space.items() if k != "num_code_layers"}
    draft = DraftModel(hidden_dim=HIDDEN, d_model=32, n_heads=4, num_draft_layers=3, **draft_space)
    tokenizer = ChunkRVQTokenizer(
        chunk_size=CHUNK, groups=2, codebook_size=16, num_layers=5, latent_dim=8, hidden=16
    ).eval()
    decoder = SpeculativeDecoder(main, draft.eval(), tokenizer, AgreementAcceptance(0.0))
    reference = MainOnlyDecoder(main, tokenizer)
    record, seen = run(decoder, MainOnlyDecoder(main, tokenizer))
    for i, h in enumerate(seen):
        ours, main_only = decoder(h).codes[0], reference(h).codes[0]  # [G, L]
        assert ours.shape == (2, 5)
        expected = [float((ours[:, j] == main_only[:, j]).sum()) / 2 for j in range(5)]
        assert record["divergence"]["token_match"][i] == pytest.approx(expected)
    assert any(m < 1 for row in record["divergence"]["token_match"] for m in row)
