"""IEMOCAP (Busso et al. 2008), standard 4 classes: neu, hap (+ exc), ang, sad."""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from featcache.audio import not_regular_reason
from featcache.corpora.base import Corpus, CorpusScan, display_name, iter_audio_files
from featcache.errors import CorpusError

__all__ = ["Iemocap"]

# "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]"
_LINE = re.compile(
    r"^\[(?P<start>[\d.]+)\s*-\s*(?P<end>[\d.]+)\]\s+(?P<utt>Ses\S+)\s+(?P<emo>\S+)\s+"
    r"\[(?P<val>[\d.]+),\s*(?P<act>[\d.]+),\s*(?P<dom>[\d.]+)\]"
)
# Ses01F_impro01_F000, Ses01F_script01_1_M013, Ses05M_impro05a_F002 ...
_UTT = re.compile(r"^Ses(?P<session>\d\d)[FM]_(?P<rest>.+)_(?P<gender>[FM])\d{3}$")
_SESSION_DIR = re.compile(r"^Session([1-9])$")


class Iemocap(Corpus):
    """IEMOCAP, 4 classes: ``neu``, ``hap`` (``exc`` merged into it), ``ang``, ``sad``.

    Audio: ``SessionN/sentences/wav/<dialog>/<utterance>.wav``; labels: the summary
    lines of ``SessionN/dialog/EmoEvaluation/*.txt``. The ``SessionN`` folders may be in
    ``data_dir`` or one level below (e.g. ``data_dir/IEMOCAP_full_release/Session1``).
    Utterances of the other categories (fru, sur, fea, oth, dis, xxx...) are left out
    and counted in :attr:`CorpusScan.dropped`.

    ``id`` is the utterance name (``"Ses01F_impro01_M013"``); ``speaker`` is the session
    plus the gender of the utterance's speaker (``"Ses01M"``: each session has one female
    and one male actor). Fields:

    - ``session`` (int): 1 to 5;
    - ``dialog`` (str): e.g. ``"Ses01F_impro01"``;
    - ``mode`` (str): ``"improvised"`` or ``"scripted"``;
    - ``gender`` (str): ``"female"`` or ``"male"``;
    - ``emotion_raw`` (str): the EmoEvaluation category before merging (``"exc"``...);
    - ``valence``, ``activation``, ``dominance`` (float): the bracketed ratings;
    - ``start``, ``end`` (float): seconds within the dialog.

    A labelled utterance without audio, or a wav without a label, is recorded in
    :attr:`CorpusScan.problems`.
    """

    name = "iemocap"
    description = "IEMOCAP: 5 sessions, 10 actors, 4 classes (exc merged into hap)"
    pattern = (
        "Session1..Session5/sentences/wav/<dialog>/<utterance>.wav with labels in "
        "SessionN/dialog/EmoEvaluation/<dialog>.txt"
    )
    LABELS = {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}
    classes = ("neu", "hap", "ang", "sad")
    fields = (
        "session",
        "dialog",
        "mode",
        "gender",
        "emotion_raw",
        "valence",
        "activation",
        "dominance",
        "start",
        "end",
    )

    def scan(self, data_dir: str | os.PathLike[str]) -> CorpusScan:
        data_dir = Path(data_dir)
        self._check_folder(data_dir)
        sessions = self._session_dirs(data_dir)
        if not sessions:
            raise self._nothing_found(data_dir, [])
        rows: list[dict[str, Any]] = []
        problems: list[tuple[str, str]] = []
        dropped: Counter[str] = Counter()
        for number, session_dir in sessions:
            rel_session = session_dir.relative_to(data_dir).as_posix()
            wav_root = session_dir / "sentences" / "wav"
            wavs: dict[str, str] = {}
            if wav_root.is_dir():
                wav_problems: list[tuple[str, str]] = []
                for rel in iter_audio_files(wav_root, wav_problems):
                    utt = rel.name.rsplit(".", 1)[0]
                    path = f"{rel_session}/sentences/wav/{rel.as_posix()}"
                    if _UTT.match(utt) is None:
                        problems.append((path, "name is not an IEMOCAP utterance id"))
                    else:
                        wavs[utt] = path
                problems += [(f"{rel_session}/sentences/wav/{p}", r) for p, r in wav_problems]
            labelled: set[str] = set()
            label_dir = session_dir / "dialog" / "EmoEvaluation"
            for utt, label_fields in self._read_labels(label_dir, data_dir, problems):
                labelled.add(utt)
                raw = label_fields["emotion_raw"]
                if raw not in self.LABELS:
                    dropped[raw] += 1
                    continue
                match = _UTT.match(utt)
                path = wavs.get(utt)
                if match is None:
                    problems.append((utt, "label line with an unparsable utterance id"))
                    continue
                if path is None:
                    dialog = utt.rsplit("_", 1)[0]
                    problems.append(
                        (
                            f"{rel_session}/sentences/wav/{dialog}/{utt}.wav",
                            "labelled in EmoEvaluation but the audio file is missing",
                        )
                    )
                    continue
                gender = match.group("gender")
                rows.append(
                    {
                        "id": utt,
                        "path": path,
                        "speaker": f"Ses{match.group('session')}{gender}",
                        "label": self.LABELS[raw],
                        "session": number,
                        "dialog": utt.rsplit("_", 1)[0],
                        "mode": "scripted" if "_script" in utt else "improvised",
                        "gender": "female" if gender == "F" else "male",
                        **label_fields,
                    }
                )
            for utt in sorted(set(wavs) - labelled):
                problems.append((wavs[utt], "no label line in EmoEvaluation"))
        return self._finish(data_dir, rows, problems, dict(sorted(dropped.items())))

    @staticmethod
    def _session_dirs(data_dir: Path) -> list[tuple[int, Path]]:
        """``(number, folder)`` of the SessionN folders in ``data_dir`` or one level below.

        Raises
        ------
        CorpusError
            ``data_dir`` cannot be listed, or no SessionN folder is found and a folder
            one level below could not be listed (it may hold them).
        """
        unreadable: list[str] = []

        def folders(parent: Path) -> list[Path]:
            try:
                return sorted(p for p in parent.iterdir() if p.is_dir())
            except OSError as exc:
                if parent == data_dir:
                    raise CorpusError(
                        f"iemocap data folder {display_name(str(data_dir))} cannot be read "
                        f"({exc.strerror or exc})"
                    ) from exc
                unreadable.append(f"{display_name(parent.name)} ({exc.strerror or exc})")
                return []

        top = folders(data_dir)
        for parent in [data_dir, *top]:
            children = top if parent == data_dir else folders(parent)
            found = sorted(
                (int(m.group(1)), p) for p in children if (m := _SESSION_DIR.match(p.name))
            )
            if found:
                return found
        if unreadable:
            raise CorpusError(
                f"no iemocap Session1..Session5 folder found in {display_name(str(data_dir))}; "
                f"these folders cannot be read: {', '.join(unreadable)}"
            )
        return []

    @staticmethod
    def _read_labels(
        folder: Path, data_dir: Path, problems: list[tuple[str, str]]
    ) -> list[tuple[str, dict[str, Any]]]:
        """``(utterance, fields)`` from the summary lines of every ``*.txt`` in ``folder``.

        Only regular files are read; a label file that cannot be read (or a folder that
        cannot be listed) is appended to ``problems``.
        """
        out: list[tuple[str, dict[str, Any]]] = []
        if not folder.is_dir():
            return out
        rel_folder = display_name(folder.relative_to(data_dir).as_posix())
        try:
            txts = sorted(folder.glob("*.txt"))
        except OSError as exc:
            problems.append((rel_folder, f"label folder cannot be read ({exc.strerror or exc})"))
            return out
        for txt in txts:
            if txt.name.startswith("."):
                continue
            text, reason = _read_text(txt)
            if reason is not None:
                problems.append((f"{rel_folder}/{display_name(txt.name)}", f"label file {reason}"))
                continue
            for line in text.splitlines():
                match = _LINE.match(line)
                if match is None:
                    continue
                out.append(
                    (
                        match.group("utt"),
                        {
                            "emotion_raw": match.group("emo"),
                            "valence": float(match.group("val")),
                            "activation": float(match.group("act")),
                            "dominance": float(match.group("dom")),
                            "start": float(match.group("start")),
                            "end": float(match.group("end")),
                        },
                    )
                )
        return out


def _read_text(path: Path) -> tuple[str, str | None]:
    """``(text, None)``, or ``("", reason)`` when ``path`` is not a readable regular file."""
    try:
        reason = not_regular_reason(os.stat(path).st_mode)
        if reason is not None:
            return "", f"is {reason}"
        return path.read_text(encoding="utf-8", errors="replace"), None
    except OSError as exc:
        return "", f"cannot be read ({exc.strerror or exc})"
