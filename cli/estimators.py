"""The ``estimators`` command: cross-validated training from a feature cache, and prediction.

Thin click commands over the library (:mod:`estimators.cv`, :mod:`estimators.report`,
:mod:`estimators.predict`); every library error (:class:`featcache.errors.FeatcacheError`,
:class:`estimators.errors.EstimatorsError`, ``ValueError`` from parameter checks) becomes
one clear ``Error: ...`` message and exit status 1 (click's usage errors exit with 2).
"""

from __future__ import annotations

import functools
import json
import shlex
import time
from pathlib import Path

import click

from featcache.errors import FeatcacheError

MODELS = ("dense", "lstm", "cnn", "fusion")
NORMALIZE = ("speaker", "global", "none")


def library_errors(fn):
    """Turn library errors into a one-line ``Error: ...`` and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from estimators.errors import EstimatorsError

        try:
            return fn(*args, **kwargs)
        except (FeatcacheError, EstimatorsError, ValueError) as e:
            raise click.ClickException(str(e).strip() or type(e).__name__) from e

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ser-featcache")
def main() -> None:
    """Train and evaluate speech emotion recognition models on a feature cache; predict on audio."""


# --------------------------------------------------------------------------- helpers of fit


def _resolve_cache(cache: Path | None):
    from featcache.reader import FeatureCache, find_caches, open_cache

    if cache is not None:
        return open_cache(cache)
    found = find_caches(Path("cache"))
    if len(found) == 1:
        return FeatureCache(found[0])
    if not found:
        raise click.ClickException(
            "--cache PATH is required: ./cache holds no corpus cache (run `featcache extract` or name one)"
        )
    raise click.ClickException(
        f"--cache PATH is required: ./cache holds {len(found)} corpus caches: "
        + ", ".join(str(p) for p in found)
    )


def _counts(d: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items()) or "none"


def _hidden(text: str) -> tuple[int, ...]:
    from estimators.cv import _hidden as parse

    return parse(text)


def _make_estimator(model: str, task: str, params: dict):
    from estimators import (
        CNNClassifier,
        DenseClassifier,
        DenseRegressor,
        FusionClassifier,
        LSTMClassifier,
        LSTMRegressor,
    )
    from estimators.errors import ParameterError

    if task == "regression":
        classes = {"dense": DenseRegressor, "lstm": LSTMRegressor}
        if model not in classes:
            raise ParameterError("--model with --target", "dense or lstm (regressors)", model)
    else:
        classes = {"dense": DenseClassifier, "lstm": LSTMClassifier, "cnn": CNNClassifier, "fusion": FusionClassifier}
    cls = classes[model]
    allowed = set(cls().get_params())
    return cls(**{k: v for k, v in params.items() if k in allowed and v is not None})


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
    if out is None:
        out = Path("runs") / time.strftime("%Y%m%d-%H%M%S")
        base, k = out, 1
        while out.exists():
            out = Path(f"{base}-{k}")
            k += 1
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise click.ClickException(f"--out {out} exists and is not empty; choose another folder or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    return out


# --------------------------------------------------------------------------- fit


@main.command()
@click.option("--cache", type=click.Path(path_type=Path), default=None, help="Corpus cache (default: the one corpus cache in ./cache).")
@click.option("--features", default="all_layers", show_default=True, help="Feature spec: all_layers, layer:K, layers:A-B, mfcc, egemaps, a+b ...")
@click.option("--model", type=click.Choice(MODELS), default="dense", show_default=True, help="fusion needs a two-stream spec such as all_layers+egemaps.")
@click.option("--target", default=None, help="Regression: numeric columns of the utterance table, e.g. valence,arousal (dense or lstm).")
@click.option("--loss", type=click.Choice(["ccc", "mse"]), default="ccc", show_default=True, help="Regression loss.")
@click.option("--normalize", type=click.Choice(NORMALIZE), default="speaker", show_default=True, help="Per speaker (Pepino et al.), global (training-fold statistics) or none.")
@click.option("--label-map", default=None, help="Label map name, e.g. ravdess7 (calm merged into neutral).")
@click.option("--cv", "cv_spec", default="groupkfold:5", show_default=True, help="groupkfold:K or logo (by speaker), a protocol: ravdess-pepino, ravdess-6fold, iemocap-loso, emodb-loso, or cross-corpus:TRAIN->TEST (--cache: a root holding both).")
@click.option("--grid", default=None, help='Grid search per fold (inner GroupKFold by speaker), e.g. "hidden=64,128;lr=1e-3,3e-4".')
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True, help="Repeat with random_state 0..N-1.")
@click.option("--hidden", default="128", show_default=True, help="Hidden sizes: H (two layers of H) or AxB (not for cnn).")
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--dropout", type=float, default=0.2, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--max-epochs", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--patience", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Keep the first N frames of every utterance (cnn: default 250).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Output folder (default runs/<timestamp>).")
@click.option("--overwrite", is_flag=True, help="Write into a non-empty --out.")
@click.option("--n-jobs", type=int, default=1, show_default=True, help="Parallel fits (folds x seeds, or grid points with one fold).")
@click.option("--refit/--no-refit", default=True, show_default=True, help="Refit the final model on all data and save it in OUT/model (--no-refit: evaluation only).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
@library_errors
def fit(ctx, cache, features, model, target, loss, normalize, label_map, cv_spec, grid, seeds, hidden, lr, dropout, batch_size, max_epochs, patience, max_frames, device, precision, out, overwrite, n_jobs, refit, quiet):
    """Cross-validate a model by speaker, report UAR / WA / macro-F1, refit on all data and save it.

    Per fold: normaliser (fitted on the training fold) + estimator, in an sklearn Pipeline;
    early stopping uses the protocol's fixed validation speakers (``--cv ravdess-pepino``,
    ``iemocap-loso``) or else the estimator's own speaker-disjoint validation split of the
    training fold; test speakers are never used for it. Scores "mean ± std" are over seeds, each seed's score computed on the
    predictions of all test folds pooled; per-fold scores are listed too.
    """
    import numpy as np

    from estimators import report as rep
    from estimators.cv import make_cv, parse_grid, run_folds
    from estimators.errors import ParameterError
    from estimators.persist import save_model
    from estimators.predict import Preprocessing, save_preprocessing

    t0 = time.perf_counter()
    command = _command_line(ctx)
    from estimators.crosscorpus import cross_corpus_sets, parse_cross_corpus, resolve_caches
    from estimators.protocols import PROTOCOL_REGISTRY

    cross = parse_cross_corpus(cv_spec)
    cross_data = None
    if cross is not None:
        if target or label_map or grid:
            raise ParameterError("--cv " + cv_spec, "used without --target, --label-map and --grid (labels are harmonised and shared labels kept)",
                                 ", ".join(o for o, v in (("--target", target), ("--label-map", label_map), ("--grid", grid)) if v))
        fc, fc_test = resolve_caches(cache, cross)
        cross_data = cross_corpus_sets(fc, fc_test, features)
    else:
        fc = _resolve_cache(cache)
    protocol = PROTOCOL_REGISTRY.get(cv_spec)
    if protocol is not None:
        if protocol.corpus and protocol.corpus != fc.corpus:
            raise ParameterError("--cv", f"a protocol for this cache's corpus ({fc.corpus})", f"{cv_spec} (defined for {protocol.corpus})")
        label_map = label_map or protocol.label_map
    X = cross_data.X_train if cross_data is not None else fc.select(features, label_map=label_map)
    if protocol is not None:
        X = X[np.flatnonzero(protocol.keep(X.table))]
    n_streams = len(X.streams)
    if model == "fusion" and n_streams < 2:
        raise ParameterError("--model fusion", "used with a two-stream feature spec such as all_layers+egemaps", f"--features {features} ({n_streams} stream)")
    if model != "fusion" and n_streams > 1:
        raise ParameterError(f"--features for --model {model}", "one stream (use --model fusion for a+b specs)", features)
    task = "classification"
    targets = None
    if target:
        task = "regression"
        targets = [t.strip() for t in target.split(",") if t.strip()]
        try:
            Y = X.targets(targets)
        except ValueError as e:
            raise ParameterError("--target", "numeric columns of the utterance table", f"{target} ({e})") from e
        keep = np.isfinite(Y).all(axis=1)
        if not keep.all():
            click.echo(f"{int((~keep).sum())} utterance(s) without {target} values left out", err=True)
            X, Y = X[np.flatnonzero(keep)], Y[keep]
        y = Y[:, 0] if len(targets) == 1 else Y
    else:
        y = np.asarray(X.labels).astype(str)
    if len(X) == 0:
        raise click.ClickException(f"no utterance has every stream of --features {features}")
    groups = np.asarray(X.speakers).astype(str)

    params = {
        "hidden_sizes": None if model == "cnn" else _hidden(hidden),
        "lr": lr,
        "dropout": dropout,
        "batch_size": batch_size,
        "max_epochs": max_epochs,
        "patience": patience,
        "max_frames": max_frames,
        "device": device,
        "precision": precision,
    }
    if task == "regression":
        params["loss"] = loss
    est0 = _make_estimator(model, task, params)
    param_grid = None
    if grid:
        param_grid = parse_grid(grid, prefix="est__")
        allowed = set(est0.get_params())
        bad = sorted(k[5:] for k in param_grid if k[5:] not in allowed)
        if bad:
            raise ParameterError("--grid", f"parameters of {type(est0).__name__} ({', '.join(sorted(allowed))})", ", ".join(bad))
    if hasattr(est0, "_check_params"):
        est0._check_params()  # bad --device etc. now, not after the first fold
    if cross_data is not None:
        splits = [(np.arange(len(X)), np.arange(0))]
        click.echo(
            f"{cv_spec}: train {fc.corpus} ({len(X)} utterances), test {fc_test.corpus} ({len(cross_data.X_test)} utterances) "
            f"on the shared labels {', '.join(cross_data.labels)}; left out: "
            f"{fc.corpus} {_counts(cross_data.dropped_train)}, {fc_test.corpus} {_counts(cross_data.dropped_test)}; "
            f"validation: the estimator's speaker-disjoint split of {fc.corpus}",
            err=True,
        )
    elif protocol is not None:
        splits = [(f.train, f.test, f.valid) for f in protocol.folds(X.table)]
        if not quiet:
            click.echo(f"protocol {protocol.name}: {protocol.description}; validation: {protocol.validation}", err=True)
    else:
        splits = make_cv(cv_spec, groups, y)

    def make_pipeline(seed: int):
        from sklearn.base import clone
        from sklearn.pipeline import Pipeline

        from estimators.normalize import GlobalNormalizer, SpeakerNormalizer

        norm = {"speaker": SpeakerNormalizer, "global": GlobalNormalizer}.get(normalize)
        est = clone(est0).set_params(random_state=seed)
        return Pipeline([("norm", norm() if norm else "passthrough"), ("est", est)])

    out = _out_dir(out, overwrite)
    if not quiet:
        shapes = ", ".join(f"{s['n_layers']}x{s['dim']}" for s in X.describe()["streams"])
        click.echo(
            f"{fc.corpus}: {len(X)} utterances, {len(np.unique(groups))} speakers, features {features} "
            f"({shapes}), "
            f"{type(est0).__name__}, {len(splits)} folds ({cv_spec}) x {seeds} seed(s), normalize {normalize}",
            err=True,
        )
    if cross_data is not None:
        from estimators.crosscorpus import run_cross_corpus

        results = run_cross_corpus(make_pipeline, cross_data, list(range(seeds)), progress=not quiet)
        X_eval, y_eval, groups_eval = cross_data.X_test, cross_data.y_test, cross_data.groups_test
    else:
        results = run_folds(
            make_pipeline, X, y, groups, splits, list(range(seeds)),
            param_grid=param_grid, task=task, n_jobs=n_jobs, progress=not quiet,
        )
        X_eval, y_eval, groups_eval = X, y, groups

    # ---- scores
    summary = rep.score_runs(results, y_eval, task=task, targets=targets, groups=groups_eval)
    classes = summary.get("classes")
    for r in summary["per_fold"]:
        scores = "  ".join(f"{k} {r[k]:.3f}" for k in summary["metrics"])
        click.echo(f"seed {r['seed']} fold {r['fold']}: {scores}  (test {r['n_test']} utterances, speakers {','.join(r['test_speakers'])})")
    for k, m in summary["metrics"].items():
        click.echo(f"{k.upper():9s} {m['mean']:.4f} ± {m['std']:.4f}  (pooled over folds; mean ± std over {len(m['values'])} seed(s))")

    # ---- layer weights
    lw = [r.layer_weights for r in results if r.layer_weights is not None]
    layer_weights = [list(map(float, w)) for w in lw] if lw else None

    # ---- final model on all data
    describe = X.describe()
    model_dir = out / "model"
    final = None
    est = est0
    if refit:
        if not quiet:
            click.echo("refitting on all data ...", err=True)
        final = run_folds(
            make_pipeline, X, y, groups, [(np.arange(len(X)), np.arange(0))], [0],
            param_grid=param_grid, task=task, n_jobs=n_jobs, progress=False, keep_pipeline=True,
        )[0]
        pipe = final.pipeline
        est = pipe.named_steps["est"]
        norm = pipe.named_steps["norm"]
        mean = scale = None
        if normalize == "speaker":
            mean, scale = norm.global_mean_, norm.global_scale_
        elif normalize == "global":
            mean, scale = norm.mean_, norm.scale_
        extra = {
            "spec": features,
            "corpus": fc.corpus,
            "cache": str(fc.path),
            "normalization": normalize,
            "label_map": label_map,
            "targets": targets,
            "best_params": final.best_params,
            "command": command,
        }
        save_model(est, model_dir, extra=extra)
        save_preprocessing(
            model_dir,
            Preprocessing(
                features=describe, spec=features, normalization=normalize, mean=mean, scale=scale,
                eps=float(getattr(norm, "eps", 1e-8)), label_map=label_map, targets=targets,
                info={"corpus": fc.corpus, "cache": str(fc.path), "model": model, "command": command},
            ),
        )

    # ---- report and plots
    report = {
        "metrics": summary["metrics"],
        "metrics_note": rep.POOLING_NOTE,
        "per_fold": summary["per_fold"],
        "confusion_matrix": summary.get("confusion_matrix"),
        "classes": classes,
        "targets": targets,
        "best_params": (
            {"final": final.best_params if final else None, "per_fold": [{"seed": r.seed, "fold": r.fold, "params": r.best_params} for r in results]}
            if param_grid else None
        ),
        "layer_weights": layer_weights,
        "layer_weights_order": [{"seed": r.seed, "fold": r.fold} for r in results if r.layer_weights is not None] or None,
        "final_layer_weights": [float(v) for v in est.layer_weights_] if getattr(est, "layer_weights_", None) is not None else None,
        "model": {"kind": model, "class": type(est).__name__, "params": {k: v for k, v in est.get_params().items() if k != "callbacks"}},
        "normalize": normalize,
        "cv": {"spec": cv_spec, "n_folds": len(splits)},
        "seeds": list(range(seeds)),
        "label_map": label_map,
        "command": command,
        "versions": rep.versions(),
        "features": describe,
        "spec": features,
        "cache": str(fc.path),
        "n_utterances": int(len(X)),
        "n_speakers": int(len(np.unique(groups))),
        "model_dir": str(model_dir) if refit else None,
    }
    if cross_data is not None:
        report["cross_corpus"] = {
            "train": fc.corpus, "test": fc_test.corpus, "test_cache": str(fc_test.path), "labels": cross_data.labels,
            "n_train": int(len(X)), "n_test": int(len(cross_data.X_test)),
            "dropped_train": cross_data.dropped_train, "dropped_test": cross_data.dropped_test,
        }
    rep.write_predictions(out / "predictions.csv", results, X_eval.ids, groups_eval, y_eval, task=task, targets=targets)
    if task == "classification":
        rep.plot_confusion(np.asarray(summary["confusion_matrix"]), classes, out / "confusion.png",
                           title=f"{features}, {model}: UAR {summary['metrics']['uar']['mean']:.3f}")
    else:
        click.echo("confusion.png skipped: regression has no classes")
    if layer_weights and len(layer_weights[0]) > 1:
        rep.plot_layer_weights(np.asarray(layer_weights), out / "layer_weights.png",
                               title=f"layer weights of {describe['streams'][0]['name']}, mean ± std over {len(layer_weights)} fits")
    else:
        # the same file for every run, so scripts can rely on it; it says why it is flat
        n_fits = len(results) if hasattr(results, "__len__") else 1
        rep.plot_layer_weights(np.ones((max(n_fits, 1), 1)), out / "layer_weights.png",
                               title=f"{features}: a single layer, so no trainable layer weights (1.0 by construction)")
        click.echo("layer_weights.png: the features have a single layer (no trainable layer weights)")
    report["wall_seconds"] = time.perf_counter() - t0
    rep.write_json(out / "report.json", report)
    where = f"model in {model_dir}" if refit else "no final model (--no-refit)"
    click.echo(f"wrote {out}/report.json, {where} ({report['wall_seconds']:.1f} s)")


# --------------------------------------------------------------------------- predict


@main.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("audio", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--enrol", is_flag=True, help="Speaker-normalised models: normalise the given files with their own statistics, as one speaker.")
@click.option("--segment", type=float, default=None, help="Window length in seconds: one prediction per window.")
@click.option("--hop", type=float, default=None, help="Window hop in seconds (default: --segment).")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--device", default="auto", show_default=True, help="Device of the feature extractor and the model: auto, cpu, cuda.")
@click.option("--ssl-model", default=None, help="Where to load the self-supervised model from (required when the cache was built from a local directory).")
@library_errors
def predict(model_dir, audio, enrol, segment, hop, fmt, device, ssl_model):
    """Predict the emotion of AUDIO files with a model written by `estimators fit` (MODEL_DIR = RUN/model).

    Features are extracted exactly as the cache was built (same extractors, parameters,
    cropping to max_seconds); then normalised as at training: speaker-normalised models use
    the files' own statistics as one speaker with --enrol, else the training data's global
    statistics. Prints one row per file (per window with --segment) to stdout.
    """
    from estimators.errors import ParameterError
    from estimators.predict import Predictor

    if hop is not None and segment is None:
        raise ParameterError("--hop", "given together with --segment", hop)
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
