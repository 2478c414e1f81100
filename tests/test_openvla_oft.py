"""OpenVLA-OFT's published model code on a tiny random checkpoint (``../shared/oft/build_oft_tiny.py``).

Tests marked ``openvla`` need the ``openvla`` extra's pins (transformers 4.40.1, timm 0.9.x;
``pip install -e ".[openvla]"``) and ``../shared/oft``; elsewhere they skip with the reason. The
unmarked tests (bad input, one line naming the fix) run under any install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import load_benchmark

from rsdvla.backbones import oft_loading
from rsdvla.backbones.oft_loading import (
    OPENVLA_EXTRA_FIX,
    check_not_film,
    check_remote_code,
    resolve_proprio_projector,
    version_problems,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED_OFT = ROOT.parent / "shared" / "oft"
PROJECTOR_FILE = "proprio_projector--1_checkpoint.pt"
TINY_H = 64
# Two instructions whose prompts tokenize to different lengths (the padding test checks it).
SHORT, LONG = "open the drawer", "put both the alphabet soup and the tomato sauce in the basket"


# ---------------------------------------------------------------------------------- fixtures
def _torchvision_problem() -> str | None:
    try:
        import torchvision  # noqa: F401
    except Exception as err:  # the registry's wheel may not match a CPU torch build
        return f"torchvision does not import ({str(err).splitlines()[0]}); on such machines put {SHARED_OFT / 'harness'} on PYTHONPATH"
    return None


def _skip(reason: str) -> None:
    """Skip, or fail where CI asked for these tests to run (``RSDVLA_REQUIRE_OPENVLA=1``, see .ci/run)."""
    if os.environ.get("RSDVLA_REQUIRE_OPENVLA") == "1":
        pytest.fail(f"RSDVLA_REQUIRE_OPENVLA=1 but: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def oft_checkpoint(tmp_path_factory) -> Path:
    """A tiny OpenVLA-OFT checkpoint (real remote code, random weights) plus a seeded proprio projector
    saved as OFT saves it (DDP ``module.`` prefix). Built once per session (~10 s)."""
    if not (SHARED_OFT / "build_oft_tiny.py").is_file():
        _skip(f"{SHARED_OFT}/build_oft_tiny.py is absent (the tiny checkpoint builder)")
    problems = version_problems()
    if problems:
        _skip(f"needs the openvla pins ({OPENVLA_EXTRA_FIX}): {'; '.join(problems)}")
    problem = _torchvision_problem()
    if problem:
        _skip(problem)
    out = tmp_path_factory.mktemp("oft") / "tiny"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(SHARED_OFT / "harness"), env.get("PYTHONPATH")) if p
    )
    subprocess.run(
        [sys.executable, str(SHARED_OFT / "build_oft_tiny.py"), str(out)],
        cwd=SHARED_OFT,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    # benchmarks/oft_pooling_probe.py's seeded projector, shared with this fixture
    load_benchmark("oft_pooling_probe").write_seeded_projector(out, TINY_H)  # out / PROJECTOR_FILE
    return out


_BACKBONES: dict = {}


@pytest.fixture
def oft_backbone(oft_checkpoint):
    """``oft_backbone(**settings)``: an OpenVLAOFTBackbone on the tiny checkpoint, on CPU (cached per settings)."""
    from rsdvla.backbones import OpenVLAOFTBackbone

    def make(**settings):
        key = tuple(sorted(settings.items()))
        if key not in _BACKBONES:
            _BACKBONES[key] = OpenVLAOFTBackbone(
                checkpoint=str(oft_checkpoint), hidden_dim=TINY_H, device="cpu", **settings
            )
        return _BACKBONES[key]

    return make


def observation_batch(instructions, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    n = len(instructions)
    return {
        "primary": rng.integers(0, 256, (n, 224, 224, 3), dtype=np.uint8),
        "wrist": rng.integers(0, 256, (n, 224, 224, 3), dtype=np.uint8),
        "proprio": rng.uniform(-1.2, 1.2, (n, 8)).astype(np.float32),
        "instruction": list(instructions),
    }


def single(batch: dict, i: int) -> dict:
    return {k: v[i : i + 1] for k, v in batch.items()}


def oft_predict_action_states(
    backbone, batch: dict, projector_file: Path | None, bidirectional: bool
):
    """OFT's own ``predict_action`` on one sample -> ``actions_hidden_states [1, 56, H]``.

    Its inputs come from the checkpoint's processor (prompt as ``get_vla_action`` builds it), the proprio
    is normalized and projected here by hand (q01/q99 bounds; fc1 -> GELU -> fc2 from the saved tensors),
    and bidirectional attention is a hand-built all-ones 4-D mask handed to the Llama in place of the 2-D one.
    """
    model, processor = backbone.model, backbone.processor
    prompt = f"In: What action should the robot take to {batch['instruction'][0].lower()}?\nOut:"
    input_ids = processor.tokenizer(prompt, return_tensors="pt")["input_ids"]
    kwargs = {}
    if projector_file is not None:
        state = torch.load(projector_file, weights_only=True)
        w1, b1, w2, b2 = (
            state[f"module.{k}"].float()
            for k in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")
        )
        stats = model.norm_stats["libero_spatial_no_noops"]["proprio"]
        low, high = np.array(stats["q01"]), np.array(stats["q99"])
        proprio = np.clip(
            2 * (batch["proprio"][0].astype(np.float64) - low) / (high - low + 1e-8) - 1, -1, 1
        )
        kwargs = {
            "proprio": proprio,
            "proprio_projector": lambda p: F.linear(F.gelu(F.linear(p, w1, b1)), w2, b2),
        }
    llama_forward = model.language_model.forward

    def forward(*args, attention_mask=None, inputs_embeds=None, **kw):
        if bidirectional:
            length = inputs_embeds.shape[1]
            attention_mask = torch.ones(1, 1, length, length, dtype=inputs_embeds.dtype)
        return llama_forward(
            *args, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kw
        )

    model.language_model.forward = forward
    try:
        _, states = model.predict_action(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            pixel_values=backbone.pixel_values(batch),
            unnorm_key="libero_spatial_no_noops",
            **kwargs,
        )
    finally:
        del model.language_model.forward  # back to the class's method
    return states


# ---------------------------------------------------------------------------------- real code
@pytest.mark.openvla
def test_loaded_weights_equal_saved_ones(oft_checkpoint, oft_backbone):
    from safetensors.torch import load_file

    backbone = oft_backbone()
    saved = load_file(str(oft_checkpoint / "model.safetensors"))
    loaded = backbone.model.state_dict()
    assert set(saved) == set(loaded) and len(saved) > 100
    for name, tensor in saved.items():
        assert loaded[name].dtype == torch.float32, name  # dtype=auto on CPU: fp32
        assert torch.equal(loaded[name], tensor.float()), name
    projector = torch.load(oft_checkpoint / PROJECTOR_FILE, weights_only=True)
    for name, tensor in backbone.proprio_projector.state_dict().items():
        assert torch.equal(tensor, projector[f"module.{name}"].float()), name


@pytest.mark.openvla
def test_dtype_asked_is_used_on_cpu(oft_checkpoint, oft_backbone):
    from safetensors.torch import load_file

    bf16 = oft_backbone(dtype="bfloat16", pooling="last", proprio_projector=None)
    saved = load_file(str(oft_checkpoint / "model.safetensors"))
    loaded = bf16.model.state_dict()
    assert all(
        loaded[k].dtype == torch.bfloat16 and torch.equal(loaded[k], v) for k, v in saved.items()
    )
    batch = observation_batch([SHORT])
    fp32 = oft_backbone(pooling="last", proprio_projector=None).encode(batch)
    assert bf16.encode(batch).dtype == torch.float32
    torch.testing.assert_close(bf16.encode(batch), fp32, rtol=0.1, atol=0.1)


@pytest.mark.openvla
def test_backbone_id_records_pooling_attention_and_proprio(oft_checkpoint, oft_backbone):
    assert oft_backbone().backbone_id == (
        f"openvla_oft:{oft_checkpoint}|pool=action,attn=bidirectional,wrist=1,crop=1,pixels=tf,"
        f"proprio={PROJECTOR_FILE}"
    )
    causal = oft_backbone(attention="causal", pooling="last", proprio_projector=None)
    assert causal.backbone_id.endswith("|pool=last,attn=causal,wrist=1,crop=1,pixels=tf,proprio=0")
    assert causal.required_obs == ("primary", "wrist")
    assert oft_backbone().required_obs == ("primary", "wrist", "proprio")


@pytest.mark.openvla
@pytest.mark.parametrize("attention", ["bidirectional", "causal"])
@pytest.mark.parametrize("with_proprio", [True, False])
def test_action_pooling_equals_predict_action_states(
    oft_checkpoint, oft_backbone, attention, with_proprio
):
    projector = PROJECTOR_FILE if with_proprio else None
    mean = oft_backbone(attention=attention, proprio_projector=projector)
    first = oft_backbone(attention=attention, proprio_projector=projector, pooling="action_first")
    batch = observation_batch([LONG])
    states = oft_predict_action_states(
        mean,
        batch,
        oft_checkpoint / PROJECTOR_FILE if with_proprio else None,
        attention == "bidirectional",
    )
    assert states.shape == (1, 56, TINY_H)
    encoded = mean.encode(batch)
    assert encoded.shape == (1, TINY_H) and encoded.dtype == torch.float32
    torch.testing.assert_close(encoded, states.mean(1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(first.encode(batch), states[:, 0], rtol=1e-4, atol=1e-5)


@pytest.mark.openvla
def test_last_pooling_causal_equals_the_models_own_forward(oft_backbone):
    """OpenVLA-OFT's ``forward`` (2-D mask, so its Llama's causal one) on the prompt with 29871, last token."""
    backbone = oft_backbone(attention="causal", pooling="last", proprio_projector=None)
    batch = observation_batch([SHORT])
    prompt = f"In: What action should the robot take to {SHORT}?\nOut:"
    input_ids = backbone.processor.tokenizer(prompt, return_tensors="pt")["input_ids"]
    input_ids = torch.cat([input_ids, torch.tensor([[29871]])], dim=1)
    output = backbone.model(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        pixel_values=backbone.pixel_values(batch),
        labels=torch.full_like(input_ids, -100),
        output_hidden_states=True,
        return_dict=True,
    )
    torch.testing.assert_close(
        backbone.encode(batch), output.hidden_states[-1][:, -1], rtol=1e-4, atol=1e-5
    )


@pytest.mark.openvla
@pytest.mark.parametrize("pooling", ["action", "last"])
def test_padding_a_batch_does_not_change_a_row(oft_backbone, pooling):
    backbone = oft_backbone(pooling=pooling)
    lengths = [len(ids) for ids in backbone.prompt_ids([SHORT, LONG])]
    assert lengths[1] > lengths[0] + 5
    batch = observation_batch([SHORT, LONG])
    together = backbone.encode(batch)
    alone = torch.cat([backbone.encode(single(batch, i)) for i in range(2)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


@pytest.mark.openvla
def test_bidirectional_differs_from_causal(oft_backbone):
    batch = observation_batch([LONG])
    bidirectional = oft_backbone().encode(batch)
    causal = oft_backbone(attention="causal").encode(batch)
    assert (bidirectional - causal).abs().max() > 1e-2


@pytest.mark.openvla
def test_extract_openvla_oft_on_cpu(tmp_path, oft_checkpoint, oft_backbone):
    """``extract.py backbone=openvla_oft backbone.device=cpu`` on a LIBERO-layout file; a row equals encode()."""
    from hydra import compose, initialize_config_dir

    from rsdvla.data.libero_demos import LiberoDemoSet, write_demo_file
    from rsdvla.data.store import HiddenStateStore
    from rsdvla.extract import run

    rng = np.random.default_rng(0)
    demos = [
        {
            "actions": np.concatenate([rng.uniform(-1, 1, (n, 6)), np.ones((n, 1))], 1),
            "agentview_rgb": rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8),
            "eye_in_hand_rgb": rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8),
            "ee_pos": rng.normal(size=(n, 3)),
            "ee_ori": rng.normal(size=(n, 3)),
            "gripper_states": rng.normal(size=(n, 2)),
        }
        for n in (3, 2)
    ]
    demo_file = write_demo_file(tmp_path / "demos" / "open_the_drawer_demo.hdf5", demos)
    out = tmp_path / "oft.h5"
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="extract",
            overrides=[
                "backbone=openvla_oft",
                f"backbone.checkpoint={oft_checkpoint}",
                "backbone.device=cpu",
                f"backbone.hidden_dim={TINY_H}",
                f"demos={demo_file}",
                f"out={out}",
                "batch_size=2",
                "progress=false",
            ],
        )
    assert run(cfg)["samples"] == 5
    store = HiddenStateStore(out)
    hidden = store.load()["hidden"]
    assert hidden.shape == (5, TINY_H) and np.isfinite(hidden).all()
    backbone = oft_backbone()
    assert store.backbone == backbone.backbone_id

    episode = next(
        iter(LiberoDemoSet(str(demo_file), required_obs=backbone.required_obs).episodes())
    )
    step = {key: value[2:3] for key, value in episode.obs.items()}
    step["instruction"] = [episode.instruction]
    np.testing.assert_allclose(
        hidden[2].astype(np.float32), backbone.encode(step)[0].numpy(), rtol=2e-3, atol=2e-3
    )


@pytest.mark.openvla
def test_missing_proprio_projector_and_remote_code_are_one_line(tmp_path, oft_checkpoint):
    from rsdvla.backbones import OpenVLAOFTBackbone

    with pytest.raises(FileNotFoundError) as err:
        OpenVLAOFTBackbone(
            str(oft_checkpoint), hidden_dim=TINY_H, device="cpu", proprio_projector="nope.pt"
        )
    assert "\n" not in str(err.value) and "backbone.proprio_projector=nope.pt" in str(err.value)
    assert PROJECTOR_FILE in str(err.value)

    bare = tmp_path / "bare"
    shutil.copytree(oft_checkpoint, bare)
    (bare / "modeling_prismatic.py").unlink()
    with pytest.raises(OSError) as err:
        OpenVLAOFTBackbone(str(bare), hidden_dim=TINY_H, device="cpu")
    assert "\n" not in str(err.value) and "modeling_prismatic.py" in str(err.value)


# ---------------------------------------------------------------------------------- any install
def test_cpu_warning_is_printed_once(monkeypatch, caplog):
    from rsdvla.backbones import openvla_oft

    monkeypatch.setattr(openvla_oft, "_cpu_warned", False)
    with caplog.at_level("WARNING", logger="rsdvla.backbones.openvla_oft"):
        openvla_oft._warn_cpu_once()
        openvla_oft._warn_cpu_once()
    assert len(caplog.records) == 1 and "for checks only" in caplog.records[0].getMessage()


def test_version_gate_names_the_extra_before_loading(monkeypatch, tmp_path):
    import transformers

    from rsdvla.backbones import OpenVLAOFTBackbone

    def must_not_load(*args, **kwargs):
        raise AssertionError("loading was reached")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", must_not_load)
    versions = {
        "transformers": "5.24.0",
        "tokenizers": "0.21.0",
        "timm": "1.0.9",
        "accelerate": "1.0",
        "sentencepiece": "0.2",
    }
    monkeypatch.setattr(oft_loading, "_version", versions.get)
    with pytest.raises(ImportError) as err:
        OpenVLAOFTBackbone(checkpoint=str(tmp_path), device="cpu")
    message = str(err.value)
    assert "\n" not in message and OPENVLA_EXTRA_FIX in message
    assert "transformers 5.24.0 is outside >=4.40.1,<4.41" in message and "timm 1.0.9" in message

    versions.update(transformers="4.40.1", timm="0.9.16")
    del versions["accelerate"]
    assert version_problems() == ["accelerate is not installed"]
    versions["accelerate"] = "1.0"
    assert version_problems() == []


def test_checkpoint_without_remote_code_is_named(tmp_path):
    with pytest.raises(OSError, match="config.json: missing"):
        check_remote_code(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "openvla"}')
    with pytest.raises(OSError) as err:
        check_remote_code(tmp_path)
    assert (
        "auto_map" in str(err.value)
        and "update_auto_map" in str(err.value)
        and "\n" not in str(err.value)
    )
    (tmp_path / "config.json").write_text(
        '{"auto_map": {"AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction"}}'
    )
    with pytest.raises(OSError, match="modeling_prismatic.py: missing"):
        check_remote_code(tmp_path)
    (tmp_path / "modeling_prismatic.py").write_text("")
    check_remote_code(tmp_path)


def test_film_checkpoint_is_refused_in_one_line(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text('{"model_type": "openvla"}')
    check_not_film(tmp_path)  # a plain checkpoint passes
    (tmp_path / "config.json").write_text('{"model_type": "openvla", "use_film": true}')
    with pytest.raises(ValueError, match="config.json: use_film is true; FiLM") as err:
        check_not_film(tmp_path)
    assert "\n" not in str(err.value)
    (tmp_path / "config.json").write_text('{"model_type": "openvla", "use_film": false}')
    (tmp_path / "vision_backbone--50000_checkpoint.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="vision_backbone--50000_checkpoint.pt: a FiLM vision"):
        check_not_film(tmp_path)
    # the backbone refuses it before loading anything
    (tmp_path / "config.json").write_text(
        '{"use_film": true, "auto_map": {"AutoModelForVision2Seq": "modeling_prismatic.X"}}'
    )
    (tmp_path / "modeling_prismatic.py").write_text("")
    from rsdvla.backbones import openvla_oft

    monkeypatch.setattr(openvla_oft, "check_versions", lambda: None)
    with pytest.raises(ValueError, match="FiLM checkpoints are not supported"):
        openvla_oft.OpenVLAOFTBackbone(checkpoint=str(tmp_path), device="cpu")


def test_proprio_projector_resolution(tmp_path):
    with pytest.raises(FileNotFoundError, match="auto: 0 proprio_projector"):
        resolve_proprio_projector("auto", tmp_path)
    (tmp_path / PROJECTOR_FILE).write_bytes(b"")
    assert resolve_proprio_projector("auto", tmp_path) == tmp_path / PROJECTOR_FILE
    assert resolve_proprio_projector(PROJECTOR_FILE, tmp_path) == tmp_path / PROJECTOR_FILE
    with pytest.raises(FileNotFoundError) as err:
        resolve_proprio_projector("other.pt", tmp_path)
    assert PROJECTOR_FILE in str(err.value) and "proprio_projector=null" in str(err.value)


def test_extract_cli_prints_one_line_for_unsupported_versions(tmp_path):
    problems = version_problems()
    if not problems:
        pytest.skip(
            "the installed transformers/timm are supported (test_version_gate_* covers the gate)"
        )
    result = subprocess.run(
        [
            sys.executable,
            "extract.py",
            "backbone=openvla_oft",
            "backbone.device=cpu",
            f"out={tmp_path / 'x.h5'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and OPENVLA_EXTRA_FIX in lines[0] and problems[0] in lines[0]


@pytest.mark.openvla
def test_a_batched_policy_call_with_mixed_instructions_equals_each_episode_alone(oft_backbone):
    """env.num_envs > 1 batches episodes of other tasks: OFT backbone + RSD through
    ``RSDPolicy.select_actions`` gives each episode the chunk it gets alone."""
    from test_policy import NORMALIZER

    from rsdvla.decoding import SpeculativeDecoder
    from rsdvla.models import DraftModel, MainModel
    from rsdvla.policy import RSDPolicy
    from rsdvla.tokenizer import RFSQTokenizer

    torch.manual_seed(0)
    main = MainModel(
        hidden_dim=TINY_H, d_model=16, n_layers=1, n_heads=2, num_code_layers=3,
        tokens_per_layer=16, levels=5,
    )  # fmt: skip
    draft = DraftModel(
        hidden_dim=TINY_H, d_model=16, n_heads=2, num_draft_layers=2, tokens_per_layer=16, levels=5
    )
    tokenizer = RFSQTokenizer(chunk_size=8, latent_dim=2, num_layers=3, levels=5, hidden=8)
    policy = RSDPolicy(
        oft_backbone(), SpeculativeDecoder(main.eval(), draft.eval(), tokenizer.eval()), NORMALIZER
    )
    batch = observation_batch([SHORT, LONG])
    episodes = [{k: v[i] for k, v in batch.items()} for i in range(2)]
    together = policy.select_actions(episodes, [policy.new_slot(1), policy.new_slot(2)])
    alone = [
        policy.select_actions([obs], [policy.new_slot(s)])[0]
        for obs, s in zip(episodes, (1, 2), strict=True)
    ]
    np.testing.assert_allclose(np.stack(together), np.stack(alone), rtol=0, atol=1e-4)


@pytest.mark.openvla
@pytest.mark.sim
def test_oft_smoke_runs_every_stage_on_cpu(tmp_path, oft_checkpoint):
    """``python quickstart.py experiment=oft_smoke`` on the tiny checkpoint, on CPU: camera demos,
    extraction with the proprio projector, training, offline and LIBERO evaluation, the table."""
    pytest.importorskip("libero")
    work = tmp_path / "smoke"
    env = dict(os.environ)
    env.setdefault("MUJOCO_GL", "egl")
    env.setdefault("PYOPENGL_PLATFORM", "egl")
    if _torchvision_problem():
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(SHARED_OFT / "harness"), env.get("PYTHONPATH")) if p
        )
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "quickstart.py"),
            "experiment=oft_smoke",
            f"backbone.checkpoint={oft_checkpoint}",
            "backbone.device=cpu",
            f"backbone.hidden_dim={TINY_H}",
            f"work_dir={work}",
            f"hydra.run.dir={work / 'hydra'}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    import json

    smoke = json.loads((work / "results.json").read_text())["smoke"]
    assert set(smoke["stages"]) >= {"collect", "extract", "train_main", "libero_rsd_agreement"}
    assert set(smoke["stages"].values()) == {"passed"}
    assert smoke["hidden_shape"][1] == TINY_H and smoke["hidden_shape"][0] > 0
    backbone = smoke["store_identity"]["backbone"]
    assert "pool=action" in backbone and "attn=bidirectional" in backbone
    assert f"proprio={PROJECTOR_FILE}" in backbone
    assert "rsdvla smoke" in result.stdout
