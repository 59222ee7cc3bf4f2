"""Tests of featcache.audio: decoding, down-mixing, cropping, resampling, bad files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from featcache.audio import Audio, check_signal, load_audio, resample
from featcache.errors import AudioError, FeatcacheError, ParameterError


def sine(freq: float, seconds: float, rate: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1.0 / rate)[np.argmax(spec)])


@pytest.fixture
def write(tmp_path):
    """write(name, data, rate, subtype=None, format=None) -> path of a new file."""

    def _write(name, data, rate, subtype=None, format=None):
        path = tmp_path / name
        sf.write(str(path), data, rate, subtype=subtype, format=format)
        return path

    return _write


# -- sample formats --------------------------------------------------------------------

@pytest.mark.parametrize(
    "name, subtype, tol",
    [
        ("pcm16.wav", "PCM_16", 2.0 / 2**15),
        ("pcm24.wav", "PCM_24", 2.0 / 2**23),
        ("pcmu8.wav", "PCM_U8", 2.0 / 2**7),
        ("float.wav", "FLOAT", 1e-7),
        ("pcm16.flac", "PCM_16", 2.0 / 2**15),
        ("pcm24.flac", "PCM_24", 2.0 / 2**23),
    ],
)
def test_sample_formats_decode_to_the_written_signal(write, name, subtype, tol):
    x = sine(440, 0.5, 16000)
    path = write(name, x, 16000, subtype=subtype)
    assert sf.info(str(path)).subtype == subtype
    audio = load_audio(path)
    assert isinstance(audio, Audio)
    assert audio.signal.dtype == np.float32 and audio.signal.shape == x.shape
    assert audio.sampling_rate == 16000 and audio.original_rate == 16000
    assert audio.channels == 1
    assert audio.original_seconds == pytest.approx(0.5)
    assert audio.used_seconds == pytest.approx(0.5)
    np.testing.assert_allclose(audio.signal, x, atol=tol)


def test_accepts_str_path(write):
    path = write("a.wav", sine(440, 0.1, 16000), 16000)
    assert load_audio(str(path)).signal.shape == (1600,)


# -- channels --------------------------------------------------------------------------

def test_stereo_is_down_mixed_to_the_channel_mean(write):
    left = sine(440, 0.5, 16000, amp=0.6)
    right = sine(1000, 0.5, 16000, amp=0.2)
    path = write("stereo.wav", np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    audio = load_audio(path)
    assert audio.channels == 2
    assert audio.signal.shape == left.shape
    np.testing.assert_allclose(audio.signal, (left + right) / 2, atol=1e-6)


def test_surround_51_is_down_mixed_to_the_channel_mean(write):
    chans = np.stack([sine(200 * (k + 1), 0.25, 16000, amp=0.1 * (k + 1)) for k in range(6)], 1)
    path = write("surround.wav", chans, 16000, subtype="PCM_24")
    audio = load_audio(path)
    assert audio.channels == 6
    np.testing.assert_allclose(audio.signal, chans.mean(axis=1), atol=1e-5)


# -- resampling ------------------------------------------------------------------------

@pytest.mark.parametrize("rate", [8000, 48000])
def test_resampled_length_and_frequency(write, rate):
    x = sine(440, 1.0, rate)
    path = write(f"sine{rate}.wav", x, rate, subtype="PCM_16")
    audio = load_audio(path, sampling_rate=16000)
    assert audio.original_rate == rate and audio.sampling_rate == 16000
    assert audio.signal.shape == (16000,)
    assert audio.original_seconds == pytest.approx(1.0)
    assert abs(peak_hz(audio.signal, 16000) - 440.0) <= 1.0
    # amplitude is kept (HQ resampling, tone far below both Nyquist frequencies)
    assert np.abs(audio.signal[1000:-1000]).max() == pytest.approx(0.5, abs=0.01)


def test_sampling_rate_none_keeps_the_file_rate(write):
    x = sine(440, 0.5, 48000)
    audio = load_audio(write("keep.wav", x, 48000, subtype="FLOAT"), sampling_rate=None)
    assert audio.sampling_rate == 48000
    np.testing.assert_array_equal(audio.signal, x)


def test_resample_helper():
    x = sine(440, 1.0, 48000)
    assert resample(x, 16000, 16000) is x
    y = resample(x, 48000, 16000)
    assert y.dtype == np.float32 and y.shape == (16000,)
    assert abs(peak_hz(y, 16000) - 440.0) <= 1.0
    with pytest.raises(ParameterError):
        resample(x, 0, 16000)


# -- cropping --------------------------------------------------------------------------

@pytest.fixture
def read_spy(monkeypatch):
    """Records the ``frames`` argument of every SoundFile.read call."""
    calls = []
    original = sf.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):
        calls.append(frames)
        return original(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    return calls


def test_crop_reads_only_the_needed_frames(write, read_spy):
    x = sine(440, 3.0, 16000)
    path = write("long.wav", x, 16000, subtype="FLOAT")
    audio = load_audio(path, max_seconds=1.0)
    assert read_spy == [16000]  # one read, of exactly the kept frames, never the whole file
    assert audio.original_seconds == pytest.approx(3.0)
    assert audio.used_seconds == pytest.approx(1.0)
    np.testing.assert_array_equal(audio.signal, x[:16000])


def test_crop_happens_at_the_original_rate_before_resampling(write, read_spy):
    path = write("long48.wav", sine(440, 2.0, 48000), 48000, subtype="PCM_16")
    audio = load_audio(path, sampling_rate=16000, max_seconds=0.5)
    assert read_spy == [24000]  # 0.5 s at 48 kHz
    assert audio.used_seconds == pytest.approx(0.5)
    assert audio.original_seconds == pytest.approx(2.0)
    assert audio.signal.shape == (8000,)


def test_no_crop_when_shorter_or_disabled(write):
    path = write("short.wav", sine(440, 0.5, 16000), 16000)
    assert load_audio(path, max_seconds=15.0).used_seconds == pytest.approx(0.5)
    whole = load_audio(path, max_seconds=None)
    assert whole.used_seconds == whole.original_seconds == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "2"])
def test_bad_max_seconds(write, bad):
    path = write("a.wav", sine(440, 0.1, 16000), 16000)
    with pytest.raises(ParameterError, match="max_seconds"):
        load_audio(path, max_seconds=bad)


def test_bad_sampling_rate(write):
    path = write("a.wav", sine(440, 0.1, 16000), 16000)
    with pytest.raises(ParameterError, match="sampling_rate"):
        load_audio(path, sampling_rate=0)


# -- unusable files --------------------------------------------------------------------

def assert_audio_error(path, reason_part):
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert isinstance(info.value, FeatcacheError)
    assert info.value.path == str(path)
    assert reason_part in info.value.reason
    return info.value


def test_missing_file(tmp_path):
    assert_audio_error(tmp_path / "nope.wav", "not found")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    assert_audio_error(path, "empty file")


def test_text_file_named_wav(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n" * 20)
    assert_audio_error(path, "not a readable audio file")


def test_truncated_header(write, tmp_path):
    good = write("good.wav", sine(440, 0.1, 16000), 16000)
    path = tmp_path / "truncated.wav"
    path.write_bytes(good.read_bytes()[:20])
    assert_audio_error(path, "not a readable audio file")


def test_header_without_samples(write, tmp_path):
    path = write("nosamples.wav", np.zeros(0, np.float32), 16000, subtype="PCM_16")
    assert_audio_error(path, "no audio samples")


def test_nan_samples(write):
    x = sine(440, 0.1, 16000)
    x[[10, 20, 30]] = np.nan
    err = assert_audio_error(write("nan.wav", x, 16000, subtype="FLOAT"), "NaN")
    assert "3 NaN" in err.reason


def test_infinite_samples(write):
    x = sine(440, 0.1, 16000)
    x[5] = np.inf
    assert_audio_error(write("inf.wav", x, 16000, subtype="FLOAT"), "infinite")


def test_nan_after_the_crop_point_is_not_read(write):
    x = sine(440, 2.0, 16000)
    x[-100:] = np.nan
    audio = load_audio(write("late_nan.wav", x, 16000, subtype="FLOAT"), max_seconds=1.0)
    assert np.isfinite(audio.signal).all()


# -- silence and clipping are fine -----------------------------------------------------

def test_digital_silence_is_returned(write):
    audio = load_audio(write("silence.wav", np.zeros(8000, np.float32), 16000, subtype="PCM_16"))
    assert audio.signal.shape == (8000,)
    assert not audio.signal.any()


def test_clipped_signal_is_returned(write):
    x = np.clip(3 * sine(440, 0.25, 16000), -1.0, 1.0)
    audio = load_audio(write("clipped.wav", x, 16000, subtype="FLOAT"))
    np.testing.assert_array_equal(audio.signal, x)
    assert audio.signal.max() == 1.0 and audio.signal.min() == -1.0


# -- check_signal ----------------------------------------------------------------------

def test_check_signal():
    out = check_signal([0, 1, 2])
    assert out.dtype == np.float32 and out.tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(AudioError, match="no audio samples") as info:
        check_signal(np.zeros(0, np.float32))
    assert info.value.path == "<signal>"
    with pytest.raises(AudioError, match="NaN"):
        check_signal(np.array([0.0, np.nan]), "x.wav")
    with pytest.raises(AudioError, match="infinite"):
        check_signal(np.array([0.0, -np.inf]))
    with pytest.raises(ParameterError, match="1-D"):
        check_signal(np.zeros((2, 100), np.float32))
