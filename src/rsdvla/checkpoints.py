"""Loading rsdvla checkpoints without Lightning: one place for the checks and the errors.

A checkpoint is ``{"state_dict", "hyper_parameters", "content_hash", ...}`` as Lightning writes
it. Lineage (DESIGN 2.7):

- ``content_hash``: sha256 over the state-dict tensors (name, dtype, shape, bytes, sorted by
  name) and the canonical JSON of ``hyper_parameters`` (:func:`content_hash`). It is written
  into every checkpoint ``train.py`` saves, and :func:`checkpoint_content_hash` recomputes it
  from any file, so it is verifiable: a file whose recorded hash differs was modified.
- ``hyper_parameters.lineage``: what the model was trained from. ``store``: the hidden-state
  store's identity (path, backbone id with its settings such as pooling and attention, H, T,
  samples, content ``fingerprint`` and the LIBERO ``fixed_initial_states`` its demos started from); ``tokenizer`` (main, draft): the tokenizer's path and content hash; ``teacher``
  (distilled draft): the main checkpoint's path and content hash.

Checkpoints written before lineage existed are refused where lineage is checked (loading a
stack, training on a tokenizer), with a one-line "retrain" message; loading one model alone
still works.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

PRODUCERS = {
    "tokenizer": "python train.py model=tokenizer",
    "main": "python train.py model=main",
    "draft": "python train.py model=draft",
    "context_draft": "python train.py model=context_draft",
}
LINEAGE = "lineage"
HASH_KEY = "content_hash"


def producer(kind: str) -> str:
    """The command that writes a checkpoint of ``kind``."""
    return PRODUCERS.get(kind, f"python train.py model={kind}")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file, the field and the fix."""


# ----------------------------------------------------------------------------- content hash


