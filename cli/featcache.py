"""The ``featcache`` command: extract, inspect, audit, verify and download.

Thin click commands over the library; every :class:`featcache.errors.FeatcacheError` becomes
one clear message and exit status 1 (click's usage errors exit with 2).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from cli.options import cluster_options, device_option, library_errors, precision_option, quiet_option

FEATURES_DEFAULT = "wav2vec2,mfcc,logmel,spectrogram,egemaps"


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def _bf16_hint(extractors) -> None:
    """Tell the user when ``auto`` kept fp32 on a CPU where bf16 is several times faster."""
    from featcache.extractors.runtime import native_bf16_cpu

    on_cpu = [ex for ex in extractors if getattr(ex, "precision", None) == "fp32" and getattr(ex, "device", None) == "cpu"]
    if on_cpu and native_bf16_cpu():
        click.echo("note: this CPU has native bf16 (AMX / AVX512-BF16): --precision bf16 runs the model several times"
                   " faster (3-4x on a 2-core Xeon with AMX; hidden states within ~3 % of fp32). --precision auto stays"
                   " fp32 on CPUs.", err=True)


def _quiet_transformers() -> None:
    """featcache shows its own progress bar; transformers' weight-loading bars are noise."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ser-featcache")
def main() -> None:
    """Extract self-supervised speech features once into a sharded HDF5 cache."""


