"""The options and the error rule both commands share (cli/options.py)."""

from __future__ import annotations

import errno

import click
import pytest
from click.testing import CliRunner

from cli.options import device_option, library_errors
from featcache.errors import StoreError


def _command(exc):
    @click.command()
    @device_option()
    @library_errors
    def cmd(device):
        if exc is not None:
            raise exc
        click.echo(f"device={device}")

    return cmd


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1"])
def test_device_accepts_the_same_values_in_every_command(device):
    r = CliRunner().invoke(_command(None), ["--device", device])
    assert r.exit_code == 0 and r.output.strip() == f"device={device}", r.output


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "CPU"])
def test_a_bad_device_is_a_usage_error_naming_what_is_allowed(device):
    r = CliRunner().invoke(_command(None), ["--device", device])
    assert r.exit_code == 2 and "must be auto, cpu, cuda or cuda:N" in r.output, r.output


@pytest.mark.parametrize(
    "exc, line",
    [
        (StoreError("the store is damaged"), "Error: the store is damaged"),
        (ValueError("hidden must be positive"), "Error: hidden must be positive"),
        (OSError(errno.ENOSPC, "No space left on device", "/out/report.json"), "Error: No space left on device (/out/report.json)"),
    ],
)
def test_library_errors_become_one_error_line_and_exit_1(exc, line):
    r = CliRunner().invoke(_command(exc), [])
    assert r.exit_code == 1 and r.output.strip() == line, r.output


def test_a_programming_error_is_not_disguised_as_a_message():
    r = CliRunner().invoke(_command(KeyError("bug")), [])
    assert r.exit_code == 1 and isinstance(r.exception, KeyError)


def test_featcache_extract_refuses_a_bad_device_before_work(tmp_path):
    from cli.featcache import main

    r = CliRunner().invoke(main, ["extract", "--corpus", "ravdess", "--data-dir", str(tmp_path), "--device", "tpu"])
    assert r.exit_code == 2 and "--device" in r.output, r.output
