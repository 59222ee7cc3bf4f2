"""Handcrafted frame-level features: MFCC, log-mel, magnitude spectrogram, eGeMAPS LLDs.

Every extractor here is a small picklable callable ``(signal, sampling_rate) -> ndarray``
of shape ``(n_frames, dim)``, float32, implementing
:class:`featcache.extractors.base.Extractor`.

Frame convention (all four extractors, by default)
--------------------------------------------------
Frames are *centred*: frame ``i`` is centred on sample ``i * hop_length``, i.e. on time
``i / frame_rate`` seconds, and the signal is zero-padded at both ends so that edge
frames exist (librosa's ``center=True`` with ``pad_mode="constant"``). A signal of ``n``
samples gives exactly ``1 + n // hop_length`` frames (101 frames for 1 s at 16 kHz with a
10 ms hop). ``frame_rate`` is exactly ``1000 / hop_ms``; ``hop_ms`` must therefore be a
whole number of samples at the extractor's rate. The window length is rounded to the
nearest sample. ``params()`` records ``"center": True``.

eGeMAPS follows the same convention through zero-padding of the input (see
:class:`EGeMAPS`; ``align=False`` gives openSMILE's native framing instead).

Parameter limits
----------------
Parameters may come from untrusted files (a saved model's ``preprocessing.json``), so
values that would need absurd amounts of memory are refused with
:class:`~featcache.errors.ParameterError` before anything is allocated:
``sampling_rate <= 384000``, ``win_ms`` and ``hop_ms <= 1000``, ``n_fft <= 65536`` and at
most 64 hops (``n_fft <= 64 * hop_length``, which bounds the STFT to ~32 values per
input sample), ``n_mels <= 1024``.

Log floors
----------
Silence (all-zero input) gives finite output everywhere: the log of a power or magnitude
is taken as ``log(x + eps)`` (log-mel, log-spectrogram) or ``10 * log10(max(x, amin))``
(MFCC), never ``log(0)``.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from featcache.audio import check_signal
from featcache.errors import ParameterError
from featcache.extractors._limits import (
    MAX_FFT_PER_HOP,
    MAX_HOP_MS,
    MAX_N_FFT,
    MAX_N_MELS,
    MAX_SAMPLING_RATE,
    MAX_WIN_MS,
    hop_samples,
    is_number,
    library_versions,
    positive_float,
    positive_int,
)
from featcache.extractors.base import Extractor
from featcache.extractors.egemaps import EGEMAPS_COLUMNS, EGeMAPS

__all__ = [
    "MFCC",
    "LogMel",
    "Spectrogram",
    "EGeMAPS",
    "HANDCRAFTED",
    "get_handcrafted",
    "EGEMAPS_COLUMNS",
]


class _LibrosaExtractor(Extractor):
    """Shared STFT framing of the librosa-based extractors (centred frames, Hann window)."""

    window = "hann"
    pad_mode = "constant"

    def _init_framing(
        self, win_ms: float, hop_ms: float, sampling_rate: int, n_fft: int | None
    ) -> None:
        self.sampling_rate = positive_int("sampling_rate", sampling_rate, MAX_SAMPLING_RATE)
        self.win_ms = positive_float("win_ms", win_ms, MAX_WIN_MS)
        self.hop_ms = positive_float("hop_ms", hop_ms, MAX_HOP_MS)
        self.hop_length = hop_samples(self.hop_ms, self.sampling_rate)
        self.win_length = int(round(self.win_ms * self.sampling_rate / 1000.0))
        if self.win_length < 1:
            raise ParameterError("win_ms", "at least one sample long", win_ms)
        if n_fft is None:
            self.n_fft = 1 << (self.win_length - 1).bit_length()
        else:
            self.n_fft = positive_int("n_fft", n_fft)
            if self.n_fft < self.win_length:
                raise ParameterError(
                    "n_fft", f"None or at least the window length ({self.win_length} samples)", n_fft
                )
        most = min(MAX_N_FFT, MAX_FFT_PER_HOP * self.hop_length)
        if self.n_fft > most:
            raise ParameterError(
                "n_fft" if n_fft is not None else "win_ms (n_fft follows from it)",
                f"such that n_fft = {self.n_fft} is at most {most} (at most {MAX_N_FFT} and at "
                f"most {MAX_FFT_PER_HOP} hops of {self.hop_length} samples)",
                n_fft if n_fft is not None else win_ms,
            )
        self.n_fft_given = None if n_fft is None else int(n_fft)
        self.frame_rate = 1000.0 / self.hop_ms

    def _framing_params(self) -> dict[str, Any]:
        return {
            "sampling_rate": int(self.sampling_rate),
            "win_ms": float(self.win_ms),
            "hop_ms": float(self.hop_ms),
            "win_length": int(self.win_length),
            "hop_length": int(self.hop_length),
            "n_fft": int(self.n_fft),
            "window": self.window,
            "center": True,
            "pad_mode": self.pad_mode,
        }

    def versions(self) -> dict[str, str]:
        return library_versions("librosa", "numpy", "scipy")

    def min_samples(self) -> int:
        return 1

    def n_frames(self, n_samples: int) -> int:
        """Number of frames returned for a signal of ``n_samples`` samples."""
        pad = self.n_fft // 2
        return 1 + (int(n_samples) + 2 * pad - self.n_fft) // self.hop_length

    def _stft_magnitude(self, signal: np.ndarray, sampling_rate: int) -> np.ndarray:
        """|STFT| of shape (n_fft // 2 + 1, n_frames), float32, centred frames."""
        import librosa

        self._check_rate(sampling_rate)
        x = check_signal(signal)
        # Centre the frames by padding here (exactly librosa's center=True with
        # pad_mode="constant"), so short inputs raise no "n_fft too large" warning.
        pad = self.n_fft // 2
        x = np.pad(x, (pad, pad), mode="constant")
        spec = librosa.stft(
            x,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=False,
        )
        return np.abs(spec)

    def _mel_basis(self) -> np.ndarray:
        import librosa

        basis = getattr(self, "_mel", None)
        if basis is None:
            basis = librosa.filters.mel(
                sr=self.sampling_rate,
                n_fft=self.n_fft,
                n_mels=self.n_mels,
                fmin=self.fmin,
                fmax=self.fmax,
                htk=False,
                norm="slaney",
                dtype=np.float32,
            )
            self._mel = basis
        return basis

    def _init_mel(self, n_mels: int, fmin: float, fmax: float | None) -> None:
        self.n_mels = positive_int("n_mels", n_mels, MAX_N_MELS)
        if not is_number(fmin) or float(fmin) < 0:
            raise ParameterError("fmin", "a number >= 0 (Hz)", fmin)
        self.fmin = float(fmin)
        nyquist = self.sampling_rate / 2.0
        if fmax is None:
            self.fmax = nyquist
        else:
            if not is_number(fmax) or not (self.fmin < float(fmax) <= nyquist):
                raise ParameterError("fmax", f"None or a number in ({self.fmin:g}, {nyquist:g}] Hz", fmax)
            self.fmax = float(fmax)
        if self.fmin >= self.fmax:
            raise ParameterError("fmin", f"below fmax ({self.fmax:g} Hz)", fmin)
        self._mel = None

    def _mel_params(self) -> dict[str, Any]:
        return {
            "n_mels": int(self.n_mels),
            "fmin": float(self.fmin),
            "fmax": float(self.fmax),
            "mel_scale": "slaney",
            "mel_norm": "slaney",
            "power": 2.0,
        }

    def _mel_power(self, signal: np.ndarray, sampling_rate: int) -> np.ndarray:
        mag = self._stft_magnitude(signal, sampling_rate)
        return self._mel_basis() @ (mag * mag)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._init_args().items())
        return f"{type(self).__name__}({args})"

    def _init_args(self) -> dict[str, Any]:
        sig = inspect.signature(type(self).__init__)
        out = {}
        for key in list(sig.parameters)[1:]:
            value = getattr(self, key, None)
            if key == "n_fft":
                value = self.n_fft_given
            out[key] = value
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_mel"] = None  # cheap to rebuild; keeps pickles small
        return state


