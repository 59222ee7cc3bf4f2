"""The featcache command through click's CliRunner."""

from __future__ import annotations

import json

from click.testing import CliRunner

from cli.featcache import main


def run(*args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, **kw)


def test_list_models_and_corpora():
    r = run("list-models")
    assert r.exit_code == 0 and "wav2vec_small" in r.output and "facebook/wav2vec2-base" in r.output
    r = run("list-corpora")
    for name in ("ravdess", "iemocap", "emodb", "tess", "savee", "cremad", "csv"):
        assert name in r.output


def test_extract_info_verify(tmp_path, ravdess_dir, tiny_model):
    r = run("extract", "--corpus", "ravdess", "--data-dir", ravdess_dir, "--model", tiny_model,
            "--features", "wav2vec2,logmel", "--cache-dir", tmp_path, "--precision", "fp32", "--quiet", "--name", "tiny")
    assert r.exit_code == 0, r.output
    assert "done 64, skipped 0, failed 0" in r.output and "cache size" in r.output
    r = run("info", tmp_path / "ravdess", "--json")
    info = json.loads(r.output)
    assert info["n_utterances"] == 64 and info["n_speakers"] == 4
    assert info["stores"]["tiny"]["n_layers"] == 3 and info["stores"]["logmel"]["frame_rate"] == 100.0
    r = run("info", tmp_path / "ravdess")
    assert "tiny: ssl, 3 layer(s) x 32" in r.output
    assert run("verify", tmp_path / "ravdess").exit_code == 0
    shard = sorted((tmp_path / "ravdess" / "logmel").glob("shard-*.h5"))[0]
    shard.write_bytes(shard.read_bytes()[:-64])
    r = run("verify", tmp_path / "ravdess")
    assert r.exit_code == 1 and shard.name in r.output and "PROBLEM" in r.output
    # the plain re-run re-extracts the damaged shard only
    r = run("extract", "--corpus", "ravdess", "--data-dir", ravdess_dir, "--features", "logmel", "--cache-dir", tmp_path, "--quiet")
    assert r.exit_code == 0 and "re-extracted after damage" in r.output
    assert run("verify", tmp_path / "ravdess").exit_code == 0


def test_missing_default_data_dir_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run("extract", "--corpus", "ravdess", "--features", "mfcc")
    assert r.exit_code == 1
    assert "featcache download ravdess" in r.output and "--data-dir" in r.output


def test_errors_are_one_clear_message(tmp_path, ravdess_dir):
    r = run("extract", "--corpus", "nosuch", "--data-dir", ravdess_dir)
    assert r.exit_code == 1 and "corpus" in r.output and "ravdess" in r.output
    r = run("extract", "--corpus", "ravdess", "--data-dir", tmp_path, "--features", "mfcc")
    assert r.exit_code == 1 and str(tmp_path) in r.output
    r = run("extract", "--corpus", "ravdess", "--data-dir", ravdess_dir, "--features", "mfcc,chroma", "--cache-dir", tmp_path)
    assert r.exit_code == 1 and "chroma" in r.output and "features" in r.output


def test_extract_says_when_auto_kept_fp32_on_a_bf16_cpu(tmp_path, ravdess_dir, tiny_model, monkeypatch):
    from featcache.extractors import runtime

    args = ("extract", "--corpus", "ravdess", "--data-dir", ravdess_dir, "--model", tiny_model, "--features", "wav2vec2",
            "--device", "cpu", "--limit", "2")
    for native, shown in ((True, True), (False, False)):
        monkeypatch.setattr(runtime, "native_bf16_cpu", lambda native=native: native)
        r = run(*args, "--cache-dir", tmp_path / str(native))
        assert r.exit_code == 0, r.output
        assert ("--precision bf16 runs the model several times faster" in r.output) is shown
    r = run(*args, "--cache-dir", tmp_path / "bf16", "--precision", "bf16")  # asked for: no note
    assert r.exit_code == 0 and "native bf16" not in r.output
