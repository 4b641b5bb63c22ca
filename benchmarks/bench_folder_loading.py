"""Folder dataset loading speed: N PNG cases (default 1,000 of 128x128, 4 raters), cold (empty
decoded-array cache: every file decoded) vs warm (cache filled: files hashed, arrays memory-mapped).

Each measurement = building the dataset (``folder(root)``: lists, decodes or maps, and checks
every file) + one epoch through ``make_loader`` (batch 12, shuffled, no workers). ``cache off``
decodes every file at build and again in every epoch.

Run: ``PYTHONPATH=. OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_folder_loading.py``
(``--cases 200`` for a quick look). Writes nothing outside a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_folder(root: Path, cases: int, size: int, raters: int) -> None:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    for r in range(raters):
        (root / "masks" / f"rater{r + 1}").mkdir(parents=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(cases):
        img = rng.integers(0, 256, (size, size), dtype=np.uint8)
        Image.fromarray(img).save(root / "images" / f"case{i:04d}.png")
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        for r in range(raters):
            rad = size / 8 + 2 * r + rng.normal(0, 1)
            m = (((yy - cy) ** 2 + (xx - cx) ** 2) < rad ** 2).astype(np.uint8) * 255
            Image.fromarray(m).save(root / "masks" / f"rater{r + 1}" / f"case{i:04d}.png")


def one_pass(root: Path, cache: bool) -> tuple[float, float, object]:
    from mrseg_bench.datasets.folder import folder
    from mrseg_bench.datasets.loader import make_loader

    t0 = time.perf_counter()
    ds = folder(root, cache=cache)
    t1 = time.perf_counter()
    n = sum(len(b) for b in make_loader(ds, range(len(ds)), 12, shuffle=True, seed=0, num_workers=0))
    t2 = time.perf_counter()
    assert n == len(ds)
    return t1 - t0, t2 - t1, ds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--raters", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, cache_dir = Path(tmp) / "data", Path(tmp) / "cache"
        os.environ["MRSEG_BENCH_CACHE"] = str(cache_dir)
        make_folder(root, args.cases, args.size, args.raters)
        files = args.cases * (1 + args.raters)
        print(f"{args.cases} cases x {args.raters} raters, {args.size}x{args.size} PNG ({files} files)")
        rows = []
        b, e, ds = one_pass(root, cache=False)
        rows.append(("cache off", b, e, ds.cache.misses))
        b, e, ds = one_pass(root, cache=True)
        rows.append(("cold (empty cache)", b, e, ds.cache.misses))
        t = time.perf_counter()
        from mrseg_bench.datasets.loader import make_loader

        sum(len(x) for x in make_loader(ds, range(len(ds)), 12, shuffle=True, seed=1, num_workers=0))
        rows.append(("  2nd epoch, same object", 0.0, time.perf_counter() - t, 0))
        b, e, ds = one_pass(root, cache=True)
        rows.append(("warm (cache filled)", b, e, ds.cache.misses))
        size_mb = sum(p.stat().st_size for p in cache_dir.rglob("*.npy")) / 2 ** 20
        print(f"{'':28s} {'build s':>8s} {'epoch s':>8s} {'total s':>8s} {'cases/s':>8s} {'decoded':>8s}")
        for name, b, e, dec in rows:
            print(f"{name:28s} {b:8.2f} {e:8.2f} {b + e:8.2f} {args.cases / (b + e):8.0f} {dec:8d}")
        print(f"cache size {size_mb:.1f} MiB")


if __name__ == "__main__":
    main()
