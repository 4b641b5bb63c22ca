"""``folder``: a user's own multi-rater data, no code needed (``--dataset folder --data-root DIR``).

Layout::

    DIR/images/<case>.<ext>          one image per case (2-D image or 3-D volume)
    DIR/masks/<rater>/<case>.<ext>   one folder per rater; a missing file = that rater did not
                                     annotate that case (rater_valid False, empty mask)
    DIR/cases.csv      (optional)    columns case, group [, split]; split in train|val|test
                                     fixes the split (every case then needs one)
    DIR/dataset.json   (optional)    see ``JSON_KEYS``

Extensions: png, jpg/jpeg, tif/tiff, bmp, npy, nii/nii.gz (``readers.py``); a case id is the
file stem (``.nii.gz`` counts as one suffix); a mask may have another extension than its image.

- Images: grey or RGB (``channels`` in dataset.json forces the count; grey is repeated to 3),
  uint8/uint16/float. ``normalize``: ``"image"`` (default; min-max over the whole image or
  volume to [0,1]), ``"dataset"`` (min-max over all images), ``"none"`` (values as float32).
- Masks: by default a mask must hold at most one non-zero value (0/1, 0/255, True/False are all
  fine) and non-zero is foreground; a mask with several non-zero values needs ``label``: one
  value, a list of values (their union), ``"#rrggbb"`` for an RGB mask, or ``"any"`` (every
  non-zero value). RGB masks and palette PNGs are label maps (``0xRRGGBB`` / palette index).
  Mask values are never interpolated (nearest-neighbour resizing).
- 3-D: an npy/NIfTI image whose masks have the same 3-D shape (or, with no mask, whose last
  axis is longer than 4; ``volumes`` forces it) is a volume ``(X,Y,Z[,C])``. It is cut into 2-D
  slices along ``slice_axis`` (default the last spatial one); ``slices="all"`` or
  ``"foreground"`` (+ ``context`` neighbours), see ``volumes.keep_slices``. Slice case ids are
  ``<case>_s<k>``; their group (patient) is the volume's group, so a volume never straddles a
  split; ``volume_ids`` lets a run aggregate metrics per volume (``run.aggregate=volume``).
- ``resize`` (or the ``image_size`` option): [H, W] or one int; without it every slice/image
  must have the same size.

Every file is decoded and checked when the dataset is built (decoded arrays are cached, see
``cache.py``); ``scan_folder`` returns the dataset and the list of problems, each naming its file,
and the registered factory raises ``FolderDataError`` listing them all, so a run with bad data
fails while planning, before anything is written.
"""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..types import DatasetInfo, MultiRaterSample
from ._common import dataset_factory, require_root, resize_image, resize_masks, to_size
from .base import MultiRaterDataset, Split
from .cache import DecodeCache
from .readers import EXTS, PIL_EXTS, decode_image, decode_mask, pack_rgb, split_name
from .volumes import SLICE_MODES, keep_slices, slice_case_id

LAYOUT = ("  <root>/images/<case>.<ext>          (png, jpg, tif, bmp, npy, nii, nii.gz)\n"
          "  <root>/masks/<rater>/<case>.<ext>   (one folder per rater; missing file = not annotated)\n"
          "  <root>/cases.csv                    (optional: case, group[, split])\n"
          "  <root>/dataset.json                 (optional: name, rater_identity, raters, channels, label, ...)")
JSON_KEYS = ("name", "rater_identity", "raters", "channels", "label", "slice_axis", "slices", "context",
             "resize", "normalize", "volumes")
NORMALIZE = ("image", "dataset", "none")
SPLITS = ("train", "val", "test")
MAX_RESIZE = 4096  # pixels per side of ``resize``


MAX_LISTED = 10  # problems listed in a FolderDataError message ("... and K more" after)


