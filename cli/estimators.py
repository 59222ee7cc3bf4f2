"""The ``estimators`` command: cross-validated training from a feature cache, and prediction.

Thin click commands over the library (``fit`` and ``finetune``: :func:`estimators.run_experiment`;
``predict``: :mod:`estimators.predict`); every library error (:class:`featcache.errors.FeatcacheError`,
:class:`estimators.errors.EstimatorsError`, ``ValueError`` from parameter checks) becomes
one clear ``Error: ...`` message and exit status 1 (click's usage errors exit with 2).
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import click


from cli.options import cluster_options, device_option, library_errors, n_jobs_option, precision_option, quiet_option
from estimators.protocols import list_protocols
from estimators.registry import model_names

#: shared by fit and finetune: the leakage guards' opt-out (estimators.leakage)
allow_leakage_option = click.option(
    "--allow-leakage", default=None, metavar="KINDS",
    help="Run despite leakage of these kinds (duplicates,speakers,validation), recorded in report.json; by default any stops the run.",
)
NORMALIZE = ("speaker", "global", "none")  # click's choices; estimators.experiment checks the same


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ser-featcache")
def main() -> None:
    """Train and evaluate speech emotion recognition models on a feature cache; predict on audio."""


# --------------------------------------------------------------------------- helpers of fit


def _command_line(ctx: click.Context) -> str:
    """The command with every option as it was resolved (defaults included)."""
    parts = ["estimators", ctx.info_name]
    for p in ctx.command.params:
        v = ctx.params.get(p.name)
        if v is False and isinstance(p, click.Option) and p.secondary_opts:
            parts.append(max(p.secondary_opts, key=len))  # --no-refit
            continue
        if v is None or v is False:
            continue
        flag = max(p.opts, key=len) if isinstance(p, click.Option) else None
        if isinstance(p, click.Argument):
            parts.extend(str(x) for x in (v if isinstance(v, (list, tuple)) else [v]))
        elif getattr(p, "is_flag", False):
            parts.append(flag)
        else:
            parts.extend([flag, str(v)])
    return shlex.join(parts)


def _out_dir(out: Path | None, overwrite: bool) -> Path:
    """The output folder, checked before any training (created when the results are written)."""
    if out is None:
        out = Path("runs") / time.strftime("%Y%m%d-%H%M%S")
        base, k = out, 1
        while out.exists():
            out = Path(f"{base}-{k}")
            k += 1
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise click.ClickException(f"--out {out} exists and is not empty; choose another folder or pass --overwrite")
    return out


def _write_error(out: Path, e: OSError) -> str:
    where = f" ({e.filename})" if e.filename else ""
    return f"writing the results to {out} failed: {e.strerror or e}{where}; the scores printed above were not saved"


# --------------------------------------------------------------------------- fit


@main.command()
@click.option("--cache", type=click.Path(path_type=Path), default=None, help="Corpus cache (default: the one corpus cache in ./cache).")
@click.option("--features", default="all_layers", show_default=True, help="Feature spec: all_layers, layer:K, layers:A-B, mfcc, egemaps, a+b ...")
@click.option("--model", type=click.Choice(model_names()), default="dense", show_default=True, help="fusion needs a two-stream spec such as all_layers+egemaps; ecapa (ECAPA-TDNN) takes one or more streams; svc / logreg: classic baselines (mean-pooled features or egemaps_functionals, StandardScaler + RBF SVC / logistic regression, default grid searched in the training folds).")
@click.option("--target", default=None, help="Regression: numeric columns of the utterance table, e.g. valence,arousal (dense, lstm or ecapa).")
@click.option("--loss", type=click.Choice(["ccc", "mse"]), default="ccc", show_default=True, help="Regression loss.")
@click.option("--normalize", type=click.Choice(NORMALIZE), default="speaker", show_default=True, help="Per speaker (Pepino et al.), global (training-fold statistics) or none.")
@click.option("--label-map", default=None, help="Label map name, e.g. ravdess7 (calm merged into neutral).")
@click.option("--cv", "cv_spec", default="groupkfold:5", show_default=True, help="groupkfold:K or logo (by speaker), a protocol: " + ", ".join(list_protocols()) + ", or cross-corpus:TRAIN->TEST (--cache: a root holding both).")
@click.option("--grid", default=None, help='Grid search per fold (inner GroupKFold by speaker), e.g. "hidden=64,128;lr=1e-3,3e-4".')
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True, help="Repeat with random_state 0..N-1.")
@click.option("--hidden", default="128", show_default=True, help="Hidden sizes: H (two layers of H) or AxB (not for cnn).")
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--dropout", type=float, default=0.2, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--max-epochs", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--patience", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Keep the first N frames of every utterance (cnn: default 250).")
@click.option("--pooling", type=click.Choice(["mean", "max", "first", "last", "attentive"]), default=None, help="Pooling over time (dense, lstm, fusion; default mean); attentive: attentive statistics pooling.")
@click.option("--fusion", type=click.Choice(["intermediate", "early", "late"]), default=None, help="How the streams of an a+b spec are combined (fusion: default intermediate; ecapa: early or late, default early).")
@device_option()
@precision_option(("fp32", "bf16"), "fp32", "Training precision (bf16 autocast; fast only on CPUs with AMX, and on GPUs).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Output folder (default runs/<timestamp>).")
@click.option("--overwrite", is_flag=True, help="Write into a non-empty --out.")
@n_jobs_option("Parallel fits (folds x seeds, or grid points with one fold).")
@click.option("--refit/--no-refit", default=True, show_default=True, help="Refit the final model on all data and save it in OUT/model (--no-refit: evaluation only).")
@click.option("--average", type=click.IntRange(min=1), default=None, help="Average the weights of the N best epochs by validation score (Morais et al. average 5).")
@allow_leakage_option
@quiet_option()
@cluster_options("the fits (folds x seeds x grid points)")
@click.pass_context
@library_errors
def fit(ctx, cache, features, model, target, loss, normalize, label_map, cv_spec, grid, seeds, hidden, lr, dropout, batch_size, max_epochs, patience, max_frames, pooling, fusion, device, precision, out, overwrite, n_jobs, refit, average, allow_leakage, quiet, scheduler, cluster):
    """Cross-validate a model by speaker, report UAR / WA / macro-F1, refit on all data and save it.

    Per fold: normaliser (fitted on the training fold) + estimator, in an sklearn Pipeline;
    early stopping uses the protocol's fixed validation speakers (``--cv ravdess-pepino``,
    ``iemocap-loso``) or else the estimator's own speaker-disjoint validation split of the
    training fold; test speakers are never used for it. Scores "mean ± std" are over seeds, each seed's score computed on the
    predictions of all test folds pooled; per-fold scores are listed too.
    """
    from estimators.experiment import Experiment

    if scheduler or cluster:  # every fit a Dask task: absolute paths for the workers, all their threads
        cache, n_jobs = _absolute_cache(cache), (-1 if n_jobs == 1 else n_jobs)
    exp = Experiment(
        cache=cache, features=features, model=model, target=target, loss=loss, normalize=normalize,
        label_map=label_map, cv=cv_spec, grid=grid, seeds=seeds, hidden=hidden, lr=lr, dropout=dropout,
        batch_size=batch_size, max_epochs=max_epochs, patience=patience, max_frames=max_frames, device=device,
        precision=precision, pooling=pooling, fusion=fusion, n_jobs=n_jobs, refit=refit, allow_leakage=allow_leakage,
        average_checkpoints=average, command=_command_line(ctx),
    )
    _run_and_save(exp, out, overwrite, quiet, scheduler=scheduler, cluster=cluster, reads=(cache,), device=device)


def _absolute_cache(cache: Path | None) -> Path | None:
    """``--cache`` as an absolute path (workers may not share this working directory); None: ./cache's one."""
    if cache is not None:
        return Path(cache).resolve()
    from featcache.cache import find_caches

    found = find_caches(Path("cache").resolve())
    return Path(found[0]) if len(found) == 1 else None