class MFCC(_LibrosaExtractor):
    """Mel-frequency cepstral coefficients (librosa), ``dim = n_mfcc``.

    Computed as librosa does: Hann-windowed STFT, power mel spectrogram (Slaney mel
    scale and filter normalisation), ``librosa.power_to_db(S, ref=1.0, amin=1e-10,
    top_db=None)`` and an orthonormal DCT-II, no liftering. ``top_db`` is ``None`` on
    purpose (librosa's ``mfcc(y=...)`` default of 80 would clip each file relative to its
    own loudest frame); silence therefore gives the finite floor of -100 dB.

    Frames are centred (frame ``i`` centred at ``i * hop_ms`` ms; ``1 + n // hop_length``
    frames for ``n`` samples); ``n_fft`` defaults to the next power of two at least the
    window length (512 for 25 ms at 16 kHz).
    """

    name = "mfcc"

    init_params = ("n_mfcc", "n_mels", "win_ms", "hop_ms", "sampling_rate", "fmin", "fmax", "n_fft")

    def __init__(
        self,
        n_mfcc: int = 40,
        n_mels: int = 128,
        win_ms: float = 25.0,
        hop_ms: float = 10.0,
        sampling_rate: int = 16000,
        fmin: float = 0,
        fmax: float | None = None,
        n_fft: int | None = None,
    ) -> None:
        self._init_framing(win_ms, hop_ms, sampling_rate, n_fft)
        self._init_mel(n_mels, fmin, fmax)
        self.n_mfcc = positive_int("n_mfcc", n_mfcc)
        if self.n_mfcc > self.n_mels:
            raise ParameterError("n_mfcc", f"at most n_mels ({self.n_mels})", n_mfcc)
        self.store_name = self.name
        self.n_layers = 1
        self.dim = self.n_mfcc
        self.dtype = np.dtype("float32")
        self.amin = 1e-10

    def params(self) -> dict[str, Any]:
        return {
            "n_mfcc": int(self.n_mfcc),
            **self._framing_params(),
            **self._mel_params(),
            "log": "power_to_db",
            "ref": 1.0,
            "amin": self.amin,
            "top_db": None,
            "dct_type": 2,
            "dct_norm": "ortho",
            "lifter": 0,
        }

    def __call__(self, signal: np.ndarray, sampling_rate: int) -> np.ndarray:
        import librosa

        mel = self._mel_power(signal, sampling_rate)
        db = librosa.power_to_db(mel, ref=1.0, amin=self.amin, top_db=None)
        mfcc = librosa.feature.mfcc(S=db, n_mfcc=self.n_mfcc, dct_type=2, norm="ortho", lifter=0)
        return np.ascontiguousarray(mfcc.T, dtype=np.float32)


