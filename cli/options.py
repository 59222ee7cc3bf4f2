"""What both commands share: their options and the one error-to-message rule.

As in rasterio's ``rio/options.py``: a command module declares ``@device_option()`` instead
of repeating the option, its help and its check, and wraps itself in
:func:`library_errors` so that every library error becomes one ``Error: ...`` line.
"""

from __future__ import annotations

import functools
import re
import sys

import click

from featcache.errors import FeatcacheError

__all__ = ["cluster_options", "device_option", "library_errors", "n_jobs_option", "precision_option", "quiet_option"]

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def _is_library_error(e: BaseException) -> bool:
    """A library's own error, a parameter check (``ValueError``) or an I/O failure (full disk...)."""
    if isinstance(e, (FeatcacheError, ValueError, OSError)):
        return True
    est = sys.modules.get("estimators.errors")  # only loaded by commands that use estimators
    return est is not None and isinstance(e, est.EstimatorsError)


def _message(e: BaseException) -> str:
    if isinstance(e, OSError) and not isinstance(e, FeatcacheError) and e.strerror:
        where = f" ({e.filename})" if e.filename else ""
        return f"{e.strerror}{where}"
    return str(e).strip() or type(e).__name__


def library_errors(fn):
    """Turn library errors into one ``Error: ...`` line and exit status 1 (usage errors stay 2)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except Exception as e:
            if not _is_library_error(e):
                raise
            raise click.ClickException(_message(e)) from e

    return wrapper


def _check_device(ctx, param, value: str) -> str:
    if not isinstance(value, str) or not _DEVICE.fullmatch(value):
        raise click.BadParameter(f"must be auto, cpu, cuda or cuda:N; got {value!r}", ctx=ctx, param=param)
    return value


def device_option(help: str = "Device: auto (CUDA when available), cpu, cuda or cuda:N."):
    """``--device`` with one meaning and one check in both commands."""
    return click.option("--device", default="auto", show_default=True, callback=_check_device, help=help)


def precision_option(choices: tuple[str, ...], default: str, help: str | None = None):
    """``--precision``; what is allowed differs by job (extraction also has auto and fp16)."""
    return click.option("--precision", type=click.Choice(list(choices)), default=default, show_default=True, help=help)


def quiet_option(help: str = "No progress bar."):
    return click.option("--quiet", "-q", is_flag=True, help=help)


def n_jobs_option(help: str = "Parallel jobs."):
    return click.option("--n-jobs", type=int, default=1, show_default=True, help=help)


def _check_cluster(ctx, param, value):
    """``--scheduler`` / ``--cluster``: a valid ``local:N``, and not both."""
    if value is None:
        return None
    other = "cluster" if param.name == "scheduler" else "scheduler"
    if ctx.params.get(other) is not None:
        raise click.UsageError("give --scheduler ADDRESS or --cluster local:N, not both", ctx=ctx)
    if param.name == "cluster":
        from featcache.distributed import parse_cluster

        try:
            parse_cluster(value)
        except ValueError:
            raise click.BadParameter(f"must be local:N with N >= 1 worker processes; got {value!r}", ctx=ctx, param=param) from None
    elif not value.strip():
        raise click.BadParameter("must be a scheduler address such as tcp://10.0.0.5:8786", ctx=ctx, param=param)
    return value


def cluster_options(what: str):
    """``--scheduler ADDRESS`` and ``--cluster local:N``: run ``what`` on a Dask cluster (both commands)."""

    def decorate(fn):
        fn = click.option(
            "--cluster", default=None, metavar="local:N", callback=_check_cluster,
            help=f"Run {what} on a Dask LocalCluster of N single-threaded worker processes here (one GPU each when there are several).",
        )(fn)
        return click.option(
            "--scheduler", default=None, metavar="ADDRESS", callback=_check_cluster,
            help=f"Run {what} on the Dask cluster of this scheduler (e.g. tcp://10.0.0.5:8786); workers must see the data and the cache at the same paths.",
        )(fn)

    return decorate
