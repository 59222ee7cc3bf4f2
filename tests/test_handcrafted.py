"""Tests of the handcrafted extractors (MFCC, log-mel, spectrogram, eGeMAPS)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from featcache.errors import AudioError, ParameterError
from featcache.extractors.base import Extractor
from featcache.extractors.handcrafted import (
    HANDCRAFTED,
    EGeMAPS,
    LogMel,
    MFCC,
    Spectrogram,
    get_handcrafted,
)

SR = 16000
DIMS = {"mfcc": 40, "logmel": 80, "spectrogram": 257, "egemaps": 25}


def voice_like(seconds: float, seed: int = 0) -> np.ndarray:
    """A 150 Hz harmonic tone plus a little noise: voiced, so eGeMAPS finds pitch."""
    t = np.arange(int(round(seconds * SR))) / SR
    x = sum(0.3 / k * np.sin(2 * np.pi * 150 * k * t) for k in range(1, 6))
    x = x + 0.01 * np.random.default_rng(seed).standard_normal(t.size)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def extractors():
    return {name: get_handcrafted(name) for name in HANDCRAFTED}


@pytest.fixture(scope="module")
def one_second():
    return voice_like(1.0)


NAMES = list(HANDCRAFTED)


def test_registry():
    assert HANDCRAFTED == {"mfcc": MFCC, "logmel": LogMel, "spectrogram": Spectrogram, "egemaps": EGeMAPS}
    assert isinstance(get_handcrafted("MFCC", n_mfcc=13), MFCC)
    assert get_handcrafted("mfcc", n_mfcc=13).dim == 13
    with pytest.raises(ParameterError, match="name"):
        get_handcrafted("chroma")
    with pytest.raises(ParameterError, match="n_mfccs"):
        get_handcrafted("mfcc", n_mfccs=13)


@pytest.mark.parametrize("name", NAMES)
def test_protocol_attributes(extractors, name):
    ext = extractors[name]
    assert isinstance(ext, Extractor)
    assert ext.name == ext.store_name == name
    assert ext.sampling_rate == SR
    assert ext.frame_rate == 100.0
    assert ext.n_layers == 1
    assert ext.dim == DIMS[name]
    assert ext.dtype == np.float32
    assert set(ext.versions()) >= {"numpy"}
    assert all(isinstance(v, str) and v for v in ext.versions().values())
    described = ext.describe()
    assert described["dim"] == DIMS[name] and described["params"] == ext.params()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seconds", [0.5, 1.0, 1.37])
def test_shapes_follow_duration(extractors, name, seconds):
    ext = extractors[name]
    x = voice_like(seconds)
    y = ext(x, SR)
    assert y.dtype == np.float32 and y.ndim == 2 and y.flags.c_contiguous
    assert y.shape[1] == ext.dim
    assert abs(y.shape[0] - seconds * ext.frame_rate) <= 2
    # centred framing: exactly 1 + n // hop frames (documented convention)
    assert y.shape[0] == 1 + x.size // 160 == ext.n_frames(x.size)
    assert np.isfinite(y).all()


@pytest.mark.parametrize("name", ["mfcc", "logmel", "spectrogram"])
def test_frame_rate_follows_hop(name, one_second):
    ext = get_handcrafted(name, hop_ms=20.0)
    assert ext.frame_rate == 50.0
    assert ext(one_second, SR).shape[0] == 1 + SR // 320
    with pytest.raises(ParameterError, match="hop_ms"):
        get_handcrafted(name, hop_ms=10.03)  # not a whole number of samples


def energy_curve(name: str, y: np.ndarray) -> np.ndarray:
    """A per-frame curve that grows with the frame's power."""
    y = y.astype(np.float64)
    if name == "spectrogram":
        return (y**2).sum(axis=1)
    if name == "logmel":
        return np.exp(y).sum(axis=1)
    if name == "mfcc":  # c0 = sqrt(n_mels) * mean dB (orthonormal DCT)
        return 10 ** (y[:, 0] / np.sqrt(128) / 10)
    return y[:, 0]  # eGeMAPS Loudness_sma3


@pytest.mark.parametrize("name", NAMES)
def test_frame_i_is_centred_at_i_times_hop(extractors, name):
    """A smooth 50 ms burst centred at 0.5 s: its energy centroid is frame 50, not 49 or 51."""
    x = 1e-3 * np.random.default_rng(1).standard_normal(SR).astype(np.float32)
    x[7600:8400] += voice_like(0.05, seed=2) * np.hanning(800).astype(np.float32)
    curve = energy_curve(name, extractors[name](x, SR))
    excess = np.clip(curve - np.median(curve), 0, None)
    centroid = (excess * np.arange(curve.size)).sum() / excess.sum()
    assert centroid == pytest.approx(50.0, abs=0.4)


@pytest.mark.parametrize("name", NAMES)
def test_silence_gives_finite_output(extractors, name):
    y = extractors[name](np.zeros(SR, np.float32), SR)
    assert y.shape == (101, DIMS[name])
    assert np.isfinite(y).all()