class LogMel(_LibrosaExtractor):
    """Log mel power spectrogram, natural log: ``log(mel_power + eps)``, ``dim = n_mels``.

    The power mel spectrogram is librosa's (Hann-windowed STFT, Slaney mel scale and
    filter normalisation); ``eps`` (default ``1e-6``, recorded in ``params()``) is the
    floor that keeps silence finite (``log(1e-6) = -13.8``).

    Frames are centred (frame ``i`` centred at ``i * hop_ms`` ms; ``1 + n // hop_length``
    frames for ``n`` samples); ``n_fft`` defaults to the next power of two at least the
    window length (512 for 25 ms at 16 kHz).
    """

    name = "logmel"

    init_params = ("n_mels", "win_ms", "hop_ms", "sampling_rate", "fmin", "fmax", "n_fft", "eps")

    def __init__(
        self,
        n_mels: int = 80,
        win_ms: float = 25.0,
        hop_ms: float = 10.0,
        sampling_rate: int = 16000,
        fmin: float = 0,
        fmax: float | None = None,
        n_fft: int | None = None,
        eps: float = 1e-6,
    ) -> None:
        self._init_framing(win_ms, hop_ms, sampling_rate, n_fft)
        self._init_mel(n_mels, fmin, fmax)
        self.eps = positive_float("eps", eps)
        self.store_name = self.name
        self.n_layers = 1
        self.dim = self.n_mels
        self.dtype = np.dtype("float32")

    def params(self) -> dict[str, Any]:
        return {
            **self._framing_params(),
            **self._mel_params(),
            "log": "natural",
            "eps": float(self.eps),
        }

    def __call__(self, signal: np.ndarray, sampling_rate: int) -> np.ndarray:
        mel = self._mel_power(signal, sampling_rate)
        out = np.log(mel + np.float32(self.eps))
        return np.ascontiguousarray(out.T, dtype=np.float32)


