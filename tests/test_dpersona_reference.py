"""Loading checkpoints of the public D-Persona code: the state-dict listed in
``tests/data/dpersona_state_dict.tsv`` (every key, shape, dtype; vendored) loads, bad
dicts fail naming the key, and the loaded model computes what the reference architecture
computes (an independent functional re-implementation from the reference's layer layout)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from mrseg_bench.methods.dpersona import (
    DPersonaConfig,
    dpersona,
    export_reference_state_dict,
    load_reference_checkpoint,
    load_reference_state_dict,
)
from mrseg_bench.types import DatasetInfo

TSV = Path(__file__).resolve().parent / "data" / "dpersona_state_dict.tsv"
DTYPES = {"float32": torch.float32, "int64": torch.int64}


def read_tsv() -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    out = {}
    for line in TSV.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape, dtype = line.split("\t")
        dims = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
        out[key] = (dims, DTYPES[dtype])
    return out


def random_state_dict(spec, seed: int = 0) -> dict[str, torch.Tensor]:
    """Plausible random tensors for every key: fan-in scaled weights, positive running_var."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, (shape, dtype) in spec.items():
        if dtype == torch.int64:
            sd[key] = torch.randint(0, 1000, shape, generator=g, dtype=torch.int64)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        elif len(shape) > 1:
            sd[key] = torch.randn(shape, generator=g) * math.sqrt(2.0 / math.prod(shape[1:]))
        elif key.endswith(".weight"):  # BatchNorm scale
            sd[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            sd[key] = 0.1 * torch.randn(shape, generator=g)
    return sd


@pytest.fixture(scope="module")
def spec():
    return read_tsv()


@pytest.fixture(scope="module")
def loaded(spec):
    """The faithful model (1 channel, 4 raters) with a random reference state-dict loaded."""
    torch.manual_seed(0)
    info = DatasetInfo("lidc", 1, 4, ("a", "b", "c", "d"), (128, 128))
    model = dpersona(DPersonaConfig(faithful_stage2=True)).build(info).eval()
    sd = random_state_dict(spec)
    load_reference_state_dict(model, sd)
    return model, sd


def test_tsv_lists_the_reference_model(spec):
    assert len(spec) == 396
    n_params = sum(math.prod(s) for k, (s, d) in spec.items()
                   if d == torch.float32 and not k.endswith(("running_mean", "running_var")))
    assert n_params == 28_455_033


def test_export_has_exactly_the_tsv_keys_shapes_dtypes(loaded, spec):
    model, sd = loaded
    exported = export_reference_state_dict(model)
    assert {k: (tuple(v.shape), v.dtype) for k, v in exported.items()} == spec
    assert all(torch.equal(exported[k], sd[k]) for k in spec)  # loaded values land where they belong


def test_features_equal_an_independent_smp_unet(loaded):
    model, sd = loaded
    unet = smp.Unet(encoder_name="resnet34", encoder_weights=None, in_channels=1, classes=1).eval()
    renamed = {k.replace("unet.seg_encoder.", "encoder.").replace("unet.seg_decoder.", "decoder."): v
               for k, v in sd.items() if k.startswith("unet.")}
    result = unet.load_state_dict(renamed, strict=False)
    assert not result.unexpected_keys and all(k.startswith("segmentation_head.") for k in result.missing_keys)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.backbone(x), unet.decoder(unet.encoder(x)))


def reference_gaussian(sd, prefix: str, x: torch.Tensor, latent: int = 6):
    """Reference encoder from its layer layout: conv (+ReLU at i+1) where the listing has a
    weight, AvgPool2d(2, ceil_mode=True) at every other gap."""
    convs = {int(k.split(".")[3]) for k in sd if k.startswith(f"{prefix}.encoder.layers.") and k.endswith("weight")}
    h = x
    for i in range(max(convs) + 1):
        if i in convs:
            h = torch.relu(F.conv2d(h, sd[f"{prefix}.encoder.layers.{i}.weight"],
                                    sd[f"{prefix}.encoder.layers.{i}.bias"], padding=1))
        elif i - 1 not in convs:
            h = F.avg_pool2d(h, 2, ceil_mode=True)
    out = F.conv2d(h.mean((2, 3), keepdim=True), sd[f"{prefix}.conv_layer.weight"], sd[f"{prefix}.conv_layer.bias"])
    return out[:, :latent, 0, 0], out[:, latent:, 0, 0]