class FolderDataError(ValueError):
    """The folder has problems; ``problems`` lists every one (each names its file)."""

    def __init__(self, root: Path, problems: list[Problem]) -> None:
        self.problems = problems
        first = problems[0]
        shown = problems[:MAX_LISTED]
        more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        super().__init__(f"dataset 'folder': {len(problems)} problem(s) in {root}, first: {first}; "
                         f"`mrseg-bench data check --dataset folder --data-root {root}` lists them all\n"
                         + "\n".join(f"  {p}" for p in shown) + more)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the data: the file (or folder) and why."""

    file: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


@dataclass
class FolderOptions:
    """dataset.json merged with the factory options (factory wins)."""

    name: str = "folder"
    rater_identity: str = "fixed"
    raters: list[str] | None = None
    channels: int | None = None
    label: Any = None
    slice_axis: int = -1
    slices: str = "all"
    context: int = 0
    resize: tuple[int, int] | None = None
    normalize: str = "image"
    volumes: bool | None = None


def parse_label(value: Any, where: str) -> tuple[str, tuple[int, ...] | None]:
    """``label`` -> (kind, values): ("binary", None) default, ("any", None), ("values", (v,...)).
    Accepts an int, a list of ints, ``"#rrggbb"``, ``"any"`` or a comma string of those."""
    if value is None:
        return "binary", None
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == "any":
            return "any", None
        parts = [p.strip() for p in text.split(",") if p.strip()]
        out = []
        for p in parts:
            try:
                out.append(int(p[1:], 16) if p.startswith("#") else int(float(p)))
            except ValueError:
                raise ValueError(f"{where}: label={value!r} must be an int, a list of ints, '#rrggbb' or 'any'") from None
        if not out:
            raise ValueError(f"{where}: label={value!r} is empty")
        return "values", tuple(out)
    if isinstance(value, bool):
        raise ValueError(f"{where}: label={value!r} must be an int, a list of ints, '#rrggbb' or 'any'")
    if isinstance(value, int | float):
        return "values", (int(value),)
    if isinstance(value, list | tuple) and value:
        return "values", tuple(v for item in value for v in parse_label(item, where)[1] or ())
    raise ValueError(f"{where}: label={value!r} must be an int, a list of ints, '#rrggbb' or 'any'")


def _read_json(path: Path, problems: list[Problem]) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(Problem(str(path), f"not valid JSON ({exc})"))
        return {}
    if not isinstance(data, dict):
        problems.append(Problem(str(path), "expected a JSON object"))
        return {}
    unknown = sorted(set(data) - set(JSON_KEYS))
    if unknown:
        problems.append(Problem(str(path), f"unknown key(s) {', '.join(unknown)}; valid: {', '.join(JSON_KEYS)}"))
    return {k: v for k, v in data.items() if k in JSON_KEYS}


def _options(root: Path, overrides: dict[str, Any], problems: list[Problem]) -> FolderOptions:
    src = root / "dataset.json"
    raw = {**_read_json(src, problems), **{k: v for k, v in overrides.items() if v is not None}}
    opts = FolderOptions()
    checks: dict[str, tuple[Any, str]] = {
        "name": (lambda v: isinstance(v, str) and v.strip(), "a non-empty string"),
        "rater_identity": (lambda v: v in ("fixed", "anonymous"), "'fixed' or 'anonymous'"),
        "raters": (lambda v: isinstance(v, list) and v and all(isinstance(x, str) and x for x in v)
                   and len(set(v)) == len(v), "a list of distinct rater folder names"),
        "channels": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v in (1, 3), "1 or 3"),
        "slice_axis": (lambda v: isinstance(v, int) and not isinstance(v, bool) and -3 <= v <= 2,
                       "a spatial axis -3..2"),
        "slices": (lambda v: v in SLICE_MODES, " or ".join(SLICE_MODES)),
        "context": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an int >= 0"),
        "normalize": (lambda v: v in NORMALIZE, " | ".join(NORMALIZE)),
        "volumes": (lambda v: isinstance(v, bool), "true or false"),
    }
    for key, value in raw.items():
        where = str(src) if key not in overrides or overrides[key] is None else f"dataset option {key}"
        if key in checks:
            ok, want = checks[key]
            if not ok(value):
                problems.append(Problem(where, f"{key}={value!r} must be {want}"))
                continue
            setattr(opts, key, value)
        elif key == "label":
            try:
                parse_label(value, where)
                opts.label = value
            except ValueError as exc:
                problems.append(Problem(where, str(exc).split(": ", 1)[-1]))
        elif key == "resize":
            try:
                size = to_size(tuple(value) if isinstance(value, list) else value)
            except (ValueError, TypeError):
                problems.append(Problem(where, f"resize={value!r} must be an int or [H, W]"))
                continue
            if size is not None and not all(1 <= n <= MAX_RESIZE for n in size):
                problems.append(Problem(where, f"resize={value!r}: each side must be 1..{MAX_RESIZE} pixels"))
                continue
            opts.resize = size
    return opts


def _list_files(folder: Path, problems: list[Problem], notes: list[str],
                broken: set[str] | None = None) -> dict[str, Path]:
    """{case id: file} of the supported files in ``folder``; duplicate ids are problems, and so
    is an entry with a supported extension that is not a readable file (a dangling symlink, a
    folder): its case id goes to ``broken``, so it is not mistaken for a missing file."""
    found: dict[str, list[Path]] = defaultdict(list)
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        stem, ext = split_name(p.name)
        if not p.is_file():
            if ext in EXTS:
                what = ("a symlink to a missing file" if p.is_symlink() and not p.exists()
                        else "a folder" if p.is_dir() else "not a regular file")
                problems.append(Problem(str(p), f"{what}, not a readable {ext} file; replace it with the file "
                                                "or remove it"))
                if broken is not None:
                    broken.add(stem)
            continue
        if ext not in EXTS:
            notes.append(f"{p}: ignored (extension {ext or 'none'} is not one of {', '.join(EXTS)})")
            continue
        found[stem].append(p)
    out = {}
    for stem, paths in found.items():
        if len(paths) > 1:
            problems.append(Problem(str(paths[1]), f"duplicate case id {stem!r} (also {paths[0].name})"))
        out[stem] = paths[0]
    return out


def _read_cases_csv(path: Path, problems: list[Problem]) -> dict[str, tuple[str, str | None]]:
    """{case: (group, split or None)} from cases.csv; problems for bad rows."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
            header = [c.strip() for c in (rows[0].keys() if rows else [])]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        problems.append(Problem(str(path), f"not a readable CSV file ({exc})"))
        return {}
    if not rows or "case" not in header or "group" not in header:
        problems.append(Problem(str(path), f"needs a header with columns case, group[, split]; got {header}"))
        return {}
    out: dict[str, tuple[str, str | None]] = {}
    for n, row in enumerate(rows, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        case, group, split = row.get("case", ""), row.get("group", ""), row.get("split") or None
        if not case or not group:
            problems.append(Problem(f"{path}:{n}", "empty case or group"))
            continue
        if case in out:
            problems.append(Problem(f"{path}:{n}", f"duplicate case {case!r}"))
            continue
        if split is not None and split not in SPLITS:
            problems.append(Problem(f"{path}:{n}", f"split {split!r} is not one of {', '.join(SPLITS)}"))
            split = None
        out[case] = (group, split)
    splits = {s for _, s in out.values()}
    if None in splits and len(splits) > 1:
        missing = sorted(c for c, (_, s) in out.items() if s is None)
        problems.append(Problem(str(path), f"split given for some cases only; missing for {missing[:5]}"))
    by_group: dict[str, set[str]] = defaultdict(set)
    for group, split in out.values():
        if split is not None:
            by_group[group].add(split)
    for group, sides in sorted(by_group.items()):
        if len(sides) > 1:
            problems.append(Problem(str(path), f"group {group!r} is split across {', '.join(sorted(sides))} "
                                               "(a patient must stay on one side)"))
    return out


@dataclass
class _Case:
    """One image file and its raters' mask files, decoded and checked."""

    case: str
    image: Path
    masks: list[Path | None]
    volume: bool = False
    channels: int = 1
    spatial: tuple[int, ...] = ()
    lo: float = 0.0
    hi: float = 1.0
    slices: list[int] = field(default_factory=list)


def _binary_problem(arr: np.ndarray, kind: str, values: tuple[int, ...] | None) -> str | None:
    """Why ``arr`` cannot be read as a mask under the label rule, or None."""
    if kind != "binary":
        return None
    nz = arr[arr != 0]
    if nz.size == 0:
        return None
    first = nz.flat[0]
    if (nz == first).all():
        return None
    vals = np.unique(nz)
    shown = [_plain(v, arr) for v in vals[:6]]
    every, counts = np.unique(arr, return_counts=True)
    top = np.argsort(counts, kind="stable")[::-1][:2]
    obj, bg = (int(top[1]), int(top[0])) if top.size > 1 else (int(top[0]), int(top[0]))
    share = counts[obj] / arr.size
    return (f"mask is not binary (non-zero values {shown}{' ...' if vals.size > 6 else ''}); the object is "
            f"likely the minority value {_plain(every[obj], arr)} ({share:.0%} of the pixels; "
            f"{_plain(every[bg], arr)} covers {counts[bg] / arr.size:.0%}): set \"label\": "
            f"{_plain(every[obj], arr)} in dataset.json (or a list, '#rrggbb' or 'any')")


def _plain(v: Any, arr: np.ndarray) -> float | int:
    return float(v) if arr.dtype.kind == "f" else int(v)


def foreground(arr: np.ndarray, kind: str, values: tuple[int, ...] | None) -> np.ndarray:
    """Binary uint8 mask of a decoded label map under the label rule (never interpolated)."""
    if kind == "values":
        return np.isin(arr, np.asarray(values, dtype=np.int64)).astype(np.uint8)
    return (arr != 0).astype(np.uint8)


class FolderDataset(MultiRaterDataset):
    """The cases of a folder (module docstring). Built by ``scan_folder``."""

    def __init__(self, root: Path, opts: FolderOptions, cases: list[_Case], entries: list[tuple[int, int | None]],
                 group_of_case: dict[str, str], split_of_case: dict[str, str] | None, info: DatasetInfo,
                 cache: DecodeCache, dataset_range: tuple[float, float]) -> None:
        self.root, self.opts, self.cases, self.entries, self.info, self.cache = root, opts, cases, entries, info, cache
        self.label_kind, self.label_values = parse_label(opts.label, "label")
        self.dataset_range = dataset_range
        self._case_ids = [cases[c].case if k is None else slice_case_id(cases[c].case, k) for c, k in entries]
        self.volume_ids = [cases[c].case for c, _ in entries]
        self._group_ids = [group_of_case.get(v, v) for v in self.volume_ids]
        self._split = None
        if split_of_case:
            sides: dict[str, list[int]] = {s: [] for s in SPLITS}
            for i, v in enumerate(self.volume_ids):
                sides[split_of_case[v]].append(i)
            self._split = Split(*(tuple(sides[s]) for s in SPLITS), protocol="predefined")

    def predefined_split(self) -> Split | None:
        return self._split

    def _image(self, c: _Case, k: int | None) -> torch.Tensor:
        arr = np.asarray(self.cache.mapped(c.image, decode_image, "image"))
        arr = _as_channels_last(arr, c.volume, c.image.suffix.lower() in PIL_EXTS)
        if k is not None:
            arr = np.take(arr, k, axis=_axis(self.opts.slice_axis))
        img = torch.from_numpy(np.array(np.moveaxis(arr, -1, 0), dtype=np.float32))  # a copy: never the memmap
        if self.opts.normalize != "none":
            lo, hi = (c.lo, c.hi) if self.opts.normalize == "image" else self.dataset_range
            img = (img - lo) / max(hi - lo, 1e-8)
        if img.shape[0] < self.info.in_channels:  # grey among RGB images: repeat
            img = img.expand(self.info.in_channels, -1, -1).contiguous()
        elif img.shape[0] > self.info.in_channels:  # channels=1 asked for RGB images: the mean
            img = img.mean(0, keepdim=True)
        return img

    def _masks(self, c: _Case, k: int | None, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        out = np.zeros((len(c.masks), *hw), dtype=np.uint8)
        valid = np.zeros(len(c.masks), dtype=bool)
        for r, path in enumerate(c.masks):
            if path is None:
                continue
            arr = _mask_labels(np.asarray(self.cache.mapped(path, decode_mask, "mask")), c)
            if k is not None:
                arr = np.take(arr, k, axis=_axis(self.opts.slice_axis))
            out[r] = foreground(arr, self.label_kind, self.label_values)
            valid[r] = True
        return torch.from_numpy(out), torch.from_numpy(valid)

    def __getitem__(self, index: int) -> MultiRaterSample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.info.name}: index {index} out of range for {len(self)} cases")
        ci, k = self.entries[index]
        c = self.cases[ci]
        img = self._image(c, k)
        masks, valid = self._masks(c, k, tuple(img.shape[-2:]))
        img = resize_image(img, self.opts.resize)
        if self.opts.normalize != "none":
            img = img.clamp_(0, 1)
        masks = resize_masks(masks, self.opts.resize)
        sample = MultiRaterSample(img, masks, valid, self._case_ids[index], self._group_ids[index])
        sample.validate(str(c.image))
        return sample


def _axis(slice_axis: int) -> int:
    return slice_axis % 3


def _as_channels_last(arr: np.ndarray, volume: bool, from_pil: bool) -> np.ndarray:
    """Decoded image -> (H,W,C) or (X,Y,Z,C)."""
    if from_pil:
        return arr  # readers give (H,W,C) / (H,W,Z,C)
    want = 3 if volume else 2
    return arr[..., None] if arr.ndim == want else arr


def _mask_labels(arr: np.ndarray, c: _Case) -> np.ndarray:
    """An npy/NIfTI 2-D mask stored as RGB (H,W,3|4) -> packed label map."""
    if not c.volume and arr.ndim == 3 and arr.shape[-1] in (3, 4):
        return pack_rgb(arr)
    return arr


def scan_folder(root: str | Path, image_size: int | None = None, normalize: str | None = None,
                label: str | None = None, slice_axis: int | None = None, slices: str | None = None,
                context: int | None = None, cache: bool = True,
                cache_root: Path | None = None) -> tuple[FolderDataset | None, list[Problem], list[str]]:
    """Decode and check every file of the folder. Returns (dataset or None when there are
    problems, problems, notes). Options override dataset.json's."""
    root = Path(root).expanduser()
    problems: list[Problem] = []
    notes: list[str] = []
    overrides = {"resize": image_size, "normalize": normalize, "label": label, "slice_axis": slice_axis,
                 "slices": slices, "context": context}
    opts = _options(root, overrides, problems)
    kind, values = parse_label(opts.label, "label")  # opts.label was checked by _options
    images_dir, masks_dir = root / "images", root / "masks"
    for d in (images_dir, masks_dir):
        if not d.is_dir():
            problems.append(Problem(str(d), f"missing folder; expected layout:\n{LAYOUT}"))
    if problems and not (images_dir.is_dir() and masks_dir.is_dir()):
        return None, problems, notes
    broken_images: set[str] = set()
    images = _list_files(images_dir, problems, notes, broken_images)
    if not images:
        problems.append(Problem(str(images_dir), "no image files"))
    rater_dirs = sorted(p.name for p in masks_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    raters = list(opts.raters) if opts.raters else rater_dirs
    for r in raters:
        if r not in rater_dirs:
            problems.append(Problem(str(masks_dir / r), "rater folder named in dataset.json does not exist"))
    for r in sorted(set(rater_dirs) - set(raters)):
        notes.append(f"{masks_dir / r}: not in dataset.json 'raters'; ignored")
    if not raters:
        problems.append(Problem(str(masks_dir), "no rater folders (masks/<rater>/<case>.<ext>)"))
    rater_files: list[dict[str, Path]] = []
    for r in raters:
        files = _list_files(masks_dir / r, problems, notes) if (masks_dir / r).is_dir() else {}
        if (masks_dir / r).is_dir() and not files:
            problems.append(Problem(str(masks_dir / r), "rater folder with no mask files"))
        for stem in sorted(set(files) - set(images) - broken_images):
            problems.append(Problem(str(files[stem]), f"mask without an image (no images/{stem}.*)"))
        rater_files.append(files)
    csv_rows: dict[str, tuple[str, str | None]] = {}
    csv_path = root / "cases.csv"
    if csv_path.is_file():
        csv_rows = _read_cases_csv(csv_path, problems)
        for case in sorted(set(images) - set(csv_rows)):
            problems.append(Problem(str(images[case]), f"case {case!r} is missing from {csv_path.name}"))
        for case in sorted(set(csv_rows) - set(images)):
            problems.append(Problem(str(csv_path), f"case {case!r} has no image in images/"))
    store = DecodeCache(cache_root, enabled=cache)
    cases: list[_Case] = []
    for case in sorted(images):
        c = _check_case(case, images[case], [f.get(case) for f in rater_files], opts, kind, values, store, problems)
        if c is not None:
            cases.append(c)
    notes += store.repaired
    channels = opts.channels or max((c.channels for c in cases), default=1)
    for c in cases:
        if c.channels not in (1, channels) and channels != 1:
            problems.append(Problem(str(c.image), f"{c.channels} channels, other images have {channels}; "
                                                  "set \"channels\" in dataset.json"))
    entries: list[tuple[int, int | None]] = []
    for i, c in enumerate(cases):
        if c.volume:
            if not c.slices:
                notes.append(f"{c.image}: no slice kept (slices={opts.slices!r} and no rater marks anything)")
            entries.extend((i, k) for k in c.slices)
        else:
            entries.append((i, None))
    sizes = Counter(_slice_hw(c, opts.slice_axis) for c in cases for _ in (c.slices if c.volume else [None]))
    if opts.resize is None and len(sizes) > 1:
        common = sizes.most_common(1)[0][0]
        odd = [c for c in cases if _slice_hw(c, opts.slice_axis) != common]
        problems.append(Problem(str(odd[0].image), f"image size {_slice_hw(odd[0], opts.slice_axis)} differs from "
                                                   f"the most common {common} ({len(odd)} case(s) differ); set "
                                                   "\"resize\" in dataset.json or --set dataset.image_size=N"))
    if not problems and not entries:
        problems.append(Problem(str(images_dir), "no case left (every volume lost all its slices)"))
    if problems:
        return None, problems, notes
    lo = min(c.lo for c in cases)
    hi = max(c.hi for c in cases)
    size = opts.resize or next(iter(sizes))
    split_of_case = {c: s for c, (_, s) in csv_rows.items() if s is not None} or None
    info = DatasetInfo(opts.name, channels, len(raters), tuple(raters), tuple(size), opts.rater_identity)
    ds = FolderDataset(root, opts, cases, entries, {c: g for c, (g, _) in csv_rows.items()}, split_of_case,
                       info, store, (lo, hi))
    # the run's data fingerprint hashes these (mrseg_bench.identity)
    ds._source_files = sorted({c.image for c in cases} | {m for c in cases for m in c.masks if m is not None}
                              | {p for p in (root / "cases.csv", root / "dataset.json") if p.is_file()})
    return ds, problems, notes


def _slice_hw(c: _Case, slice_axis: int) -> tuple[int, int]:
    if not c.volume:
        return c.spatial[0], c.spatial[1]
    ax = _axis(slice_axis)
    rest = [n for a, n in enumerate(c.spatial) if a != ax]
    return rest[0], rest[1]


def _check_case(case: str, image_path: Path, mask_paths: list[Path | None], opts: FolderOptions, kind: str,
                values: tuple[int, ...] | None, store: DecodeCache, problems: list[Problem]) -> _Case | None:
    """Decode the image and masks of one case; append its problems; None when unusable."""
    n_before = len(problems)
    try:
        img = store.mapped(image_path, decode_image, "image")
    except ValueError as exc:
        problems.append(Problem(str(image_path), str(exc).split(": ", 1)[-1]))
        img = None
    masks: list[np.ndarray | None] = []
    for path in mask_paths:
        if path is None:
            masks.append(None)
            continue
        try:
            masks.append(np.asarray(store.mapped(path, decode_mask, "mask")))
        except ValueError as exc:
            problems.append(Problem(str(path), str(exc).split(": ", 1)[-1]))
            masks.append(None)
    if all(m is None for m in masks) and not any(p is not None for p in mask_paths):
        problems.append(Problem(str(image_path), f"case {case!r} has no valid rater (no mask file in any rater folder)"))
    if img is None:
        return None
    from_pil = image_path.name.lower().endswith(PIL_EXTS)
    arr = np.asarray(img)
    if arr.dtype.kind not in "biuf":
        problems.append(Problem(str(image_path), f"unsupported image dtype {arr.dtype}"))
        return None
    if from_pil:
        volume = arr.ndim == 4
    elif opts.volumes is not None:
        volume = opts.volumes
    else:
        shapes = [m.shape for m in masks if m is not None]
        if arr.ndim == 4:
            volume = True
        elif arr.ndim == 3 and shapes:
            volume = any(len(s) == 3 and s == arr.shape for s in shapes)
        else:
            volume = arr.ndim == 3 and arr.shape[-1] > 4
    arr = _as_channels_last(arr, volume, from_pil)
    want = 4 if volume else 3
    if arr.ndim != want or arr.shape[-1] not in (1, 3, 4):
        problems.append(Problem(str(image_path), f"image shape {np.asarray(img).shape} is neither (H,W[,C]) nor "
                                                 "(X,Y,Z[,C]) with C in 1, 3"))
        return None
    if arr.shape[-1] == 4:
        problems.append(Problem(str(image_path), "4 channels; use grey or RGB images"))
        return None
    spatial = tuple(arr.shape[:-1])
    c = _Case(case, image_path, list(mask_paths), volume, int(arr.shape[-1]), spatial)
    finite = np.isfinite(arr) if arr.dtype.kind == "f" else None
    if finite is not None and not finite.all():
        problems.append(Problem(str(image_path), "image holds NaN or infinite values"))
        return None
    c.lo, c.hi = float(arr.min()), float(arr.max())
    fg_slices = None
    for path, m in zip(mask_paths, masks, strict=True):
        if m is None:
            continue
        m = _mask_labels(m, c)
        if m.dtype.kind not in "biuf":
            problems.append(Problem(str(path), f"unsupported mask dtype {m.dtype}"))
            continue
        if tuple(m.shape) != spatial:
            problems.append(Problem(str(path), f"mask size {tuple(m.shape)} differs from its image "
                                               f"{spatial} ({image_path.name})"))
            continue
        why = _binary_problem(m, kind, values)
        if why:
            problems.append(Problem(str(path), why))
            continue
        if volume:
            ax = _axis(opts.slice_axis)
            fg = foreground(m, kind, values).any(axis=tuple(a for a in range(3) if a != ax))
            fg_slices = fg if fg_slices is None else fg_slices | fg
    if volume:
        n = spatial[_axis(opts.slice_axis)]
        fg_slices = np.zeros(n, dtype=bool) if fg_slices is None else fg_slices
        c.slices = keep_slices(fg_slices, opts.slices, opts.context).tolist()
    return c if len(problems) == n_before else None


@dataset_factory("folder")
def folder(root: str | Path | None = None, image_size: int | None = None, normalize: str = "",
           label: str | None = None, slice_axis: int | None = None, slices: str | None = None,
           context: int | None = None, cache: bool = True) -> FolderDataset:
    """Your own data: images/<case>.<ext> + masks/<rater>/<case>.<ext> (see datasets/folder.py).
    Options (override dataset.json): ``image_size`` (resize), ``normalize`` (image | dataset |
    none; "" = dataset.json's, else image), ``label``, ``slice_axis``, ``slices`` (all | foreground), ``context``, ``cache``."""
    base = require_root(root, "folder", LAYOUT)
    ds, problems, _ = scan_folder(base, image_size, normalize or None, label, slice_axis, slices, context, cache)
    if problems or ds is None:
        raise FolderDataError(base, problems)
    return ds