class Spectrogram(_LibrosaExtractor):
    """Magnitude spectrogram ``|STFT|`` with a Hann window, ``dim = n_fft // 2 + 1``.

    As in Pepino et al. (Interspeech 2021): "magnitude spectrograms with a hanning window
    of 25 ms and a hop size of 10 ms"; their code (``librosa.stft``, frame 400, nfft 512
    at 16 kHz) zero-pads each 25 ms window to ``n_fft = 512``, which is also the default
    here (``n_fft=None``: next power of two at least the window length; 257 bins at
    16 kHz). Pass ``n_fft`` explicitly (e.g. 400) for exactly the window length.

    ``log=False`` (default, the paper's features) returns the linear magnitude;
    ``log=True`` returns ``log(magnitude + eps)`` (natural log, ``eps`` recorded in
    ``params()`` only then).

    Frames are centred (frame ``i`` centred at ``i * hop_ms`` ms; ``1 + n // hop_length``
    frames for ``n`` samples).
    """

    name = "spectrogram"

    init_params = ("win_ms", "hop_ms", "n_fft", "sampling_rate", "log", "eps")

    def __init__(
        self,
        win_ms: float = 25.0,
        hop_ms: float = 10.0,
        n_fft: int | None = None,
        sampling_rate: int = 16000,
        log: bool = False,
        eps: float = 1e-6,
    ) -> None:
        self._init_framing(win_ms, hop_ms, sampling_rate, n_fft)
        if not isinstance(log, (bool, np.bool_)):
            raise ParameterError("log", "True or False", log)
        self.log = bool(log)
        self.eps = positive_float("eps", eps)
        self.store_name = self.name
        self.n_layers = 1
        self.dim = self.n_fft // 2 + 1
        self.dtype = np.dtype("float32")
        self._mel = None

    def params(self) -> dict[str, Any]:
        out = {**self._framing_params(), "magnitude_power": 1.0, "log": self.log}
        if self.log:
            out["log_base"] = "natural"
            out["eps"] = float(self.eps)
        return out

    def __call__(self, signal: np.ndarray, sampling_rate: int) -> np.ndarray:
        mag = self._stft_magnitude(signal, sampling_rate)
        if self.log:
            mag = np.log(mag + np.float32(self.eps))
        return np.ascontiguousarray(mag.T, dtype=np.float32)


HANDCRAFTED: dict[str, type[Extractor]] = {
    "mfcc": MFCC,
    "logmel": LogMel,
    "spectrogram": Spectrogram,
    "egemaps": EGeMAPS,
}


def get_handcrafted(name: str, **params: Any) -> Extractor:
    """Build a handcrafted extractor by name (``mfcc``, ``logmel``, ``spectrogram``, ``egemaps``).

    ``params`` are passed to the constructor; unknown names or parameters raise
    :class:`~featcache.errors.ParameterError`.
    """
    key = str(name).strip().lower()
    if key not in HANDCRAFTED:
        raise ParameterError("name", f"one of {', '.join(HANDCRAFTED)}", name)
    cls = HANDCRAFTED[key]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ParameterError(f"{key} parameters", f"among {', '.join(allowed)}", ", ".join(unknown))
    return cls(**params)
