"""Version 2 of the synthetic set: visible objects, style and ambiguity as the only two sources
of disagreement, knobs, references; version 1 unchanged."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from mrseg_bench import identity
from mrseg_bench.datasets import mask_scores as ms
from mrseg_bench.datasets import synthetic_v2 as v2
from mrseg_bench.datasets.splits import make_split
from mrseg_bench.datasets.synthetic import SyntheticMultiRater
from mrseg_bench.registry import DATASETS

syn = DATASETS.get("synthetic")


def _hash(ds, indices) -> str:
    h = hashlib.sha256()
    for i in indices:
        s = ds[i]
        h.update(s.image.numpy().tobytes())
        h.update(s.masks.numpy().tobytes())
    return h.hexdigest()


# -- version 1 stays what it was ------------------------------------------------------------------
# Golden values: computed with the generator before version 2 existed (main at 9b40e1c).
def test_version_1_arrays_are_unchanged():
    assert _hash(SyntheticMultiRater(num_cases=10, image_size=32), range(10)) == \
        "466f150fe817efbe0eff784a7893b5e9990ae2c7c5591d7ee4f1c6e1c150da1b"
    assert _hash(SyntheticMultiRater(num_cases=6, image_size=64, seed=3, num_raters=3), range(6)) == \
        "b98d039a346551f93b19445a2e53953be0e46e772b8deb81008455831d2c78be"


def test_version_1_default_preset_test_split_and_references_are_unchanged():
    ds = syn(num_cases=120, image_size=64, version=1)  # the old default preset's data
    test = list(make_split(ds, protocol="default", seed=None, val_fraction=0.15, test_fraction=0.2,
                           num_folds=None, fold=None).test)
    assert test == [1, 5, 13, 16, 20, 23, 27, 34, 36, 44, 50, 67, 84, 87, 97, 98, 99, 100, 101, 107,
                    110, 111, 114, 117]
    assert _hash(ds, test) == "7f770483e3a35d85dc5893da969911d304c86b6f52c4819f71a5c51764fba5bd"
    refs = ds.reference_scores(test)
    assert list(refs) == ["oracle", "shared mask"]  # no new rows for version 1
    assert refs["oracle"] == pytest.approx([0.8712688654934365, 0.9617907217260141, 0.9502891647022151,
                                            0.9469165899907747], abs=1e-12)
    assert refs["shared mask"] == pytest.approx([0.5152589614951687, 0.6688668365160718, 0.8996870444481093,
                                                 0.5979673293987705], abs=1e-12)
    assert ds.reference_values(test) == {}
    # the same data fingerprint, so the same run identities as before version 2
    assert identity.data_fingerprint(ds) == \
        "sha256:bc65432dcdd812e8e92b36be15d6cb6e3a1e0e3a342728e1a95dae1bcbd28f96"
    assert identity.data_fingerprint(syn(num_cases=80, image_size=32)) == \
        "sha256:68a1fe2b32edf7c358ce0a90b39c12e752557138bf0791852b9e7181fa18dd59"  # the ci preset's


# -- version 2 ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ds2() -> SyntheticMultiRater:
    return syn(num_cases=40, image_size=48, seed=5, version=2)


@pytest.fixture(scope="module")
def comps(ds2):
    return [ds2._v2_case(i) for i in range(len(ds2))]


def test_contract_determinism_and_own_stream(ds2):
    s = ds2[0]
    s.validate()
    assert s.image.shape == (1, 48, 48) and s.masks.shape == (4, 48, 48) and s.masks.dtype == torch.uint8
    assert ds2.info.rater_names == ("tight", "generous", "smooth", "strong-only")
    assert ds2.rater_styles == list(v2.STYLES) and ds2.fingerprint_params()["generator_version"] == 2
    again = syn(num_cases=40, image_size=48, seed=5, version=2, cache=False)
    assert _hash(again, [3, 7]) == _hash(ds2, [3, 7]) == _hash(again, [3, 7])
    assert _hash(syn(num_cases=40, image_size=48, seed=6, version=2), [3]) != _hash(ds2, [3])
    assert _hash(syn(num_cases=40, image_size=48, seed=5, version=1), [3]) != _hash(ds2, [3])


def test_styles_and_area_order(ds2, comps):
    for _, _, c in comps:  # on the same object (core, or core and lobe) erosion is inside dilation
        assert not (c.core[0] & ~c.core[1]).any() and not (c.full[0] & ~c.full[1]).any()
    masks = torch.stack([ds2[i].masks for i in range(len(ds2))]).bool()
    area = masks.float().sum((2, 3)).mean(0)
    assert area[0] < area[2] < area[1] and area[3] < area[2]  # tight, strong-only < smooth < generous


def test_only_two_sources_without_jitter():
    # no ambiguity: every annotation IS its oracle (style applied to the object); nothing random
    ds = syn(num_cases=12, image_size=32, version=2, ambiguity=0.0)
    assert ds.oracle_dice().tolist() == [1.0] * 4
    split = ds.disagreement_split()
    assert split["ambiguity"] == 0.0 and split["style"] > 0.2
    # no style either: every rater draws the true outline
    ds = syn(num_cases=12, image_size=32, version=2, ambiguity=0.0, style=0.0)
    for i in range(12):
        m = ds[i].masks.bool()
        assert (m == ds.true_mask(i)).all()
    assert ds.disagreement_split() == {"style": 0.0, "ambiguity": 0.0}
    # ambiguity alone: raters differ only by the lobe they include at random
    ds = syn(num_cases=30, image_size=32, version=2, ambiguity=1.0, style=0.0)
    split = ds.disagreement_split()
    assert split["style"] == 0.0 and split["ambiguity"] > 0.05


def test_jitter_is_a_third_source_only_when_asked_and_one_rater_works():
    ds = syn(num_cases=8, image_size=32, version=2, ambiguity=0.0, jitter=0.02)
    oracle = ds.oracle_dice()
    assert (oracle < 1).all() and (oracle > 0.7).all()  # the jittered masks are not the oracle's
    one = syn(num_cases=8, image_size=32, version=2, num_raters=1)
    assert one[0].masks.shape == (1, 32, 32) and one.disagreement_split()["style"] == 0.0
    assert one.reference_scores([0, 1])["attainable"][0] <= one.reference_scores([0, 1])["oracle"][0]


def test_ambiguity_is_random_per_case_and_rater(comps):
    lobed = [(p, c) for p, _, c in comps if c.has_lobe]
    assert 0.5 < len(lobed) / len(comps) < 0.95  # ambiguity = 0.75 of the cases
    inc = np.stack([p["include"] for p, _ in lobed])
    assert 0.3 < inc.mean() < 0.7  # include_p = 0.5
    for p, c in lobed:
        for r in range(4):  # each drawn mask is the rater's core or full mask, as its draw says
            want = c.full[r] if p["include"][r] else c.core[r]
            assert (c.masks[r] == want).all()
    for _p, _, c in comps:
        if not c.has_lobe:
            assert (c.core == c.full).all() and (c.masks == c.core).all()


def test_include_p_extremes_and_oracle_choice():
    always = syn(num_cases=10, image_size=32, version=2, ambiguity=1.0, include_p=1.0)
    never = syn(num_cases=10, image_size=32, version=2, ambiguity=1.0, include_p=0.0)
    for i in range(10):
        a, n = always._v2_case(i)[2], never._v2_case(i)[2]
        assert (a.masks == a.full).all() and (a.oracle == a.full).all()
        assert (n.masks == n.core).all() and (n.oracle == n.core).all()
        assert (a.core == n.core).all()
    # a rater that always (never) includes the lobe is fully predictable: oracle Dice 1
    assert always.oracle_dice().tolist() == [1.0] * 4 == never.oracle_dice().tolist()
    assert always.disagreement_split()["ambiguity"] == 0.0


def test_every_shape_is_well_above_the_noise(ds2, comps):
    """The image determines the object: along every used shape's outline the image steps up by
    at least 0.1 (the weakest lobe: 0.19 before blurring) while the background's pixel-to-pixel
    noise is about 0.03."""
    for i, (p, d, _c) in enumerate(comps):
        img = ds2[i].image[0].numpy().astype(np.float64)
        outside = (d > 1.5).all(0)
        for k in np.flatnonzero(p["used"]):
            others = np.delete(d, k, axis=0)
            own = (d[k] < -1.5) & (others > 1.5).all(0)  # inside shape k only
            if own.sum() < 5:
                continue
            ring = outside & (d[k] < 4)
            assert img[own].mean() - img[ring].mean() > 0.1, (i, k)
        bg = img[outside]
        assert np.abs(np.diff(img, axis=1))[outside[:, 1:] & outside[:, :-1]].std() < 0.06
        assert bg.std() < 0.1


def test_a_fixed_threshold_already_finds_the_object():
    """No learning: the lightly smoothed image thresholded halfway up the faintest edge (a lobe
    on a weak lesion, 0.19) recovers every shape (lesions and lobe) with a mean Dice near what
    the object itself reaches one pixel off (measured: 0.923 vs 0.938 on 60 cases at 64 px)."""
    from scipy.ndimage import gaussian_filter

    ds = syn(num_cases=20, image_size=64, version=2)
    got, one_px = [], []
    for i in range(20):
        _, d, _ = ds._v2_case(i)
        shapes = (d < 0).any(0)
        seg = gaussian_filter(ds[i].image[0].numpy().astype(np.float64), 0.7) > 0.3 + 0.6 * 0.45 * 0.7 / 2
        got.append(ms.dice(seg, shapes))
        one_px.append(ms.attainable_dice(shapes, shapes))
    assert np.mean(got) > 0.88 and np.mean(got) > np.mean(one_px) - 0.05


def test_knobs_move_what_they_say():
    base = syn(num_cases=6, image_size=32, version=2)
    bright = syn(num_cases=6, image_size=32, version=2, contrast=2.0)
    big = syn(num_cases=6, image_size=32, version=2, size=1.3)
    for i in range(6):
        assert torch.equal(base[i].masks, bright[i].masks)  # contrast changes the image only
        step = bright[i].image - base[i].image
        assert step.max() > 0.2 and step.min() >= -1e-6
    area = torch.stack([base[i].masks for i in range(6)]).float().sum()
    assert torch.stack([big[i].masks for i in range(6)]).float().sum() > 1.3 * area
    strong = syn(num_cases=20, image_size=32, version=2, style=2.0, ambiguity=0.0)
    weak = syn(num_cases=20, image_size=32, version=2, style=0.5, ambiguity=0.0)
    assert strong.disagreement_split()["style"] > weak.disagreement_split()["style"] + 0.1


@pytest.mark.parametrize("opts, match", [
    (dict(version=3), "version must be one of 1, 2"),
    (dict(version=1, contrast=2.0), "contrast apply to version 2 only"),
    (dict(version=2, contrast=0.0), r"contrast must be in \(0, 4\]"),
    (dict(version=2, ambiguity=1.5), r"ambiguity must be in \[0, 1\]"),
    (dict(version=2, include_p=-0.1), r"include_p must be in \[0, 1\]"),
    (dict(version=2, style=float("nan")), "style must be in"),
    (dict(version=2, jitter=0.5), "jitter must be in"),
])
def test_bad_options_are_one_line_errors(opts, match):
    with pytest.raises(ValueError, match=match):
        syn(num_cases=4, image_size=32, **opts)


def test_version_and_knobs_enter_the_fingerprint():
    fp = identity.data_fingerprint
    one, two = fp(syn(num_cases=8, image_size=32)), fp(syn(num_cases=8, image_size=32, version=2))
    assert one != two
    assert fp(syn(num_cases=8, image_size=32, version=2, cache=False)) == two
    for knob in (dict(contrast=0.8), dict(size=0.9), dict(ambiguity=0.5), dict(include_p=0.3),
                 dict(style=0.5), dict(jitter=0.01)):
        assert fp(syn(num_cases=8, image_size=32, version=2, **knob)) != two, knob


def test_references_of_version_2(ds2):
    idx = list(range(0, 40, 3))
    refs = ds2.reference_scores(idx)
    assert list(refs) == ["oracle", "attainable", "shared mask"]
    sc = ds2._scores(idx)
    for i, row in zip(idx, sc["attainable"], strict=True):
        c = ds2._v2_case(i)[2]
        assert row.tolist() == ms.attainable_dice(c.oracle, c.masks).tolist()
    oracle, att, shared = (np.array(refs[k]) for k in ("oracle", "attainable", "shared mask"))
    assert (att < oracle).all() and (shared < oracle).all() and (oracle > 0.9).all()
    vals = ds2.reference_values(idx)
    assert vals == {"style disagreement": pytest.approx(float(sc["style"].mean())),
                    "ambiguity disagreement": pytest.approx(float(sc["ambiguity"].mean()))}
    assert 0 < vals["ambiguity disagreement"] < vals["style disagreement"] < 1
