"""Synthetic captions and an offline tokenizer (helper of :mod:`pytest_mmperf.data.synthetic`).

Captions read like short image descriptions ("A small red dog sitting on a wooden bench near
the old tree.") so their word and token counts behave like COCO / web alt text; the built-in
word list keeps them offline and deterministic.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

# --- word list (~400 common English words, biased to what captions of photographs contain) ---
_DETERMINERS = ("a", "the", "a", "the", "this", "another", "one", "its", "their", "a")
_ADJECTIVES = tuple(
    """red blue green yellow white black brown gray orange pink purple golden silver dark bright
    small large big tiny huge tall short long wide narrow old young new wooden metal plastic glass
    stone wet dry sunny cloudy snowy empty crowded busy quiet open closed round square colorful
    striped spotted shiny dusty clean dirty soft hard fresh ripe cozy modern ancient rusty broken
    little pretty beautiful happy smiling sleeping hungry curious fluffy furry narrow distant
    blurry bright-lit shaded sandy grassy rocky muddy frozen warm cold hot light heavy""".split()
)
_NOUNS = tuple(
    """man woman child boy girl person people player rider skier surfer chef tourist crowd family
    dog cat horse cow sheep bird duck goose elephant giraffe zebra bear bicycle motorcycle car truck
    bus train boat airplane kite umbrella bench chair table couch bed desk lamp window door wall
    fence gate road street sidewalk bridge building house tower church tree bush flower grass field
    hill mountain river lake beach ocean wave sky cloud sun snow rain forest park garden yard city
    town market shop restaurant kitchen bathroom bedroom room office station airport harbor pizza
    sandwich cake donut apple banana orange carrot broccoli bowl plate cup mug bottle glass vase
    clock sign light pole book laptop phone keyboard television remote bag suitcase backpack hat
    shirt jacket dress tie shoe ball frisbee racket skateboard surfboard snowboard toy teddy
    picture painting mirror shelf counter sink oven fridge stove basket box rope flag statue
    fountain path trail stairs roof tile floor carpet curtain pillow blanket""".split()
)
_VERBS = tuple(
    """sitting standing walking running riding holding eating drinking playing looking reading
    carrying jumping flying lying waiting smiling talking watching driving parked resting leaning
    hanging floating swimming climbing crossing pulling pushing throwing catching posing cooking
    cutting painting sleeping covered filled stacked placed displayed surrounded""".split()
)
_PREPOSITIONS = tuple(
    """on in near under behind beside across along above over by at with inside outside through
    around between against toward beneath""".split()
)
_LONG_PREPOSITIONS = ("next to", "in front of", "on top of", "close to", "out of")
_CONNECTORS = ("and", "while", "with", "near", "beside", "and")
_VERB_SET = frozenset(_VERBS)
WORD_COUNT = len(set(_ADJECTIVES + _NOUNS + _VERBS + _PREPOSITIONS + _CONNECTORS + _DETERMINERS))


def _pick(rng: np.random.Generator, words: Sequence[str]) -> str:
    # Indexing with rng.integers is cheaper than rng.choice (which builds an array per call).
    return words[int(rng.integers(len(words)))]


def _noun_phrase(rng: np.random.Generator, length: int | None = None) -> list[str]:
    """A singular noun phrase: [determiner] [adjectives] noun; `length` words (1-4) if given."""
    if length is None:
        length = (2, 2, 3, 3, 4)[int(rng.integers(5))]
    words = [_pick(rng, _DETERMINERS)] if length >= 2 else []
    words += [_pick(rng, _ADJECTIVES) for _ in range(length - 2)]
    words.append(_pick(rng, _NOUNS))
    if words[0] == "a" and len(words) > 1 and words[1][0] in "aeiou":
        words[0] = "an"
    return words


def _phrase(rng: np.random.Generator, clause_has_verb: bool) -> tuple[list[str], bool]:
    """The next phrase of a caption (always ending on a noun) and whether it starts a clause."""
    kind = int(rng.integers(0, 5))
    if kind <= 1 and not clause_has_verb:  # "sitting on a wooden bench"
        preposition = _pick(rng, _PREPOSITIONS + _LONG_PREPOSITIONS).split()
        return [_pick(rng, _VERBS), *preposition, *_noun_phrase(rng)], False
    if kind <= 3:  # "near the old tree"
        preposition = _pick(rng, _PREPOSITIONS + _LONG_PREPOSITIONS).split()
        return [*preposition, *_noun_phrase(rng)], False
    return [_pick(rng, _CONNECTORS), *_noun_phrase(rng)], True  # ", and a dog"


def caption_length(rng: np.random.Generator, min_words: int, max_words: int) -> int:
    """Words in one caption: min_words + Gamma(2) tail, clipped to max_words.

    Skewed to short captions like COCO (mean ~10 words) with a tail of long web alt texts: for
    5..30 the mean is about 11 words and fewer than 1 % reach the cap.
    """
    extra = rng.gamma(2.0, (max_words - min_words) / 8.0) if max_words > min_words else 0.0
    return min(max_words, min_words + int(extra))


def make_caption(rng: np.random.Generator, min_words: int, max_words: int) -> str:
    """One caption of exactly `caption_length` whitespace-separated words, ending in a period.

    Built phrase by phrase; when the next phrase would overshoot, the rest is filled with a
    prepositional phrase of exactly the missing length (or one more adjective), so the length
    distribution is exact and every caption ends on a noun.
    """
    n_words = caption_length(rng, min_words, max_words)
    words = _noun_phrase(rng, min(n_words, (2, 2, 3, 3, 4)[int(rng.integers(5))]))
    has_verb = False
    while len(words) < n_words:
        missing = n_words - len(words)
        phrase, new_clause = _phrase(rng, has_verb)
        if len(phrase) > missing:
            if missing == 1:  # one more adjective before the last noun
                words.insert(len(words) - 1, _pick(rng, _ADJECTIVES))
                break
            # missing <= 5 here (phrases have <= 6 words): preposition + noun phrase of 1-4 words
            phrase, new_clause = [_pick(rng, _PREPOSITIONS), *_noun_phrase(rng, missing - 1)], False
        if new_clause:
            words[-1] += ","
        else:
            has_verb = has_verb or phrase[0] in _VERB_SET
        has_verb = has_verb and not new_clause
        words += phrase
    words[-1] += "."
    words[0] = words[0][:1].upper() + words[0][1:]
    return " ".join(words)


# --- tokenizer ---
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2


class SimpleTokenizer:
    """Offline, deterministic word-level tokenizer shaped like CLIP's.

    Text is lower-cased and split into words and single punctuation marks; each piece maps to
    ``3 + crc32(piece) % (vocab_size - 3)`` (stable across processes, unlike ``hash()``).
    Sequences are ``[BOS, ids..., EOS]`` (BOS=1, EOS=2, like CLIP's start/end of text), right-
    padded with 0 to `context_length`; longer ones are truncated and keep EOS as the last token.
    """

    def __init__(self, vocab_size: int = 49408, context_length: int = 77) -> None:
        for name, value, low in (
            ("vocab_size", vocab_size, 4),
            ("context_length", context_length, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"SimpleTokenizer {name} must be an int, got {value!r}")
            if value < low:
                raise ValueError(f"SimpleTokenizer {name} must be >= {low}, got {value}")
        self.vocab_size = vocab_size
        self.context_length = context_length
        self._cache: dict[str, int] = {}

    def __repr__(self) -> str:
        return (
            f"SimpleTokenizer(vocab_size={self.vocab_size}, context_length={self.context_length})"
        )

    def _piece_id(self, piece: str) -> int:
        token = self._cache.get(piece)
        if token is None:
            token = 3 + zlib.crc32(piece.encode("utf-8")) % (self.vocab_size - 3)
            self._cache[piece] = token
        return token

    def encode(self, text: str) -> list[int]:
        """Ids of one text: [BOS, pieces..., EOS], unpadded and untruncated."""
        return [BOS_ID, *(self._piece_id(p) for p in _TOKEN_RE.findall(text.lower())), EOS_ID]

    def __call__(self, captions: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenize B captions -> (input_ids, attention_mask), each (B, context_length) int64.

        attention_mask is 1 on BOS, word and EOS positions and 0 on padding.
        """
        if isinstance(captions, str):
            captions = [captions]
        length = self.context_length
        ids = torch.zeros((len(captions), length), dtype=torch.int64)
        mask = torch.zeros((len(captions), length), dtype=torch.int64)
        for row, text in enumerate(captions):
            if not isinstance(text, str):
                raise TypeError(f"SimpleTokenizer: caption {row} must be a str, got {text!r}")
            tokens = self.encode(text)
            if len(tokens) > length:  # truncate but keep the end-of-text token, like CLIP
                tokens = [*tokens[: length - 1], EOS_ID]
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.int64)
            mask[row, : len(tokens)] = 1
        return ids, mask


