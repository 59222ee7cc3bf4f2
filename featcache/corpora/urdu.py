"""URDU (Latif et al., FIT 2018): natural talk-show Urdu speech, file names ``SGX_FXX_EYY``."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

from featcache.corpora.base import FileNameCorpus, Unparsable, decode

__all__ = ["Urdu"]

EMOTIONS = {"A": "angry", "H": "happy", "N": "neutral", "S": "sad"}
#: the corpus's emotion folders -> the emotion letter their files carry
FOLDERS = {"angry": "A", "happy": "H", "neutral": "N", "sad": "S"}
GENDERS = {"M": "male", "F": "female"}

_NAME = re.compile(r"^S([MF])(\d{1,3})_F(\d{1,4})_([A-Z])(\d{1,4})$")


class Urdu(FileNameCorpus):
    """URDU: 400 utterances of talk-show Urdu, 4 emotions, e.g. ``Angry/SM1_F10_A010.wav``.

    ``id`` is the stem (``"SM1_F10_A010"``), ``speaker`` the speaker code (``"SM1"``: ``S``,
    gender letter, number; 29 codes in the distributed files, very unevenly used), ``label``
    the emotion (A angry, H happy, N neutral, S sad; the emotion folder, when the file is in
    one, must agree). Fields:

    - ``emotion_code`` (str): the letter found in the name;
    - ``gender`` (str): ``"male"`` or ``"female"``, from the speaker code;
    - ``file_number`` (int): the speaker's file number (``F10`` -> 10);
    - ``emotion_number`` (int): the running number within the emotion (``A010`` -> 10).

    The speech is spontaneous, so there is no sentence field: no two files share a text.
    """

    name = "urdu"
    description = "URDU: natural talk-show Urdu, 4 emotions, 29 speaker codes (Latif et al. 2018)"
    pattern = "EMOTION/SGX_FXX_EYY.wav or .flac, e.g. Angry/SM1_F10_A010.flac (male speaker 1, file 10, angry 10)"
    classes = tuple(EMOTIONS.values())
    fields = ("emotion_code", "gender", "file_number", "emotion_number")

    def parse(self, rel_path: PurePosixPath) -> dict[str, Any]:
        stem = rel_path.name.rsplit(".", 1)[0]
        match = _NAME.match(stem)
        if match is None:
            raise Unparsable("name is not S<M|F><speaker>_F<file>_<A|H|N|S><number> (e.g. SM1_F10_A010)")
        gender, number, file_number, code, emotion_number = match.groups()
        label = decode(code, EMOTIONS, "emotion")
        folder = FOLDERS.get(rel_path.parent.name.lower())
        if folder is not None and folder != code:
            raise Unparsable(f"emotion {code!r} of the name differs from its folder {rel_path.parent.name!r}")
        return {
            "id": stem,
            "speaker": f"S{gender}{int(number)}",
            "label": label,
            "emotion_code": code,
            "gender": GENDERS[gender],
            "file_number": int(file_number),
            "emotion_number": int(emotion_number),
        }