def _canonical(value):
    """Plain JSON-able form: dicts with string keys, lists for tuples, str for anything else."""
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def content_hash(state_dict: dict, hyper_parameters: dict) -> str:
    """``sha256:<hex>`` of the tensors (name, dtype, shape, raw bytes) and the hyper-parameters."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    params = json.dumps(_canonical(dict(hyper_parameters)), sort_keys=True, allow_nan=True)
    digest.update(params.encode())
    return "sha256:" + digest.hexdigest()


def stamp(checkpoint: dict) -> dict:
    """Record ``checkpoint["content_hash"]`` (in place) from its state dict and hyper-parameters."""
    checkpoint[HASH_KEY] = content_hash(
        checkpoint["state_dict"], checkpoint.get("hyper_parameters", {})
    )
    return checkpoint


def short(digest: str | None) -> str:
    """The first 12 hex digits of a ``sha256:`` hash, for messages."""
    return "none" if not digest else digest.removeprefix("sha256:")[:12]


# ----------------------------------------------------------------------------- reading


def read_checkpoint(
    path: str | os.PathLike, kind: str | None = None, field: str | None = None
) -> dict:
    """``torch.load`` with one-line errors for a missing, truncated or foreign file.

    ``field`` names the config field that points at ``path`` (default ``ckpt.<kind>``).
    """
    path = Path(path)
    command = producer(kind) if kind else "python train.py model=<tokenizer|main|draft>"
    field = field or f"ckpt.{kind or '<kind>'}"
    if not path.is_file():
        raise CheckpointError(
            f"{path}: {kind or ''} checkpoint not found (field `{field}`); produce it with `{command}` "
            f"or point `{field}=<path>` at one".replace("  ", " ")
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or foreign files fail inside torch with long traces
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(err).__name__}: truncated or not a torch file; "
            f"field `{field}`); point it at a complete checkpoint or re-create it with `{command}`"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{path}: no `state_dict` inside (field `{field}`); pass a checkpoint written by `{command}`"
        )
    return ckpt


def checkpoint_kind(ckpt: dict) -> str:
    """``hyper_parameters.kind`` (tokenizer, main, draft, ...) or ``unknown``."""
    return str((ckpt.get("hyper_parameters") or {}).get("kind", "unknown"))


def verify_content_hash(ckpt: dict, path: str | os.PathLike) -> str:
    """Recompute the content hash; refuse a file whose recorded hash differs. Returns the hash."""
    computed = content_hash(ckpt["state_dict"], ckpt.get("hyper_parameters") or {})
    recorded = ckpt.get(HASH_KEY)
    if recorded is not None and recorded != computed:
        raise CheckpointError(
            f"{path}: recorded content_hash {short(recorded)} but the contents hash to {short(computed)}: "
            "the file was modified after training; retrain it or restore the original"
        )
    return computed


def checkpoint_content_hash(path: str | os.PathLike) -> str:
    """The verified content hash (``sha256:<hex>``) of the checkpoint at ``path``.

    Equal to what ``train.py`` recorded inside it; computed the same way for any checkpoint.
    Raises :class:`CheckpointError` when the file is unreadable or was modified.
    """
    return verify_content_hash(read_checkpoint(path), path)


def load_checkpoint(path: str | os.PathLike, kind: str, map_location: str = "cpu") -> dict:
    """Read a checkpoint written by ``train.py model=<kind>`` and check what it holds.

    Returns the raw dict with ``state_dict`` and ``hyper_parameters`` (which include the
    model config under ``kind`` and the normalization statistics under ``action_stats``), plus
    the verified ``content_hash``.
    """
    ckpt = read_checkpoint(path, kind)
    hparams = ckpt.get("hyper_parameters") or {}
    if kind not in hparams:
        raise CheckpointError(
            f"{path}: field `hyper_parameters.{kind}` missing (this is a {checkpoint_kind(ckpt)} checkpoint); "
            f"pass a checkpoint from `{producer(kind)}` (ckpt.{kind}=<path>)"
        )
    ckpt[HASH_KEY] = verify_content_hash(ckpt, path)
    check_finite_weights(ckpt["state_dict"], path, kind)
    return ckpt


def nonfinite_tensors(state_dict: dict) -> list[str]:
    """Names of the floating-point tensors of ``state_dict`` holding NaN or inf."""
    return [
        name
        for name, tensor in state_dict.items()
        if torch.is_tensor(tensor)
        and tensor.is_floating_point()
        and not bool(torch.isfinite(tensor).all())
    ]


def check_finite_weights(state_dict: dict, path: str | os.PathLike, kind: str) -> None:
    """Refuse a checkpoint whose weights hold NaN or inf (a diverged run): one line naming a tensor."""
    bad = nonfinite_tensors(state_dict)
    if bad:
        raise CheckpointError(
            f"{path}: tensor `{bad[0]}` has NaN or inf ({len(bad)} of {len(state_dict)} tensors): the run "
            f"diverged; retrain it with `{producer(kind)}` (e.g. a lower model.module.optimizer.lr)"
        )


def module_state(ckpt: dict, prefix: str) -> dict:
    """The ``state_dict`` entries under ``prefix.`` with the prefix removed."""
    return {
        k.removeprefix(prefix + "."): v
        for k, v in ckpt["state_dict"].items()
        if k.startswith(prefix + ".")
    }


def load_module(
    cls, config_cls, path: str | os.PathLike, kind: str, prefix: str, map_location: str = "cpu"
):
    """Build ``cls(config_cls(**hyper_parameters[kind]))`` from a checkpoint and load its weights.

    Attached to the returned module (eval mode): ``.action_stats`` (normalization statistics),
    ``.lineage`` (``hyper_parameters.lineage`` or None), ``.content_hash``, ``.checkpoint_path``
    and ``.train_config`` (the resolved training config or None).
    """
    ckpt = load_checkpoint(path, kind=kind, map_location=map_location)
    hparams = ckpt["hyper_parameters"]
    model = cls(config_cls(**hparams[kind]))
    model.load_state_dict(module_state(ckpt, prefix))
    model.action_stats = hparams.get("action_stats")
    model.lineage = hparams.get(LINEAGE)
    model.content_hash = ckpt[HASH_KEY]
    model.checkpoint_path = str(path)
    model.train_config = hparams.get("config")
    return model.eval()


# ----------------------------------------------------------------------------- compatibility


def code_space(obj) -> dict:
    """What a tokenizer, main or draft (module or config) says about the code space.

    ``family`` (the tokenizer family: a tokenizer's own, a model's ``tokenizer_family``),
    ``levels`` (the vocabulary of a token: K for RFSQ, C for residual VQ), ``tokens_per_layer``
    (T*D for RFSQ, G for residual VQ), and where defined ``num_layers`` (L: the tokenizer's
    layers, main's ``num_code_layers``), ``num_draft_layers`` (k) and ``hidden_dim`` (H).
    """
    cfg = getattr(obj, "config", obj)
    out = {}
    if getattr(cfg, "family", None):  # a tokenizer config
        out["family"] = cfg.family
    elif hasattr(cfg, "tokenizer_family"):  # a model trained on a tokenizer
        out["family"] = cfg.tokenizer_family
    if hasattr(cfg, "num_code_layers"):  # main
        out["num_layers"] = cfg.num_code_layers
    for name in ("num_layers", "levels", "tokens_per_layer", "num_draft_layers", "hidden_dim"):
        if hasattr(cfg, name) and name not in out:
            out[name] = getattr(cfg, name)
    return out


MODEL_FIELD_NAMES = {"num_layers": "num_code_layers", "family": "tokenizer_family"}


def _field_name(obj, field: str) -> str:
    """A model config calls the tokenizer's ``num_layers`` ``num_code_layers`` (main) and its
    ``family`` ``tokenizer_family``."""
    cfg = getattr(obj, "config", obj)
    name = MODEL_FIELD_NAMES.get(field)
    return name if name and hasattr(cfg, name) else field


def check_same(
    reference, reference_name: str, other, other_name: str, fields: tuple[str, ...], fix: str
) -> None:
    """Raise one line when ``code_space(reference)`` and ``code_space(other)`` differ in ``fields``.

    The line reads ``<reference_name> has <field>=<a> but <other_name>.<field>=<b>; <fix>``.
    Fields a side does not define are skipped.
    """
    ref, oth = code_space(reference), code_space(other)
    for field in fields:
        if field in ref and field in oth and ref[field] != oth[field]:
            raise CheckpointError(
                f"{reference_name} has {_field_name(reference, field)}={ref[field]} but "
                f"{other_name}.{_field_name(other, field)}={oth[field]}; {fix}"
            )


def check_draft_depth(tokenizer_layers: int, draft_layers: int, where: str, field: str) -> None:
    """A draft proposes ``1..L-1`` layers (main must verify at least one more)."""
    if not 1 <= draft_layers < tokenizer_layers:
        raise CheckpointError(
            f"{where}: tokenizer has {tokenizer_layers} layers, {field}.num_draft_layers={draft_layers} "
            f"must be in 1..{tokenizer_layers - 1}"
        )


def check_tokenizer_matches(
    tokenizer_config, model_config, tokenizer_path: str, model_field: str
) -> None:
    """Fail early when a tokenizer's family, vocabulary, L or tokens per layer differ from what a
    main or draft model was built for.

    ``model_config`` needs ``levels``, ``tokens_per_layer`` and either ``num_code_layers`` (main)
    or ``num_draft_layers`` (draft, which must not exceed the tokenizer's L).
    """
    check_same(
        tokenizer_config,
        f"{tokenizer_path}: tokenizer",
        model_config,
        model_field,
        ("family", "levels", "tokens_per_layer", "num_layers"),
        "set the field to match or use the tokenizer this model was trained with",
    )
    k = getattr(model_config, "num_draft_layers", None)
    if k is not None:
        check_draft_depth(tokenizer_config.num_layers, k, tokenizer_path, model_field)


# ----------------------------------------------------------------------------- lineage


def store_identity(store) -> dict:
    """A :class:`~rsdvla.data.store.HiddenStateStore`'s identity, as recorded in checkpoints."""
    return {
        "path": str(store.path),
        "backbone": str(store.backbone),
        "hidden_dim": int(store.hidden_dim),
        "chunk_size": int(store.chunk_shape[0]),
        "samples": int(store.num_samples),
        "fingerprint": store.fingerprint(),
        # fixed LIBERO initial states the store's demos started from (None: not recorded)
        "fixed_initial_states": json.loads(store.attrs.get("fixed_initial_states", "null")),
    }


def check_store_content(recorded: dict, store, trained: str, actual: str, fix: str) -> None:
    """Refuse a store whose content fingerprint differs from the one ``recorded`` in a checkpoint.

    Same backbone is not same data: other demos, other action statistics (another normalization)
    or other rows give another fingerprint, wherever the file lives. Lineage from before
    fingerprints were recorded is not checked here.
    """
    want = recorded.get("fingerprint")
    if not want:
        return
    have = store.fingerprint()
    if have != want:
        raise CheckpointError(
            f"{trained} was trained on store {recorded.get('path')} (fingerprint {short(want)}, "
            f"{recorded.get('samples')} samples) but {actual} is {store.path} (fingerprint {short(have)}, "
            f"{store.num_samples} samples): another store's content and normalization; {fix}"
        )


def backbone_settings(backbone_id: str) -> dict[str, str]:
    """``"name|pool=last,attn=causal"`` -> ``{"name": "name", "pool": "last", "attn": "causal"}``.

    Ids without ``|`` settings (``state-h512-...-seed0``) are one ``name`` entry.
    """
    name, _, rest = str(backbone_id).partition("|")
    out = {"name": name}
    for part in filter(None, rest.split(",")):
        key, _, value = part.partition("=")
        out[key.strip()] = value.strip()
    return out


def describe_difference(recorded: str, actual: str) -> str:
    """The settings in which two backbone ids differ, e.g. ``pool=last vs pool=mean``."""
    a, b = backbone_settings(recorded), backbone_settings(actual)
    diffs = [
        f"{key}={a.get(key, '-')} vs {key}={b.get(key, '-')}"
        for key in dict.fromkeys([*a, *b])
        if a.get(key) != b.get(key)
    ]
    return "; ".join(diffs) if diffs else f"{recorded} vs {actual}"


def require_lineage(module, kind: str) -> dict:
    """The module's recorded lineage, or a one-line "retrain" refusal for older checkpoints."""
    lineage = getattr(module, "lineage", None)
    if not lineage:
        raise CheckpointError(
            f"{module.checkpoint_path}: no `hyper_parameters.lineage` (written before lineage was recorded), "
            f"so its tokenizer and store cannot be checked; retrain it with `{producer(kind)}`"
        )
    return lineage


def check_trained_with(
    module, kind: str, role: str, other_path: str, other_hash: str, field: str
) -> None:
    """Refuse when ``module`` (main/draft) records a different ``role`` checkpoint (tokenizer/teacher)."""
    lineage = require_lineage(module, kind)
    recorded = lineage.get(role) or {}
    if recorded.get(HASH_KEY) != other_hash:
        raise CheckpointError(
            f"{module.checkpoint_path}: {kind} was trained with {role} {recorded.get('path', '?')} "
            f"({short(recorded.get(HASH_KEY))}) but {field}={other_path} is {short(other_hash)}; "
            f"point {field} at the {role} it was trained with, or retrain with `{producer(kind)}`"
        )


def check_store_backbone(
    recorded: dict, backbone_id: str, hidden_dim: int, trained: str, actual: str, fix: str
) -> None:
    """Refuse hidden states from another backbone (or other settings) than ``recorded`` store's.

    ``trained``/``actual`` name the two sides in the message (file paths and fields).
    """
    if recorded.get("backbone") != backbone_id or int(recorded.get("hidden_dim", -1)) != int(
        hidden_dim
    ):
        settings = backbone_settings(str(recorded.get("backbone")))
        diffs = [describe_difference(str(recorded.get("backbone")), str(backbone_id))]
        if len(settings) == 1 and len(backbone_settings(str(backbone_id))) == 1:
            diffs = []  # ids without `|key=value` settings: the two ids say it all
        if int(recorded.get("hidden_dim", -1)) != int(hidden_dim):
            diffs.append(f"H={recorded.get('hidden_dim')} vs H={hidden_dim}")
        detail = f" ({'; '.join(diffs)})" if diffs else ""
        raise CheckpointError(
            f"{trained} was trained on hidden states of backbone {recorded.get('backbone')} but {actual} "
            f"is {backbone_id}{detail}; {fix}"
        )


def check_stack_lineage(tokenizer, main, draft=None) -> None:
    """The whole chain of an evaluation: main and draft record this tokenizer's content hash,
    and the draft was trained on hidden states of main's backbone. One line naming both files."""
    check_trained_with(
        main,
        "main",
        "tokenizer",
        tokenizer.checkpoint_path,
        tokenizer.content_hash,
        "ckpt.tokenizer",
    )
    if draft is None:
        return
    check_trained_with(
        draft,
        "draft",
        "tokenizer",
        tokenizer.checkpoint_path,
        tokenizer.content_hash,
        "ckpt.tokenizer",
    )
    main_store = main.lineage.get("store") or {}
    draft_store = draft.lineage.get("store") or {}
    check_store_backbone(
        main_store,
        draft_store.get("backbone"),
        draft_store.get("hidden_dim", -1),
        f"{main.checkpoint_path}: main",
        f"{draft.checkpoint_path}: the draft's store",
        "use a draft trained on the same backbone's store (ckpt.draft)",
    )
