"""The benchmark suite of featcache and estimators: ``python -m benchmarks``.

One command measures every performance target against the peers' plain approaches (the
NAIVE baselines of :mod:`benchmarks.naive`) and against this machine's own limits measured
in the same run, prints one markdown table and writes JSON (``docs/benchmarks.md`` explains
the figures and holds the recorded results).

Modules:

* :mod:`benchmarks.machine` -- cores, CPU model and flags, versions; matmul GFLOP/s (fp32,
  bf16) and memory bandwidth;
* :mod:`benchmarks.flops` -- FLOPs of wav2vec2 per audio second and of the Dense head per
  frame, counted from the shapes;
* :mod:`benchmarks.data` -- the random full-size wav2vec2, real or synthetic RAVDESS audio,
  the RAVDESS-sized training cache;
* :mod:`benchmarks.naive` -- the naive baselines (labelled as such);
* :mod:`benchmarks.extraction`, :mod:`benchmarks.training`, :mod:`benchmarks.grid`,
  :mod:`benchmarks.reading` -- the measured jobs of targets 1-5;
* :mod:`benchmarks.gpu` (rows in :mod:`benchmarks.gpu_rows`) -- item 5, one GPU in under 8
  minutes: its matmul limits, extraction, a Dense epoch, fine-tuning steps
  (``gpu_check.sh`` runs it on a lent GPU machine);
* standalone modules with their own command and table: :mod:`benchmarks.heads` (heads on
  handcrafted features vs their compute limit, the whole ``estimators fit``),
  :mod:`benchmarks.bounded` (bounded memory), :mod:`benchmarks.distributed` (Dask; also
  ``--only distributed``), :mod:`benchmarks.ecapa`, :mod:`benchmarks.finetune`;
* :mod:`benchmarks.worker` -- runs each job in a fresh process, with its peak RSS and the
  load other processes put on the machine;
* :mod:`benchmarks.report` -- table rows, markdown, JSON, the doc.

``check_ssl_equality.py`` and ``stress_kill.py`` in this folder are stand-alone scripts.
"""
