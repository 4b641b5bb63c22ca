"""Load checkpoints saved by the public D-Persona code (ycwu1997/D-Persona) into ``DPersonaNet``.

Key mapping (reference prefix -> ours); indices after the prefix are kept as they are, because
our Sequentials use the reference's layer positions (ReLU and pooling layers hold no tensors):

    unet.seg_encoder.            -> backbone.encoder.
    unet.seg_decoder.            -> backbone.decoder.
    prior.encoder.layers.        -> prior.convs.
    prior.conv_layer.            -> prior.to_params.
    posterior.encoder.layers.    -> posterior.convs.
    posterior.conv_layer.        -> posterior.to_params.
    fcomb.layers.                -> fcomb.hidden.
    fcomb.last_layer.            -> fcomb.out.

Heads are stored stacked: ``proj_heads.multi_expert_heads.{r}.layers.{n}.{weight|bias}`` ->
row ``r`` of ``heads.{weight|bias}.{j}`` with ``n -> j`` given by ``HEAD_LAYER_TO_CONV``.

For the model to compute what the reference computes, build it with ``faithful_stage2=True``
(padding-3 heads). A missing, unexpected or misshapen key raises ValueError naming it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from .model import DPersonaNet

PREFIX_MAP: tuple[tuple[str, str], ...] = (
    ("unet.seg_encoder.", "backbone.encoder."),
    ("unet.seg_decoder.", "backbone.decoder."),
    ("prior.encoder.layers.", "prior.convs."),
    ("prior.conv_layer.", "prior.to_params."),
    ("posterior.encoder.layers.", "posterior.convs."),
    ("posterior.conv_layer.", "posterior.to_params."),
    ("fcomb.layers.", "fcomb.hidden."),
    ("fcomb.last_layer.", "fcomb.out."),
)
HEAD_PREFIX = "proj_heads.multi_expert_heads."
HEAD_LAYER_TO_CONV: dict[int, int] = {0: 0, 3: 1, 6: 2, 9: 3, 12: 4, 15: 5}
_HEAD_KEY = re.compile(r"proj_heads\.multi_expert_heads\.(\d+)\.layers\.(\d+)\.(weight|bias)")

Target = tuple[str, int | None]  # (our key, head row or None)


def map_reference_key(key: str) -> Target | None:
    """Our (key, head row) for a reference key, or None if it has no counterpart."""
    for ref, ours in PREFIX_MAP:
        if key.startswith(ref):
            return ours + key[len(ref):], None
    match = _HEAD_KEY.fullmatch(key)
    if match and int(match.group(2)) in HEAD_LAYER_TO_CONV:
        return f"heads.{match.group(3)}.{HEAD_LAYER_TO_CONV[int(match.group(2))]}", int(match.group(1))
    return None


def reference_keys(model: DPersonaNet) -> dict[str, Target]:
    """Every reference key a checkpoint for ``model`` must hold -> where it goes."""
    conv_to_layer = {j: n for n, j in HEAD_LAYER_TO_CONV.items()}
    inverse = {ours: ref for ref, ours in PREFIX_MAP}
    out: dict[str, Target] = {}
    for key in model.state_dict():
        if key.startswith("heads."):
            _, kind, j = key.split(".")
            for r in range(model.num_raters):
                out[f"{HEAD_PREFIX}{r}.layers.{conv_to_layer[int(j)]}.{kind}"] = (key, r)
            continue
        for ours, ref in inverse.items():
            if key.startswith(ours):
                out[ref + key[len(ours):]] = (key, None)
                break
        else:  # pragma: no cover - only if the model grows a submodule without a mapping
            raise ValueError(f"load_reference_state_dict: our key {key!r} has no reference name")
    return out


def export_reference_state_dict(model: DPersonaNet) -> dict[str, torch.Tensor]:
    """``model``'s tensors under the reference's names (inverse of the loader)."""
    ours = model.state_dict()
    return {ref: (ours[k] if r is None else ours[k][r]).detach().clone()
            for ref, (k, r) in reference_keys(model).items()}


def load_reference_state_dict(model: DPersonaNet, state_dict: Mapping[str, torch.Tensor]) -> DPersonaNet:
    """Copy a reference state-dict into ``model`` (in place; returns it).

    A ``module.`` prefix (DataParallel) on every key is stripped. Raises ValueError listing
    missing keys, unexpected keys and shape mismatches (with both shapes) before touching
    ``model``.
    """
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"load_reference_state_dict: expected a mapping of tensors, got {type(state_dict).__name__}")
    sd = dict(state_dict)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    expected = reference_keys(model)
    ours = model.state_dict()
    problems: list[str] = []
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing:
        problems.append(f"missing key(s): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected key(s): {', '.join(unexpected)}")
    for key in sorted(set(sd) & set(expected)):
        value = sd[key]
        ours_key, row = expected[key]
        want = ours[ours_key].shape if row is None else ours[ours_key].shape[1:]
        if not isinstance(value, torch.Tensor):
            problems.append(f"key {key!r} holds {type(value).__name__}, not a tensor")
        elif tuple(value.shape) != tuple(want):
            problems.append(f"key {key!r} has shape {tuple(value.shape)}, expected {tuple(want)}")
    if problems:
        raise ValueError("load_reference_state_dict: " + "; ".join(problems))
    new = {k: v.detach().clone() for k, v in ours.items()}
    for key, (ours_key, row) in expected.items():
        value = sd[key].to(dtype=new[ours_key].dtype, device=new[ours_key].device)
        if row is None:
            new[ours_key] = value
        else:
            new[ours_key][row] = value
    model.load_state_dict(new, strict=True)
    return model


def load_reference_checkpoint(model: DPersonaNet, path: str | Path) -> DPersonaNet:
    """Load a ``torch.save``d reference state-dict file (tensors only, ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"D-Persona reference checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - report any unreadable file the same way
        raise ValueError(f"D-Persona reference checkpoint {path}: cannot be read as a tensor state-dict ({exc})") from None
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    try:
        return load_reference_state_dict(model, obj)
    except ValueError as exc:
        raise ValueError(f"D-Persona reference checkpoint {path}: {exc}") from None