def test_silence_floors():
    silence = np.zeros(4000, np.float32)
    np.testing.assert_allclose(LogMel()(silence, SR), np.log(1e-6), rtol=1e-6)
    np.testing.assert_allclose(LogMel(eps=1e-3)(silence, SR), np.log(1e-3), rtol=1e-6)
    np.testing.assert_array_equal(Spectrogram()(silence, SR), 0.0)
    np.testing.assert_allclose(Spectrogram(log=True)(silence, SR), np.log(1e-6), rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_sampling_rate(extractors, name, one_second):
    with pytest.raises(ParameterError, match="sampling_rate"):
        extractors[name](one_second, 8000)


@pytest.mark.parametrize("name", NAMES)
def test_bad_signals(extractors, name):
    with pytest.raises(AudioError, match="NaN"):
        extractors[name](np.full(SR, np.nan, np.float32), SR)
    with pytest.raises(AudioError, match="no audio samples"):
        extractors[name](np.zeros(0, np.float32), SR)
    with pytest.raises(ParameterError, match="1-D"):
        extractors[name](np.zeros((2, SR), np.float32), SR)


@pytest.mark.parametrize(
    "name, change",
    [
        ("mfcc", {"n_mfcc": 20}),
        ("mfcc", {"fmax": 7600}),
        ("logmel", {"eps": 1e-5}),
        ("logmel", {"win_ms": 20.0}),
        ("spectrogram", {"log": True}),
        ("spectrogram", {"n_fft": 400}),
        ("egemaps", {"align": False}),
    ],
)
def test_params_json_and_sensitive(extractors, name, change):
    default = extractors[name].params()
    assert json.loads(json.dumps(default)) == default
    assert get_handcrafted(name).params() == default  # deterministic
    changed = get_handcrafted(name, **change).params()
    assert json.loads(json.dumps(changed)) == changed
    assert changed != default
    assert changed["sampling_rate"] == default["sampling_rate"] == SR


def test_params_record_frame_convention(extractors):
    for name in NAMES:
        assert extractors[name].params()["center"] is True
    assert MFCC(fmax=None).params() == MFCC(fmax=8000).params()  # None resolves to Nyquist


def test_spectrogram_matches_a_sine(one_second):
    spec = Spectrogram()
    assert spec.n_fft == 512 and spec.dim == 257
    t = np.arange(SR) / SR
    y = spec((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), SR)
    assert set(np.argmax(y[2:-2], axis=1)) == {32}  # 1000 Hz / (16000 / 512) Hz per bin
    assert Spectrogram(n_fft=400).dim == 201
    x = one_second
    np.testing.assert_allclose(Spectrogram(log=True)(x, SR), np.log(spec(x, SR) + 1e-6), rtol=1e-5, atol=1e-5)


def test_mfcc_equals_librosa(one_second):
    import librosa

    mel = librosa.feature.melspectrogram(
        y=one_second, sr=SR, n_fft=512, hop_length=160, win_length=400,
        window="hann", center=True, pad_mode="constant", n_mels=128,
    )
    ref = librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=None), n_mfcc=40).T
    np.testing.assert_allclose(MFCC()(one_second, SR), ref, rtol=1e-4, atol=1e-3)


def test_egemaps_columns_and_min_length(extractors, one_second):
    ext = extractors["egemaps"]
    assert len(ext.columns) == 25 == ext.dim
    assert ext.columns[0] == "Loudness_sma3" and "F0semitoneFrom27.5Hz_sma3nz" in ext.columns
    assert list(ext.smile.feature_names) == ext.columns
    assert ext.min_samples() == 960
    assert ext(np.zeros(960, np.float32) + 0.01, SR).shape == (7, 25)
    with pytest.raises(AudioError, match="minimum of 60 ms"):
        ext(np.zeros(959, np.float32), SR)
    native = EGeMAPS(align=False)
    assert native(one_second, SR).shape == (96, 25)  # openSMILE's own framing
    voiced = ext(one_second, SR)[:, ext.columns.index("F0semitoneFrom27.5Hz_sma3nz")]
    # 150 Hz is 12 * log2(150 / 27.5) = 29.4 semitones above 27.5 Hz
    assert np.median(voiced[10:-10]) == pytest.approx(29.4, abs=0.5)


def test_egemaps_full_scale_does_not_wrap(extractors):
    """+1.0 samples must not wrap to -32768 in openSMILE's 16-bit conversion."""
    square = np.sign(voice_like(0.5)).astype(np.float32)  # +-1.0 full scale
    ext = extractors["egemaps"]
    loud = ext(square, SR)[:, 0]
    ref = ext(square * np.float32(32767 / 32768), SR)[:, 0]
    np.testing.assert_allclose(loud, ref, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_pickles(extractors, name, one_second):
    ext = extractors[name]
    expected = ext(one_second, SR)  # used first: lazy state (Smile, mel basis) exists
    clone = pickle.loads(pickle.dumps(ext))
    assert type(clone) is type(ext) and clone.params() == ext.params()
    if name == "egemaps":
        assert clone._smile is None and ext._smile is not None
    np.testing.assert_array_equal(clone(one_second, SR), expected)