_PAD_HINT = (
    "call it with padding, e.g. functools.partial(tokenizer, padding='max_length', "
    "max_length=77, truncation=True, return_tensors='pt')"
)


def _as_int_tensor(value: Any, name: str, source: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        tensor = value
    elif isinstance(value, np.ndarray):
        tensor = torch.from_numpy(value)
    elif isinstance(value, (list, tuple)):
        lengths = {len(row) for row in value if isinstance(row, (list, tuple))}
        if len(lengths) > 1:
            raise ValueError(
                f"{source} returned ragged {name} (row lengths {sorted(lengths)}); {_PAD_HINT}"
            )
        try:
            tensor = torch.tensor(value)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{source} returned {name} that is not numeric: {err}") from err
    else:
        raise TypeError(
            f"{source} returned {name} of type {type(value).__name__}; "
            "accepted: torch.Tensor, numpy.ndarray or a list of equal-length lists"
        )
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex:
        raise TypeError(f"{source} returned {name} with dtype {tensor.dtype}; expected integers")
    return tensor.to(torch.int64)


def normalise_tokenizer_output(
    output: Any, batch_size: int, tokenizer: Callable[..., Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn what a user tokenizer returned into (input_ids, attention_mask), (B, L) int64 each.

    Accepted: a mapping (dict, Hugging Face ``BatchEncoding``) with ``input_ids`` and
    ``attention_mask``, or a tuple ``(input_ids, attention_mask)``.
    """
    source = f"tokenizer {tokenizer!r}"
    if isinstance(output, Mapping):
        missing = [key for key in ("input_ids", "attention_mask") if key not in output]
        if missing:
            raise ValueError(
                f"{source} returned a mapping without {missing} (keys: {sorted(output)}); "
                "expected 'input_ids' and 'attention_mask'"
            )
        raw_ids, raw_mask = output["input_ids"], output["attention_mask"]
    elif isinstance(output, tuple) and len(output) == 2:
        raw_ids, raw_mask = output
    else:
        raise TypeError(
            f"{source} returned {type(output).__name__}; expected a mapping with 'input_ids' and "
            "'attention_mask' (e.g. a Hugging Face BatchEncoding) or a tuple (input_ids, "
            "attention_mask). For a tokenizer that returns only ids (open_clip), wrap it: "
            "lambda captions: (tok(captions), tok(captions) != 0)"
        )
    ids = _as_int_tensor(raw_ids, "input_ids", source)
    mask = _as_int_tensor(raw_mask, "attention_mask", source)
    if ids.ndim != 2 or ids.shape[0] != batch_size:
        raise ValueError(
            f"{source} returned input_ids of shape {tuple(ids.shape)}; expected (B, L) with "
            f"B = {batch_size} captions"
        )
    if mask.shape != ids.shape:
        raise ValueError(
            f"{source} returned attention_mask of shape {tuple(mask.shape)}, but input_ids has "
            f"shape {tuple(ids.shape)}; they must match"
        )
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"{source} returned an attention_mask with values other than 0 and 1")
    return ids.contiguous(), mask.contiguous()
