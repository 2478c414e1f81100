"""How predictable a tokenizer's codes are: the numbers that decide RSD's trade-off per stack.

For a stack (tokenizer, main, draft) on held-out rows ``hidden[n, H]``, ``actions[n, T, A]``:

- ``recon_mse[m-1]``: the tokenizer's reconstruction error from its first m layers
  (``decode(encode(a), num_layers=m)`` vs ``a``, normalized units);
- ``main_token_accuracy[l]``: main's argmax equals the ground-truth code, teacher forced on the
  ground-truth prefix (token level), and ``main_layer_accuracy[l]`` (every token of the layer);
- ``draft_token_agreement[l]`` and ``draft_layer_agreement[l]``: the draft's argmax equals main's
  greedy decode (what ``exact`` acceptance compares), per token and per whole layer. The layer
  rate is the chance that exact RSD accepts layer l given layers before it were accepted, for a
  draft whose layers are independent of each other; ``draft_top{n}_layer_agreement`` is the
  same for the draft's n most probable first layers (a draft tree of width n).
"""

from __future__ import annotations

import torch

from rsdvla.decoding.main_only import MainOnlyDecoder
from rsdvla.decoding.speculative import draft_logits_for
from rsdvla.decoding.tree import top_layers

TREE_WIDTHS = (2, 4)


@torch.inference_mode()
def stack_quality(stack, hidden: torch.Tensor, actions: torch.Tensor, batch: int = 1024) -> dict:
    """The module docstring's numbers (lists over layers) plus the tokenizer's identity."""
    tok, main, draft = stack.tokenizer, stack.main, stack.draft
    device = next(main.parameters()).device
    layers = tok.num_layers
    sums: dict[str, torch.Tensor] = {}
    rows = 0

    def add(key: str, values: torch.Tensor) -> None:
        sums[key] = sums.get(key, 0) + values.double().sum(0).cpu()

    greedy = MainOnlyDecoder(main, tok)
    for h, a in zip(hidden.split(batch), actions.split(batch), strict=True):
        h, a = h.to(device), a.to(device)
        codes = tok.encode(a)
        truth = tok.codes_to_layers(codes)  # [b, L, N]
        errors = [
            ((tok.decode(codes, num_layers=m) - a) ** 2).flatten(1).mean(1)
            for m in range(1, layers + 1)
        ]
        add("recon_mse", torch.stack(errors, 1))
        hits = main(h, truth).argmax(-1) == truth  # [b, L, N]
        add("main_token_accuracy", hits.float().mean(-1))
        add("main_layer_accuracy", hits.all(-1).float())
        if draft is not None:
            mine = tok.codes_to_layers(greedy(h).codes)  # main's greedy layers
            logits = draft_logits_for(draft, main, h)  # [b, k, N, C]
            k = logits.shape[1]
            agree = logits.argmax(-1) == mine[:, :k]
            add("draft_token_agreement", agree.float().mean(-1))
            add("draft_layer_agreement", agree.all(-1).float())
            for width in TREE_WIDTHS:
                if width <= tok.levels**tok.tokens_per_layer:
                    candidates = top_layers(logits[:, 0], width)  # [b, n, N]
                    hit = (candidates == mine[:, None, 0]).all(-1).any(-1)
                    add(f"draft_top{width}_layer_agreement", hit.float()[:, None])
        rows += h.shape[0]
    out = {key: [round(float(v) / rows, 6) for v in value] for key, value in sums.items()}
    for width in TREE_WIDTHS:
        key = f"draft_top{width}_layer_agreement"
        if key in out:
            out[key] = out[key][0]
    out.update(
        family=tok.family,
        tokens_per_layer=tok.tokens_per_layer,
        vocab_size=tok.levels,
        num_layers=layers,
        rows=rows,
    )
    return out
