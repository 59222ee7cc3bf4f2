"""Reading audio files into mono float32 signals.

:func:`load_audio` reads one file with :mod:`soundfile` (WAV, FLAC and whatever else the
installed libsndfile reads; any sample format: 8/16/24/32-bit integer, float, double),
down-mixes it to mono by averaging the channels, crops it to ``max_seconds`` *at the
original rate* (only the needed frames are read from disk, so a 20-minute file is never
loaded whole) and then resamples it with :mod:`soxr` (``quality="HQ"``).

Every problem that makes one file unusable raises :class:`~featcache.errors.AudioError`
with a short reason (missing, not a regular file, empty, not audio, a WAV header that
promises more samples than the file holds, no samples, NaN or infinite samples), so the
orchestration can record it and go on with the other files. Only regular files are
opened: a FIFO or device named ``x.wav`` would block the reader or never end. Digital
silence and clipped signals are *not* errors: they are returned as they are.
"""

from __future__ import annotations

import math
import os
import stat
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from featcache.errors import AudioError, ParameterError

__all__ = ["Audio", "load_audio", "resample", "check_signal", "not_regular_reason"]

#: Bytes per sample of the WAV sample formats whose data length gives the frame count.
_WAV_SAMPLE_BYTES = {
    "PCM_U8": 1, "PCM_S8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4,
    "FLOAT": 4, "DOUBLE": 8, "ALAW": 1, "ULAW": 1,
}  # fmt: skip
_WAV_MAX_CHUNKS = 1024  # a real file has a handful before "data"
_WAV_UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # streamed WAV (size not known when written), RF64


def not_regular_reason(mode: int) -> str | None:
    """Why a file of ``st_mode`` ``mode`` must not be opened as audio; None for a regular file.

    A FIFO blocks the reader until someone writes to it, a device may never end or may
    react to being opened: only regular files are read.
    """
    if stat.S_ISREG(mode):
        return None
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    kind = next((name for test, name in kinds if test(mode)), f"file type {stat.S_IFMT(mode):#o}")
    return f"not a regular file: {kind}"


@dataclass
class Audio:
    """One decoded audio file.

    Attributes
    ----------
    signal : ndarray of shape (n,), float32
        Mono waveform (channel mean), cropped, at :attr:`sampling_rate`.
    sampling_rate : int
        Rate of :attr:`signal` (Hz).
    original_rate : int
        Rate of the file on disk (Hz).
    channels : int
        Number of channels in the file (before down-mixing).
    original_seconds : float
        Duration of the whole file (seconds).
    used_seconds : float
        Duration of the part that was read, after cropping to ``max_seconds`` (seconds,
        counted at the original rate).
    """

    signal: np.ndarray
    sampling_rate: int
    original_rate: int
    channels: int
    original_seconds: float
    used_seconds: float


def _check_rate_value(name: str, value: Any, *, allow_none: bool) -> int | None:
    if value is None and allow_none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or int(value) <= 0
    ):
        allowed = "a positive integer (Hz)" + (" or None" if allow_none else "")
        raise ParameterError(name, allowed, value)
    return int(value)