def _corpus_folder(cache: Path | None) -> str | None:
    """The audio folder a cache was extracted from (fine-tuning workers read its files), if recorded."""
    if cache is None:
        return None
    from featcache import open_cache

    return open_cache(cache).info.get("data_dir") or None


def _run_and_save(exp, out: Path | None, overwrite: bool, quiet: bool, *, scheduler: str | None = None,
                  cluster: str | None = None, reads: tuple = (), device: str = "auto") -> None:
    """Run an experiment (fit, finetune), print its scores and write OUT; on a Dask cluster when asked.

    ``reads``: folders every worker must see (the cache, a local model; None entries skipped).
    With ``--cluster local:N`` and a ``cuda``/``auto`` device on a box with several GPUs, each
    worker gets one GPU in turn.
    """
    if scheduler or cluster:
        from estimators.distributed import dask_backend
        from featcache.distributed import spread_gpus

        gpus = spread_gpus([device]) if cluster else None
        with dask_backend(scheduler, cluster, caches=tuple(p for p in reads if p is not None), gpus=gpus):
            _run_and_save(exp, out, overwrite, quiet)
        return
    from estimators.experiment import run_experiment, summary_lines

    out = _out_dir(out, overwrite)
    result = run_experiment(
        exp, verbose=not quiet, echo=lambda message: click.echo(message, err=True),
        on_scores=lambda scores: click.echo("\n".join(summary_lines(scores))),
    )
    try:
        result.save(out, overwrite=overwrite, echo=click.echo)
    except OSError as e:  # a full disk, permissions: one line, not a traceback
        raise click.ClickException(_write_error(out, e)) from e
    where = f"model in {out / 'model'}" if exp.refit else "no final model (--no-refit)"
    click.echo(f"wrote {out}/report.json, {where} ({result.report['wall_seconds']:.1f} s)")


