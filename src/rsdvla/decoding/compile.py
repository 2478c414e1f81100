"""``decoder.compile``: compile the main model's pass (the depth loop's body), or say why not, in one line."""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


def compile_main(main: nn.Module) -> bool:
    """Replace ``main._run`` (the transformer pass of ``step`` and ``verify``) by a compiled one.

    CUDA: ``torch.compile(mode="reduce-overhead")`` (CUDA graphs); CPU: the default inductor
    backend. Compilation is tried on a one-sample probe right away; where it is unavailable
    (no compiler, unsupported platform, a backend error) one warning line names the fallback and
    decoding stays eager. Returns whether main now runs compiled. Idempotent.
    """
    if getattr(main, "_compiled_run", False):
        return True
    eager = main._run
    cuda = next(main.parameters()).device.type == "cuda"
    try:
        compiled = torch.compile(
            eager, mode="reduce-overhead" if cuda else "default", dynamic=False
        )
        main._run = compiled
        with torch.inference_mode():  # compile now, not inside the first timed call
            h = torch.zeros(1, main.config.hidden_dim, device=next(main.parameters()).device)
            state = main.start(h)
            tokens = main.step(state, None).argmax(-1)
            main.step(state, tokens)
    except Exception as err:  # any backend failure: fall back, never crash
        main._run = eager
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
        log.warning(
            "decoder.compile=true: torch.compile is unavailable here (%s: %s); decoding runs eager "
            "(set decoder.compile=false to silence this)",
            type(err).__name__,
            reason,
        )
        return False
    main._compiled_run = True
    return True