def test_prior_and_posterior_equal_reference(loaded):
    model, sd = loaded
    x, masks = torch.randn(2, 1, 37, 37), (torch.rand(2, 4, 37, 37) > 0.5).float()  # odd size: ceil pooling
    with torch.no_grad():
        for ours, ref in ((model.prior(x), reference_gaussian(sd, "prior", x)),
                          (model.posterior(torch.cat([x, masks], 1)),
                           reference_gaussian(sd, "posterior", torch.cat([x, masks], 1)))):
            torch.testing.assert_close(ours[0], ref[0], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(ours[1], ref[1], rtol=1e-4, atol=1e-5)


def test_fcomb_equals_reference_tile_concat(loaded):
    model, sd = loaded
    features, z = torch.randn(2, 16, 12, 12), torch.randn(2, 6)
    h = torch.cat([features, z[:, :, None, None].expand(-1, -1, 12, 12)], 1)
    for i in (0, 2, 4):
        h = torch.relu(F.conv2d(h, sd[f"fcomb.layers.{i}.weight"], sd[f"fcomb.layers.{i}.bias"]))
    ref = F.conv2d(h, sd["fcomb.last_layer.weight"], sd["fcomb.last_layer.bias"])
    with torch.no_grad():
        torch.testing.assert_close(model.fcomb(features, z[:, None]), ref, rtol=1e-4, atol=1e-5)


def test_head_queries_equal_reference_padding_three(loaded):
    model, sd = loaded
    features = torch.randn(2, 16, 24, 24)
    with torch.no_grad():
        q = model.heads(features)
    for r in range(4):
        h = features
        for i in (0, 3, 6, 9, 12, 15):
            if i in (6, 12):  # AvgPool2d(2) at layers 5 and 11
                h = F.avg_pool2d(h, 2)
            key = f"proj_heads.multi_expert_heads.{r}.layers.{i}"
            h = torch.relu(F.conv2d(h, sd[f"{key}.weight"], sd[f"{key}.bias"], padding=3))
        torch.testing.assert_close(q[:, r], h.mean((2, 3)), rtol=1e-4, atol=1e-6)


def test_missing_misshapen_unexpected_keys_fail_naming_them(loaded, spec):
    model, sd = loaded
    before = {k: v.clone() for k, v in model.state_dict().items()}
    missing = dict(sd)
    del missing["prior.encoder.layers.7.bias"]
    with pytest.raises(ValueError, match=r"missing key\(s\): prior\.encoder\.layers\.7\.bias"):
        load_reference_state_dict(model, missing)
    bad = dict(sd)
    bad["proj_heads.multi_expert_heads.2.layers.9.weight"] = torch.zeros(16, 16, 5, 5)
    with pytest.raises(ValueError, match=r"multi_expert_heads\.2\.layers\.9\.weight.*\(16, 16, 5, 5\), expected \(16, 16, 3, 3\)"):
        load_reference_state_dict(model, bad)
    extra = {**sd, "proj_heads.multi_expert_heads.4.layers.0.weight": torch.zeros(32, 16, 3, 3)}
    with pytest.raises(ValueError, match=r"unexpected key\(s\): proj_heads\.multi_expert_heads\.4"):
        load_reference_state_dict(model, extra)
    with pytest.raises(ValueError, match="not a tensor"):
        load_reference_state_dict(model, {**sd, "fcomb.last_layer.bias": [0.0]})
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # failed loads change nothing


def test_checkpoint_file_round_trip(loaded, tmp_path):
    model, sd = loaded
    path = tmp_path / "best.pth"
    torch.save({f"module.{k}": v for k, v in sd.items()}, path)  # DataParallel-style names
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    load_reference_checkpoint(model, path)
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    fresh = model
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_reference_checkpoint(fresh, tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        load_reference_checkpoint(fresh, tmp_path / "junk.pth")