# --------------------------------------------------------------------------- finetune


@main.command()
@click.option("--cache", type=click.Path(path_type=Path), default=None, help="Corpus cache (default: the one corpus cache in ./cache); its audio files are read from corpus.json's data_dir.")
@click.option("--model", default="wav2vec_small", show_default=True, help="Upstream: short name, Hugging Face id or local save_pretrained directory (wav2vec2 family).")
@click.option("--head", type=click.Choice(["mean", "dense"]), default="mean", show_default=True, help="mean: mean pooling + linear (Morais et al.); dense: weighted layer average + dense layers (Pepino et al.).")
@click.option("--hidden", default="128", show_default=True, help="Dense head sizes: H (two layers of H) or AxB.")
@click.option("--target", default=None, help="Regression: numeric columns of the utterance table (CCC loss by default).")
@click.option("--loss", type=click.Choice(["ccc", "mse"]), default="ccc", show_default=True, help="Regression loss.")
@click.option("--label-map", default=None, help="Label map name, e.g. ravdess7.")
@click.option("--cv", "cv_spec", default="groupkfold:5", show_default=True, help="As for fit: groupkfold:K, logo, a protocol, cross-corpus:TRAIN->TEST.")
@click.option("--grid", default=None, help='Grid search per fold, estimator parameter names, e.g. "lr=5e-5,1e-4".')
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--average", type=click.IntRange(min=1), default=None, help="Average the weights of the N best epochs (Morais et al.: 5).")
@click.option("--max-epochs", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--patience", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--lr", type=float, default=5e-5, show_default=True, help="Learning rate of the upstream.")
@click.option("--head-lr", type=float, default=1e-3, show_default=True, help="Learning rate of the head.")
@click.option("--warmup-ratio", type=float, default=0.1, show_default=True, help="Linear warm-up share of the steps, then linear decay.")
@click.option("--batch-seconds", type=float, default=16.0, show_default=True, help="Audio per batch (length-bucketed).")
@click.option("--accumulate", type=click.IntRange(min=1), default=1, show_default=True, help="Gradient accumulation: batches per optimisation step.")
@click.option("--freeze-layers", type=click.IntRange(min=0), default=0, show_default=True, help="Freeze the first K transformer blocks.")
@click.option("--train-feature-encoder", is_flag=True, help="Also train the CNN feature encoder (frozen by default).")
@click.option("--gradient-checkpointing", is_flag=True, help="Less memory, more compute.")
@click.option("--spec-augment/--no-spec-augment", default=True, show_default=True, help="The model config's SpecAugment masking while training.")
@click.option("--max-seconds", type=float, default=15.0, show_default=True, help="Crop every file to its first N seconds (the cache's crop applies too).")
@device_option()
@precision_option(("fp32", "bf16", "fp16"), "fp32", "bf16/fp16 autocast (CUDA only).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Output folder (default runs/<timestamp>).")
@click.option("--overwrite", is_flag=True, help="Write into a non-empty --out.")
@n_jobs_option("Parallel fits (folds x seeds).")
@click.option("--refit/--no-refit", default=True, show_default=True, help="Refit on all data and save the model (with the fine-tuned upstream in OUT/model/upstream).")
@allow_leakage_option
@quiet_option("No progress bars.")
@cluster_options("the fits (folds x seeds x grid points)")
@click.pass_context
@library_errors
def finetune(ctx, cache, model, head, hidden, target, loss, label_map, cv_spec, grid, seeds, average, max_epochs, patience, lr, head_lr,
             warmup_ratio, batch_seconds, accumulate, freeze_layers, train_feature_encoder, gradient_checkpointing, spec_augment,
             max_seconds, device, precision, out, overwrite, n_jobs, refit, allow_leakage, quiet, scheduler, cluster):
    """Fine-tune a wav2vec2-family model with a head on the cache's audio, cross-validated by speaker.

    The same runner, splits, scores and files as `estimators fit` (report.json, predictions.csv,
    confusion.png, OUT/model for `estimators predict`), on the waveforms of the corpus table's
    files (cropped as the cache's stores were) instead of cached features; no normaliser (the
    model normalises every utterance). The fine-tuned upstream is saved in OUT/model/upstream
    (save_pretrained): `featcache extract --model OUT/model/upstream` caches its layers.
    """
    from estimators.cv import parse_hidden
    from estimators.experiment import Experiment
    from estimators.finetune import FineTuneClassifier, FineTuneRegressor

    reads: tuple = ()
    if scheduler or cluster:  # as for fit: absolute paths for the workers, all their threads
        cache, n_jobs = _absolute_cache(cache), (-1 if n_jobs == 1 else n_jobs)
        if Path(model).is_dir():  # a local save_pretrained directory: workers load it by this path
            model = str(Path(model).resolve())
        reads = (cache, model if Path(model).is_dir() else None, _corpus_folder(cache))
    cls = FineTuneRegressor if target else FineTuneClassifier
    est = cls(
        model=model, head=head, hidden_sizes=tuple(parse_hidden(hidden)), max_epochs=max_epochs, patience=patience, lr=lr,
        head_lr=head_lr, warmup_ratio=warmup_ratio, batch_seconds=batch_seconds, accumulation_steps=accumulate,
        freeze_layers=freeze_layers, freeze_feature_encoder=not train_feature_encoder, gradient_checkpointing=gradient_checkpointing,
        spec_augment=spec_augment, max_seconds=max_seconds if max_seconds and max_seconds > 0 else None,
        average_checkpoints=average, device=device, precision=precision, progress=not quiet,
        **({"loss": loss} if target else {}),
    )
    exp = Experiment(cache=cache, features="audio", model=est, target=target, normalize="none", label_map=label_map, cv=cv_spec,
                     grid=grid, seeds=seeds, n_jobs=n_jobs, refit=refit, allow_leakage=allow_leakage,
                     command=_command_line(ctx))
    _run_and_save(exp, out, overwrite, quiet, scheduler=scheduler, cluster=cluster, reads=reads, device=device)


