"""A generated fake-news-style data set for offline runs: a title/text/label CSV and a small
GloVe-format file, both pure functions of (seed, rows, lengths), read back through the
normal loaders so --synthetic exercises the same code as real data.

How it stays learnable but not trivial: every document mixes common filler words with
"signal" words drawn from a class-dependent distribution over one shared word list. Each
signal word leans FAKE or REAL by a random amount, so the two distributions overlap; a
document's share of signal words varies, and LABEL_NOISE of the labels are flipped, which
caps the reachable accuracy near 1 - LABEL_NOISE. The GloVe vectors of signal words carry
their lean along one direction, so pretrained embeddings help, as real GloVe does.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import numpy as np

LABELS = ("FAKE", "REAL")
LABEL_NOISE = 0.06
GLOVE_DIM = 50
GLOVE_SHARE = 0.9  # of the lexicon in the GloVe file: coverage is realistic, not 100%
TRAIN_NAME = "train.csv"
GLOVE_NAME = "glove.synthetic.50d.txt"


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Real words give the samples a recognisable shape; the bulk of the lexicon is generated.
FILLER = _words(
    "the of and to a in that is was he for it with as his on be at by i this had not are "
    "but from or have an they which one you were her all she there would their we him been "
    "has when who will more no if out so said what up its about into than them can only "
    "other new some could time these two may then do first any my now such like our over "
    "man me even most made after also did many before must through back years where much "
    "your way well down should because each just those people how too little state good "
    "very make world still own see men work long get here between both life being under "
    "never day same another know while last might us great old year off come since against"
)
FAKE_LEANING = _words(
    "shocking secret exposed hoax miracle banned truth elite cover-up insider bombshell "
    "outrage globalist leaked wake destroyed scandal unbelievable censored exclusive "
    "conspiracy rigged deep hidden agenda"
)
REAL_LEANING = _words(
    "officials according report percent committee minister statement analysts quarter "
    "spokesperson agency data survey court legislation economists announced reuters "
    "federal budget estimate quoted study published"
)
_CONSONANTS = list("bdfgklmnprstvz")
_VOWELS = list("aeiou")


def lexicon(rng: np.random.Generator, size: int = 600) -> list[str]:
    """Distinct pronounceable pseudo-words (2-3 syllables)."""
    words: set[str] = set()
    while len(words) < size:
        syllables = rng.integers(2, 4)
        words.add("".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(syllables)))
    return sorted(words)


def write_synthetic(
    folder: Path,
    rows: int,
    seed: int,
    text_words: tuple[int, int] = (30, 120),
) -> tuple[Path, Path]:
    """Write TRAIN_NAME and GLOVE_NAME into folder; returns their paths."""
    rng = np.random.default_rng([seed, rows, 0x7E47])
    signal = [*FAKE_LEANING, *REAL_LEANING, *lexicon(rng)]
    lean = rng.normal(0.0, 1.0, len(signal))
    lean[: len(FAKE_LEANING)] = 2.0  # the named words lean clearly, the rest randomly
    lean[len(FAKE_LEANING) : len(FAKE_LEANING) + len(REAL_LEANING)] = -2.0
    class_probs = [_softmax(lean), _softmax(-lean)]  # FAKE, REAL
    filler_probs = 1.0 / np.arange(1, len(FILLER) + 1)  # Zipf-like filler frequencies
    filler_probs /= filler_probs.sum()

    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for _ in range(rows):
        label = int(rng.integers(0, 2))

        def words(n: int, label: int = label) -> list[str]:
            share = rng.uniform(0.1, 0.35)
            is_signal = rng.random(n) < share
            picks_signal = rng.choice(len(signal), n, p=class_probs[label])
            picks_filler = rng.choice(len(FILLER), n, p=filler_probs)
            return [
                signal[s] if flag else FILLER[f]
                for flag, s, f in zip(is_signal, picks_signal, picks_filler, strict=True)
            ]

        title = " ".join(words(int(rng.integers(5, 12)))).capitalize()
        text = _prose(words(int(rng.integers(text_words[0], text_words[1] + 1))), rng)
        shown = label if rng.random() >= LABEL_NOISE else 1 - label
        records.append((title, text, LABELS[shown]))
    train_path = folder / TRAIN_NAME
    _atomic_write(train_path, lambda handle: _write_csv(handle, records))
    glove_path = folder / GLOVE_NAME
    _atomic_write(glove_path, lambda handle: _write_glove(handle, signal, lean, rng))
    return train_path, glove_path


def _prose(words: list[str], rng: np.random.Generator) -> str:
    """Sentences with commas and the odd paragraph break, so the CSV needs real quoting."""
    out: list[str] = []
    sentence: list[str] = []
    for word in words:
        sentence.append(word)
        if len(sentence) >= 6 and rng.random() < 0.15:
            out.append(_sentence(sentence, rng))
            sentence = []
    if sentence:
        out.append(_sentence(sentence, rng))
    return "".join(s + ("\n\n" if rng.random() < 0.1 else " ") for s in out).strip()


def _sentence(words: list[str], rng: np.random.Generator) -> str:
    if len(words) > 4 and rng.random() < 0.5:
        cut = int(rng.integers(2, len(words) - 1))
        words = [*words[: cut - 1], words[cut - 1] + ",", *words[cut:]]
    return " ".join(words).capitalize() + "."


def _write_csv(handle: TextIO, records: list[tuple[str, str, str]]) -> None:
    writer = csv.writer(handle)
    writer.writerow(["title", "text", "label"])
    writer.writerows(records)


def _write_glove(
    handle: TextIO, signal: list[str], lean: np.ndarray, rng: np.random.Generator
) -> None:
    direction = rng.normal(0.0, 1.0, GLOVE_DIM)
    direction /= np.linalg.norm(direction)
    words = [*FILLER, *signal]
    leans = np.concatenate([np.zeros(len(FILLER)), lean])
    # Words the data never uses, as a real GloVe file mostly holds.
    extra = [f"{w}x" for w in lexicon(rng, 200)]
    words += extra
    leans = np.concatenate([leans, np.zeros(len(extra))])
    keep = rng.random(len(words)) < GLOVE_SHARE
    vectors = rng.normal(0.0, 0.3, (len(words), GLOVE_DIM)) + 0.3 * leans[:, None] * direction
    for word, vector, kept in zip(words, vectors, keep, strict=True):
        if kept:
            handle.write(word + " " + " ".join(f"{v:.4f}" for v in vector) + "\n")


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _atomic_write(path: Path, fill: Callable[[TextIO], None]) -> None:
    """A stop mid-write must not leave a half file that a resumed run would take as data."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            fill(handle)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