def check_signal(signal: Any, path: str = "<signal>") -> np.ndarray:
    """Check that ``signal`` is a usable mono waveform and return it as float32.

    Parameters
    ----------
    signal : array-like of shape (n,)
        Real-valued samples.
    path : str
        What to name in the error (a file path, or ``"<signal>"`` for raw arrays).

    Returns
    -------
    ndarray of shape (n,), float32 (the input itself when it already is one).

    Raises
    ------
    ParameterError
        ``signal`` is not a 1-D real-valued array (a programming error, not a bad file).
    AudioError
        ``signal`` has no samples, or contains NaN or infinite samples.
    """
    x = np.asarray(signal)
    if x.ndim != 1:
        raise ParameterError("signal", "a 1-D mono array", f"array of shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ParameterError("signal", "a real-valued array", f"dtype {x.dtype}")
    x = np.asarray(x, dtype=np.float32)
    if x.size == 0:
        raise AudioError(path, "no audio samples (0 frames)")
    if not np.isfinite(x).all():
        n_nan = int(np.isnan(x).sum())
        n_inf = int(np.isinf(x).sum())
        parts = []
        if n_nan:
            parts.append(f"{n_nan} NaN")
        if n_inf:
            parts.append(f"{n_inf} infinite")
        raise AudioError(path, f"contains {' and '.join(parts)} sample(s)")
    return x


def resample(signal: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample a mono signal with soxr (``quality="HQ"``).

    Returns the input unchanged when the rates are equal; otherwise a new float32 array
    of length ``round(n * target_rate / orig_rate)`` (soxr's rule; may be 0 for a signal
    of a few samples).
    """
    orig_rate = _check_rate_value("orig_rate", orig_rate, allow_none=False)
    target_rate = _check_rate_value("target_rate", target_rate, allow_none=False)
    if orig_rate == target_rate:
        return signal
    x = np.ascontiguousarray(signal, dtype=np.float32)
    if x.size == 0:
        return x.copy()
    return np.ascontiguousarray(soxr.resample(x, orig_rate, target_rate, quality="HQ"))


def _libsndfile_reason(exc: Exception) -> str:
    detail = getattr(exc, "error_string", None) or str(exc)
    detail = str(detail).strip().rstrip(".")
    return f"not a readable audio file ({detail})" if detail else "not a readable audio file"


def load_audio(
    path: str | os.PathLike,
    *,
    sampling_rate: int | None = 16000,
    max_seconds: float | None = 15.0,
) -> Audio:
    """Read one audio file as a mono float32 signal.

    Parameters
    ----------
    path : str or path-like
        WAV, FLAC (or any other format libsndfile reads), any sample format.
    sampling_rate : int or None
        Rate to resample to (soxr, ``quality="HQ"``); ``None`` keeps the file's rate.
    max_seconds : float or None
        Keep only the first ``max_seconds`` seconds (``round(max_seconds * rate)`` frames
        at the file's rate; only those frames are read). ``None`` reads the whole file.

    Returns
    -------
    Audio
        Cropping happens first, at the original rate, then resampling.

    Raises
    ------
    ParameterError
        ``sampling_rate`` or ``max_seconds`` is invalid.
    AudioError
        The file is missing, not a regular file (FIFO, socket, device: never opened),
        empty (0 bytes), not readable as audio (wrong format, truncated header), has no
        samples, or has NaN or infinite samples. Also when its length does not add up:
        a PCM/float WAV whose ``data`` chunk size promises more frames than the file
        holds ("header says 3.30 s (52800 frames) but the data holds 1.10 s (17600
        frames) (truncated file?)"; checked whatever ``max_seconds``, since libsndfile
        silently shortens such a file and it would be stored as complete), or any
        file that yields fewer frames than its header promised up to the crop point. A
        truncated FLAC or other compressed file is only noticed if the damage lies before
        the crop point (its decoder then fails or comes up short).
    """
    sampling_rate = _check_rate_value("sampling_rate", sampling_rate, allow_none=True)
    _check_max_seconds(max_seconds)
    p = os.fspath(path)
    _check_regular_file(p)
    try:
        with sf.SoundFile(_sf_name(p)) as f:
            rate = int(f.samplerate)
            channels = int(f.channels)
            total = int(f.frames)
            if rate <= 0 or channels <= 0:
                raise AudioError(p, f"invalid header (rate {rate} Hz, {channels} channels)")
            _check_wav_length(p, f)
            if total <= 0:
                raise AudioError(p, "no audio samples (0 frames)")
            n = total
            if max_seconds is not None:
                n = min(total, max(1, int(round(float(max_seconds) * rate))))
            data = f.read(frames=n, dtype="float32", always_2d=True)
            if data.shape[0] < n:
                raise AudioError(p, _length_reason(total, data.shape[0], rate, "decoding stopped after"))
    except AudioError:
        raise
    except (sf.SoundFileError, RuntimeError) as exc:
        raise AudioError(p, _libsndfile_reason(exc)) from exc
    except (OSError, ValueError, TypeError) as exc:
        raise AudioError(p, f"cannot decode audio ({type(exc).__name__}: {exc})") from exc

    if data.shape[0] == 0:
        raise AudioError(p, "no audio samples (0 frames)")
    if channels == 1:
        mono = np.ascontiguousarray(data[:, 0])
    else:
        mono = data.mean(axis=1, dtype=np.float64).astype(np.float32)
    mono = check_signal(mono, p)
    used_seconds = mono.shape[0] / rate

    out_rate = rate if sampling_rate is None else sampling_rate
    signal = resample(mono, rate, out_rate)
    if signal.shape[0] == 0:
        raise AudioError(
            p, f"too short to resample ({mono.shape[0]} samples at {rate} Hz -> {out_rate} Hz)"
        )
    return Audio(
        signal=signal,
        sampling_rate=int(out_rate),
        original_rate=rate,
        channels=channels,
        original_seconds=total / rate,
        used_seconds=used_seconds,
    )


def _sf_name(p: str) -> str | bytes:
    """``p`` as soundfile can open it: the raw bytes of a name that is not valid UTF-8
    (soundfile encodes a str strictly, so it could not open such a file)."""
    try:
        p.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(p)
    return p


def _check_max_seconds(max_seconds: Any) -> None:
    if max_seconds is not None and (
        isinstance(max_seconds, bool)
        or not isinstance(max_seconds, (int, float, np.integer, np.floating))
        or not math.isfinite(max_seconds)
        or max_seconds <= 0
    ):
        raise ParameterError("max_seconds", "a positive number of seconds or None", max_seconds)


def _check_regular_file(p: str) -> None:
    """AudioError unless ``p`` is a non-empty regular file (stat only: nothing is opened)."""
    try:
        st = os.stat(p)
    except FileNotFoundError as exc:
        raise AudioError(p, "file not found") from exc
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        raise AudioError(p, f"cannot read file ({getattr(exc, 'strerror', None) or exc})") from exc
    if stat.S_ISDIR(st.st_mode):
        raise AudioError(p, "is a directory, not an audio file")
    reason = not_regular_reason(st.st_mode)
    if reason is not None:
        raise AudioError(p, reason)
    if st.st_size == 0:
        raise AudioError(p, "empty file (0 bytes)")


def _length_reason(header_frames: int, data_frames: int, rate: int, data: str) -> str:
    """``header says 3.30 s (52800 frames) but <data> 1.10 s (17600 frames) (truncated file?)``."""
    return (
        f"header says {header_frames / rate:.2f} s ({header_frames} frames) but {data} "
        f"{data_frames / rate:.2f} s ({data_frames} frames) (truncated file?)"
    )


def _check_wav_length(p: str, f: sf.SoundFile) -> None:
    """AudioError when a WAV's ``data`` chunk claims more frames than libsndfile found.

    libsndfile shortens such a file to the bytes present (it only notes it in its log),
    so a truncated download or copy would otherwise be read, and its duration recorded,
    as if it were complete. Only uncompressed formats, where bytes give frames, are
    checked; sizes a streaming writer leaves unknown (0, 0xFFFFFFFF) are not.
    """
    if f.format not in ("WAV", "WAVEX") or f.subtype not in _WAV_SAMPLE_BYTES:
        return
    declared = _wav_data_size(p)
    if declared is None or declared in _WAV_UNKNOWN_SIZES:
        return
    header_frames = declared // (_WAV_SAMPLE_BYTES[f.subtype] * int(f.channels))
    if header_frames > int(f.frames):
        raise AudioError(p, _length_reason(header_frames, int(f.frames), int(f.samplerate), "the data holds"))


def _wav_data_size(p: str) -> int | None:
    """The size the ``data`` chunk of a RIFF/RIFX WAV declares; None if not found."""
    try:
        with open(p, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[8:12] != b"WAVE" or head[:4] not in (b"RIFF", b"RIFX"):
                return None
            order = "<I" if head[:4] == b"RIFF" else ">I"
            for _ in range(_WAV_MAX_CHUNKS):
                chunk = fh.read(8)
                if len(chunk) < 8:
                    return None
                size = struct.unpack(order, chunk[4:])[0]
                if chunk[:4] == b"data":
                    return size
                fh.seek(size + (size & 1), os.SEEK_CUR)  # chunks are padded to even sizes
    except OSError:
        return None
    return None