# --------------------------------------------------------------------------- predict


@main.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("audio", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--enrol", is_flag=True, help="Speaker-normalised models: normalise the given files with their own statistics, as one speaker.")
@click.option("--segment", type=float, default=None, help="Window length in seconds (>= 0.01): one prediction per window.")
@click.option("--hop", type=float, default=None, help="Window hop in seconds (>= 0.01; default: --segment); at most 10000 windows per file.")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@device_option("Device of the feature extractor and the model: auto, cpu, cuda or cuda:N.")
@click.option("--ssl-model", "ssl_model", metavar="PATH_OR_ID", default=None, help="Where to load the self-supervised model from: a local save_pretrained directory, a short name or a Hugging Face id (required when the model directory records a local model; a model directory is never allowed to name a local path itself).")
@library_errors
def predict(model_dir, audio, enrol, segment, hop, fmt, device, ssl_model):
    """Predict the emotion of AUDIO files with a model written by `estimators fit` or `finetune` (MODEL_DIR = RUN/model),
    or with a local transformers *ForSequenceClassification checkpoint folder (its own id2label names the classes).

    Features are extracted exactly as the cache was built (same extractors, parameters,
    cropping to max_seconds); then normalised as at training: speaker-normalised models use
    the files' own statistics as one speaker with --enrol, else the training data's global
    statistics. Prints one row per file (per window with --segment) to stdout.
    """
    from estimators.errors import ParameterError
    from estimators.predict import Predictor, check_windowing

    if hop is not None and segment is None:
        raise ParameterError("--hop", "given together with --segment", hop)
    if segment is not None:
        check_windowing(segment, hop if hop is not None else segment)  # before loading anything
    pred = Predictor(model_dir, device=device, ssl_model=ssl_model)
    if enrol and pred.prep.normalization != "speaker":
        click.echo(f"note: --enrol has no effect: the model uses {pred.prep.normalization} normalisation", err=True)
    table, info = pred.predict_files([str(a) for a in audio], enrol=enrol, segment=segment, hop=hop)
    for f, reason in info["failed"].items():
        click.echo(f"failed: {f}: {reason}", err=True)
    if table.empty:
        raise click.ClickException("no file could be used: " + "; ".join(f"{f}: {r}" for f, r in info["failed"].items()))
    click.echo(f"normalisation: {info['note']}", err=True)
    if fmt == "csv":
        click.echo(table.to_csv(index=False, float_format="%.6g"), nl=False)
    else:
        doc = {
            "model_dir": str(model_dir),
            "classes": None if pred.classes is None else [str(c) for c in pred.classes],
            "normalization": {"mode": info["normalization"], "note": info["note"]},
            "failed": info["failed"],
            "predictions": json.loads(table.to_json(orient="records")),
        }
        click.echo(json.dumps(doc, indent=1))


if __name__ == "__main__":  # pragma: no cover
    main()
