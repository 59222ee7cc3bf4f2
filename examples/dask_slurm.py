"""Extract a corpus with wav2vec2 on SLURM GPU nodes, then run a grid x folds x seeds experiment there.

NOT RUN HERE: the machine this toolkit was developed on has no SLURM cluster. It is the
documented recipe (README, "Scale-out on a Dask cluster") written against the dask-jobqueue
API (``SLURMCluster``: one SLURM job = one Dask worker here); adapt the partition, account,
memory and paths to your site. Run it on the login node, inside the project's virtual
environment, with the corpus and the cache on a file system every node mounts at the same
path::

    pip install -e '.[dask]' dask-jobqueue
    python examples/dask_slurm.py --data-dir /shared/corpora/msp-podcast --cache-dir /shared/cache \\
        --corpus csv --jobs 8

The client (this script) holds the cache lock and commits every shard; the GPU jobs extract
and write the shard files. Killing a job (pre-emption, time limit) loses its unit of work
only: Dask runs it again on another job; re-running the script resumes where it stopped.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default="ravdess")
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--cache-dir", type=Path, required=True)
    ap.add_argument("--model", default="wav2vec_small")
    ap.add_argument("--jobs", type=int, default=4, help="SLURM jobs, one GPU worker each")
    ap.add_argument("--partition", default="gpu")
    ap.add_argument("--walltime", default="04:00:00")
    args = ap.parse_args(argv)

    from dask_jobqueue import SLURMCluster
    from distributed import Client

    import featcache
    from estimators import run_experiment
    from estimators.distributed import dask_backend
    from featcache import distributed
    from featcache.pipeline import build_extractors

    # Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in its workers, which made torch fits 2-2.5x
    # slower (README, "How it scales"): the workers read this configuration instead
    config = Path("dask-config").resolve()
    config.mkdir(exist_ok=True)
    (config / "distributed.yaml").write_text("distributed:\n  nanny:\n    pre-spawn-environ:\n      MALLOC_TRIM_THRESHOLD_: null\n")
    cluster = SLURMCluster(
        queue=args.partition,
        cores=1,  # one task at a time per worker (per GPU) ...
        processes=1,  # ... one worker process per job ...
        job_cpu=4,  # ... with 4 CPU cores booked for its decoding, handcrafted features and torch threads
        memory="32GB",
        walltime=args.walltime,
        job_extra_directives=["--gres=gpu:1"],  # one GPU per job, which SLURM makes its cuda:0
        job_script_prologue=[f"cd {Path.cwd()}", f"source {Path(sys.prefix) / 'bin' / 'activate'}",
                             f"export DASK_CONFIG={config}"],
        local_directory="$TMPDIR",
    )
    cluster.scale(jobs=args.jobs)
    with cluster, Client(cluster) as client:
        client.wait_for_workers(1, timeout=3600)  # the queue decides when the jobs start
        # built on a GPU worker: the login node has no CUDA, and "cuda"/"bf16" must resolve there
        extractors = functools.partial(build_extractors, ["wav2vec2", "egemaps"], model=args.model,
                                       precision="bf16", device="cuda")
        summary = distributed.extract(args.corpus, args.data_dir, args.cache_dir, extractors, client=client,
                                      shard_size=256, max_seconds=15.0)
        print(f"done {summary.done}, skipped {summary.skipped}, failed {len(summary.failed)},"
              f" {summary.audio_seconds / 3600:.2f} h of audio in {summary.wall_seconds / 60:.1f} min")

        # the experiment: folds x seeds x grid points, each a Dask task reading the shared cache
        cache = (args.cache_dir / args.corpus).resolve()
        with dask_backend(client=client, caches=(cache,)):
            result = run_experiment(cache=featcache.open(cache), features="all_layers", cv="groupkfold:5", seeds=5,
                                    grid="hidden=64,128;lr=1e-3,3e-4", device="cuda", n_jobs=-1)
        print(result.metrics["uar"])
        result.save(Path("runs") / f"{args.corpus}-slurm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