@main.command()
@click.option("--corpus", required=True, help="Corpus name (see `featcache list-corpora`).")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Corpus folder (for `csv`: the manifest). Default: where `featcache download` puts it (data/CORPUS).",
)
@click.option("--model", default="wav2vec_small", show_default=True, help="Short name, HuggingFace id or local directory.")
@click.option("--features", default=FEATURES_DEFAULT, show_default=True, help="Comma-separated: wav2vec2,mfcc,logmel,spectrogram,egemaps.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=Path("cache"), show_default=True)
@precision_option(("auto", "fp32", "bf16", "fp16"), "auto")
@device_option()
@click.option("--max-seconds", type=float, default=15.0, show_default=True, help="Crop each file to its first N seconds (0: no cropping).")
@click.option("--overwrite", is_flag=True, help="Replace stores made with other parameters.")
@click.option("--repair", is_flag=True, help="Verify every shard first and re-extract damaged ones.")
@click.option("--name", default=None, help="Store folder name for the model's features (default: the model's short name).")
@click.option("--layers", default=None, help="Model layers to keep, e.g. 0,6-12 (default: all hidden states).")
@click.option("--frames", type=click.Choice(["all", "none"]), default="all", show_default=True,
              help="none: the model's store keeps per-utterance statistics only (for pooled='mean').")
@click.option("--shard-size", type=click.IntRange(min=1), default=256, show_default=True, help="Utterances per shard.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Workers for audio decoding and handcrafted features: processes without a model (default: one per"
              " core, from 2 min of audio), threads with one (default 1).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N utterances (a quick trial).")
@click.option("--strict", is_flag=True, help="Exit with status 1 when any file failed.")
@quiet_option()
@cluster_options("the extraction")
@library_errors
def extract(corpus, data_dir, model, features, cache_dir, precision, device, max_seconds, overwrite, repair, name, layers, frames,
            shard_size, workers, limit, strict, quiet, scheduler, cluster):
    """Extract features of every utterance of a corpus into CACHE-DIR/CORPUS/.

    Resumable: re-running the same command skips finished utterances. Exit status 0
    when the run completed (files that failed are listed and recorded in the cache;
    with --strict any failure gives 1), 1 on an error, 2 on a usage error.
    """
    from featcache.corpora import get_corpus
    from featcache.download import default_data_dir
    from featcache.pipeline import build_extractors, extract as run_extract
    from featcache.process import is_model

    get_corpus(corpus)  # unknown corpus: clear error before anything else
    _quiet_transformers()
    if data_dir is None:
        data_dir = default_data_dir(corpus)
        if not data_dir.exists():
            hint = f"`featcache download {corpus} --to {data_dir}`, or " if corpus == "ravdess" else ""
            raise click.ClickException(
                f"no data for corpus {corpus!r} in {data_dir} (the default --data-dir). Get it with "
                f"{hint}point --data-dir at the corpus folder."
            )
    names = [f.strip() for f in features.split(",") if f.strip()]
    extractors = build_extractors(names, model=model, precision=precision, device=device, layers=layers)
    if precision == "auto" and not quiet:
        _bf16_hint(extractors)
    rename = {}
    if name:
        for ex in extractors:
            if is_model(ex):
                rename[ex.store_name] = name
    if scheduler or cluster:  # the same run, its work done by Dask workers (featcache.distributed)
        import functools

        from featcache.distributed import extract as on_cluster

        run_extract = functools.partial(on_cluster, scheduler=scheduler, cluster=cluster)
    log = (lambda s: None) if quiet else (lambda s: click.echo(s, err=True))
    summary = run_extract(
        corpus,
        data_dir,
        cache_dir,
        extractors,
        max_seconds=max_seconds or None,
        overwrite=overwrite,
        repair=repair,
        names=rename,
        shard_size=shard_size,
        workers=workers,
        progress=not quiet,
        limit=limit,
        frames=frames,
        log=log,
    )
    click.echo(
        f"{summary.cache_path}: stores {', '.join(summary.stores)}\n"
        f"done {summary.done}, skipped {summary.skipped}, failed {len(summary.failed)}"
        + (f", re-extracted after damage {summary.redone}" if summary.redone else "")
        + f"\naudio {summary.audio_seconds / 3600:.3f} h, wall {summary.wall_seconds:.1f} s"
        + (f" ({summary.audio_seconds / summary.wall_seconds:.1f} audio-s/s)" if summary.wall_seconds else "")
        + f", cache size {_human_bytes(summary.cache_bytes)}"
    )
    for line in summary.rebuilt:
        click.echo(f"repaired: {line}", err=True)
    for uid, reason in sorted(summary.failed.items()):
        click.echo(f"failed: {uid}: {reason}", err=True)
    if strict and summary.failed:
        sys.exit(1)


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@library_errors
def info(path, as_json):
    """Describe a corpus cache: utterances, stores, parameters, failures."""
    from featcache.reader import open_cache
    from featcache.spec import format_layers

    out = open_cache(path).describe()
    stores = out["stores"]
    if as_json:
        click.echo(json.dumps(out, indent=1, default=str))
        return
    click.echo(f"{out['path']}  corpus {out['corpus']}: {out['n_utterances']} utterances, {out['n_speakers']} speakers")
    click.echo("labels: " + ", ".join(f"{k} {v}" for k, v in out["labels"].items()))
    for p in out["problems"]:
        click.echo(f"left out: {p[0]} ({p[1]})")
    for name, s in stores.items():
        kept = f" (layers {format_layers(s['layers'])} of {s['model_layers']})" if s["n_layers"] < s["model_layers"] else ""
        click.echo(
            f"- {name}: {s['extractor']}, {s['n_layers']} layer(s){kept} x {s['dim']} at {s['frame_rate']:g} frames/s "
            f"({s['dtype']}), {s['n_utterances']} utterances in {s['n_shards']} shard(s), "
            f"{_human_bytes(s['size_bytes'])}, failed {len(s['failed'])}"
            + ("; statistics only (--frames none): select with pooled='mean'" if s["frames"] == "none" else "")
        )
        for uid, reason in sorted(s["failed"].items()):
            click.echo(f"    failed {uid}: {reason}")


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--quick", is_flag=True, help="Skip re-reading the frames (checksums and structure only).")
@library_errors
def verify(path, quick):
    """Check every shard of a corpus cache (or one store); exit 1 when anything is wrong."""
    from featcache.store import check_coverage, table_ids, verify_cache, verify_store

    if (path / "store.json").exists():
        results = {path.name: verify_store(path, deep=not quick)}
        cache = path.parent
    else:
        results = verify_cache(path, deep=not quick)
        cache = path
    ids = table_ids(cache)
    bad = 0
    for name, problems in results.items():
        if not problems:
            missing = check_coverage(cache / name, ids) if ids is not None else []
            note = (
                f" (incomplete: {len(ids) - len(missing)} of {len(ids)} utterances of the corpus table are"
                " committed or failed; re-run the same extract command to complete it)"
                if missing
                else ""
            )
            click.echo(f"{name}: ok{note}")
        for p in problems:
            bad += 1
            click.echo(f"PROBLEM {p}")
    if bad:
        click.echo(f"{bad} problem(s); `featcache extract ... --repair` re-extracts the affected utterances", err=True)
        sys.exit(1)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write audit.json and the PNG plots into this folder.")
@click.option("--no-audio", is_flag=True, help="Do not decode the source files (no clipping and silence figures).")
@library_errors
def audit(paths, as_json, out, no_audio):
    """Audit corpus caches before training: labels x speakers, durations, sources, levels,
    refused files, sentences, speaker-label confounding and exact / near-duplicate recordings
    (across all the PATHS together, so several caches also show duplicates between corpora)."""
    from featcache.audit import audit as run_audit, audit_lines, write_audit

    summary = run_audit(paths, read_audio=not no_audio)
    written = write_audit(summary, out) if out is not None else []
    if as_json:
        click.echo(json.dumps(summary, indent=1, default=str))
    else:
        click.echo("\n".join(audit_lines(summary)))
    for f in written:
        click.echo(f"wrote {f}", err=True)


@main.command("list-models")
def list_models():
    """Short model names and their HuggingFace ids."""
    from featcache.models import describe_models

    for row in describe_models():
        click.echo(f"{row['name']:22s} {row['hf_id']:38s} {row['description']}")
    click.echo("Any HuggingFace id or a local save_pretrained directory works too.")


@main.command("list-corpora")
def list_corpora():
    """Registered corpus loaders."""
    from featcache.corpora import get_corpus, list_corpora as names

    for n in names():
        c = get_corpus(n)
        click.echo(f"{n:10s} {c.description}")


@main.command()
@click.argument("corpus", type=click.Choice(["ravdess"]))
@click.option("--to", "to", type=click.Path(path_type=Path), default=None, help="Target folder (default data/CORPUS).")
@quiet_option()
@library_errors
def download(corpus, to, quiet):
    """Download and unpack a corpus (RAVDESS from Zenodo record 1188976), resuming partial files."""
    from featcache.download import default_data_dir, download_ravdess

    target = to or default_data_dir(corpus)
    path = download_ravdess(target, progress=not quiet)
    click.echo(f"{corpus} is in {path}")


if __name__ == "__main__":  # pragma: no cover
    main()
