"""Acted corpora whose labels are coded in the file name: EmoDB, TESS, SAVEE, CREMA-D.

All four use the shared label vocabulary of :mod:`featcache.corpora.base`; the code
read from the file name is kept in ``emotion_code``.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

from featcache.corpora.base import FileNameCorpus, Unparsable, decode

__all__ = ["CremaD", "EmoDB", "Savee", "Tess"]


def _stem(rel_path: PurePosixPath) -> str:
    return rel_path.name.rsplit(".", 1)[0]


class EmoDB(FileNameCorpus):
    """Berlin Database of Emotional Speech (EmoDB), e.g. ``wav/03a01Fa.wav``.

    ``id`` is the stem (``"03a01Fa"``), ``speaker`` the two digits (``"03"``). Fields:

    - ``emotion_code`` (str): the German initial (W anger, L boredom, E disgust,
      A fear, F happiness, T sadness, N neutral);
    - ``text`` (str): the sentence code (``"a01"`` ... ``"b10"``);
    - ``version`` (str): the trailing version letter;
    - ``gender`` (str): ``"male"``/``"female"`` from the corpus documentation, missing for
      an unknown speaker number.
    """

    name = "emodb"
    description = "Berlin EmoDB: 10 German actors, 7 emotions"
    pattern = "SSTTTEV.wav or .flac, e.g. wav/03a01Fa.wav (speaker 03, text a01, emotion F)"
    EMOTIONS = {
        "W": "angry",
        "L": "bored",
        "E": "disgust",
        "A": "fearful",
        "F": "happy",
        "T": "sad",
        "N": "neutral",
    }
    GENDERS = {
        "03": "male", "08": "female", "09": "female", "10": "male", "11": "male",
        "12": "male", "13": "female", "14": "female", "15": "male", "16": "female",
    }  # fmt: skip
    classes = tuple(EMOTIONS.values())
    fields = ("emotion_code", "text", "version", "gender")
    _NAME = re.compile(r"^(\d\d)([ab]\d\d)([A-Z])([a-z])$")

    def parse(self, rel_path: PurePosixPath) -> dict[str, Any]:
        stem = _stem(rel_path)
        match = self._NAME.match(stem)
        if match is None:
            raise Unparsable(
                "name is not speaker (2 digits), text (a01-b10), emotion letter, version "
                "letter (e.g. 03a01Fa)"
            )
        speaker, text, code, version = match.groups()
        return {
            "id": stem,
            "speaker": speaker,
            "label": decode(code, self.EMOTIONS, "emotion"),
            "emotion_code": code,
            "text": text,
            "version": version,
            "gender": self.GENDERS.get(speaker),
        }


class Tess(FileNameCorpus):
    """Toronto Emotional Speech Set (TESS), e.g. ``OAF_angry/OAF_back_angry.wav``.

    Only the file name is parsed (the official folder names vary). ``id`` is the stem,
    ``speaker`` ``"OAF"`` (older) or ``"YAF"`` (younger). ``ps`` (pleasant surprise)
    becomes ``"surprised"``. Fields: ``emotion_code`` (angry, disgust, fear, happy,
    neutral, ps, sad), ``word`` (the carrier word), ``age`` (``"older"``/``"younger"``).
    """

    name = "tess"
    description = "Toronto Emotional Speech Set: 2 female speakers, 7 emotions"
    pattern = "SPK_word_emotion.wav or .flac with SPK OAF or YAF, e.g. OAF_back_angry.wav"
    EMOTIONS = {
        "angry": "angry",
        "disgust": "disgust",
        "fear": "fearful",
        "happy": "happy",
        "neutral": "neutral",
        "ps": "surprised",
        "sad": "sad",
    }
    classes = tuple(EMOTIONS.values())
    fields = ("emotion_code", "word", "age")
    _NAME = re.compile(r"^([A-Za-z]{3})_([^_]+)_([A-Za-z]+)$")

    def parse(self, rel_path: PurePosixPath) -> dict[str, Any]:
        stem = _stem(rel_path)
        match = self._NAME.match(stem)
        if match is None:
            raise Unparsable("name is not SPEAKER_word_emotion (e.g. OAF_back_angry)")
        speaker, word, code = match.group(1).upper(), match.group(2), match.group(3).lower()
        if speaker not in ("OAF", "YAF"):
            raise Unparsable(f"speaker {match.group(1)!r} is not OAF or YAF")
        return {
            "id": stem,
            "speaker": speaker,
            "label": decode(code, self.EMOTIONS, "emotion"),
            "emotion_code": code,
            "word": word,
            "age": "older" if speaker == "OAF" else "younger",
        }


class Savee(FileNameCorpus):
    """Surrey Audio-Visual Expressed Emotion (SAVEE), ``DC_a01.wav`` or ``AudioData/DC/a01.wav``.

    ``id`` is ``"<speaker>_<code><nn>"`` (``"DC_a01"``) in both layouts, ``speaker`` one of
    DC, JE, JK, KL (all male). Fields: ``emotion_code`` (a anger, d disgust, f fear,
    h happiness, n neutral, sa sadness, su surprise) and ``sentence`` (e.g. ``"a01"``;
    sentence numbers restart for every emotion).
    """

    name = "savee"
    description = "SAVEE: 4 male English speakers, 7 emotions"
    pattern = (
        "SPK_eNN.wav or .flac (e.g. DC_a01.wav) or AudioData/SPK/eNN.wav "
        "with SPK in DC, JE, JK, KL"
    )
    SPEAKERS = ("DC", "JE", "JK", "KL")
    EMOTIONS = {
        "a": "angry",
        "d": "disgust",
        "f": "fearful",
        "h": "happy",
        "n": "neutral",
        "sa": "sad",
        "su": "surprised",
    }
    classes = tuple(EMOTIONS.values())
    fields = ("emotion_code", "sentence")
    _FLAT = re.compile(r"^([A-Z]{2})_([a-z]{1,2})(\d\d)$")
    _NESTED = re.compile(r"^([a-z]{1,2})(\d\d)$")

    def parse(self, rel_path: PurePosixPath) -> dict[str, Any]:
        stem = _stem(rel_path)
        flat = self._FLAT.match(stem)
        nested = self._NESTED.match(stem)
        if flat is not None:
            speaker, code, number = flat.groups()
        elif nested is not None:
            speaker = rel_path.parent.name
            code, number = nested.groups()
            if speaker not in self.SPEAKERS:
                raise Unparsable(
                    f"file {rel_path.name} must be in a speaker folder "
                    f"({', '.join(self.SPEAKERS)})"
                )
        else:
            raise Unparsable("name is not SPK_eNN (e.g. DC_a01) nor eNN in a speaker folder")
        if speaker not in self.SPEAKERS:
            raise Unparsable(f"speaker {speaker!r} is not one of {', '.join(self.SPEAKERS)}")
        return {
            "id": f"{speaker}_{code}{number}",
            "speaker": speaker,
            "label": decode(code, self.EMOTIONS, "emotion"),
            "emotion_code": code,
            "sentence": f"{code}{number}",
        }


class CremaD(FileNameCorpus):
    """CREMA-D, e.g. ``AudioWAV/1001_DFA_ANG_XX.wav``.

    ``id`` is the stem, ``speaker`` the 4-digit actor id (``"1001"``). Fields:
    ``emotion_code`` (ANG, DIS, FEA, HAP, NEU, SAD), ``sentence`` (3-letter code),
    ``statement`` (its text), ``level`` (``"low"``, ``"medium"``, ``"high"`` or
    ``"unspecified"`` for LO, MD, HI, XX).
    """

    name = "cremad"
    description = "CREMA-D: 91 actors, 12 sentences, 6 emotions"
    pattern = "AAAA_SSS_EEE_LL.wav or .flac, e.g. 1001_DFA_ANG_XX.wav"
    EMOTIONS = {
        "ANG": "angry",
        "DIS": "disgust",
        "FEA": "fearful",
        "HAP": "happy",
        "NEU": "neutral",
        "SAD": "sad",
    }
    LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
    SENTENCES = {
        "IEO": "It's eleven o'clock",
        "TIE": "That is exactly what happened",
        "IOM": "I'm on my way to the meeting",
        "IWW": "I wonder what this is about",
        "TAI": "The airplane is almost full",
        "MTI": "Maybe tomorrow it will be cold",
        "IWL": "I would like a new alarm clock",
        "ITH": "I think I have a doctor's appointment",
        "DFA": "Don't forget a jacket",
        "ITS": "I think I've seen this before",
        "TSI": "The surface is slick",
        "WSI": "We'll stop in a couple of minutes",
    }
    classes = tuple(EMOTIONS.values())
    fields = ("emotion_code", "sentence", "statement", "level")
    _NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")

    def parse(self, rel_path: PurePosixPath) -> dict[str, Any]:
        stem = _stem(rel_path)
        match = self._NAME.match(stem)
        if match is None:
            raise Unparsable("name is not ACTOR_SENTENCE_EMOTION_LEVEL (e.g. 1001_DFA_ANG_XX)")
        speaker, sentence, code, level = match.groups()
        return {
            "id": stem,
            "speaker": speaker,
            "label": decode(code, self.EMOTIONS, "emotion"),
            "emotion_code": code,
            "sentence": sentence,
            "statement": decode(sentence, self.SENTENCES, "sentence"),
            "level": decode(level, self.LEVELS, "level"),
        }
