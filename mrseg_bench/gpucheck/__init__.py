"""One prepared device check (``scripts/gpu_check.sh``, ``python -m mrseg_bench.gpucheck``):
the CUDA tests, the quick start on the GPU (fp32, bf16, ``--compile --channels-last``), the
profiles of four methods at the ``paper`` preset's sizes and the speed gate's ratios, written as
one JSON file (``schema``) and a short summary. ``driver`` runs the steps under time boxes,
``probes`` holds the measurements each step runs in a child process. docs/gpu-check.md."""
