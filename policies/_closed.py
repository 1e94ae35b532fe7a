"""Reading a closed answer set (classification labels, choice letters) out of free text.

When in doubt the reader says None: an unparsable call is a vote for nothing, which can only make
escalation likelier, while a misread one can make a wrong answer look agreed. The steps, in order:

1. A first line that is a label and nothing else: ``**Positive**``, ``(B)``, ``card-arrival``.
2. Labels right after answer markers (``Answer:``, ``The sentiment is``, ``classified as``,
   ``I'd go with``): one label is the answer; markers naming different labels make it None.
3. A last line that is a label and nothing else (reasoning, then the bare label).
4. A label opening the text, closed by punctuation or the end of its line (``Negative. The
   acting…``, ``B) Paris``), unless it is offered as one of several (``positive or negative``).
5. Every other mention: exactly one label is the answer; none, several different ones, or a
   refusal or hedge (``I'm sorry``, ``whether``, ``hard to say``) make it None. A mention right
   after a negation (``not``, ``n't``, ``never``, ``neither``/``nor``, ``non-``; one word may sit
   between, as in "not very positive") does not count, so "It is not positive, it's negative"
   reads as negative.

Labels match as whole words, case-insensitively, with any run of spaces, underscores, hyphens or
punctuation between their words ("card arrival", "card_arrival" and "Card-Arrival" are one label).
Where labels overlap the longest wins ("not neutral" over "neutral", "wrong exchange rate" over
"exchange rate"). Inflected forms do not count ("positively" is not "positive"): a model asked for
a label answers with it, and an adverb is more often a hedge ("positively surprised, but…").

Single-letter choices are words of English too. In running text a letter counts only as a capital,
not glued to an apostrophe ("I'd") and not as "A"/"I" opening a phrase ("A good answer is C");
lowercase letters count when they stand alone on the first line, follow an answer marker or
"option", or sit in brackets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

_WORD = re.compile(r"[^\W_]+")
# Whole words: no letter or digit around, and no apostrophe joining a word ("I'd", "B's").
_LEFT = r"(?<![^\W_])(?<![^\W_]['’])"
_RIGHT = r"(?![^\W_])(?!['’][^\W_])"

_NOUN = (
    r"(?:(?:final|correct|predicted|best)\s+)?"
    r"(?:answer|label|sentiment|category|classification|class|intent|prediction|output|result"
    r"|verdict|choice|option|emotion|stance|tone|topic)"
)
_MARKER = (
    rf"(?:\b{_NOUN}[*_\"'`]*\s*(?:is|would\s+be|should\s+be|will\s+be|:|=|->|=>|-|–)"
    r"|\bclassif(?:y|ied)(?:\s+(?:this|it|the\s+\w+))?\s+as"
    r"|\bi(?:\s+would|\s+will|['’]d|['’]ll)?\s+(?:say|choose|pick|select|go\s+with)"
    r"|\bgo(?:ing)?\s+with)"
)
# Possessive (*+): a long run of spaces or asterisks after a marker must not backtrack.
_GAP = (
    r"[\s*_\"'`“”‘’(\[{:=]*+"
    r"(?:(?:most\s+likely|likely|probably|clearly|definitely|mostly|overall|predominantly"
    r"|generally)[\s,:]++)?"
    r"[\s*_\"'`“”‘’(\[{]*+"
)
_NEGATED = re.compile(
    r"(?:\b(?:not|never|neither|nor|no|hardly)|n['’]t)\s+(?:[\w'’]+\s+)?$|\bnon-?$", re.I
)
_DOUBT = re.compile(
    r"\b(?:sorry|apologi[sz]e|as\s+an\s+ai|whether|unclear|not\s+sure|unsure"
    r"|i\s+(?:cannot|can['’]?t|am\s+unable|am\s+not\s+able|won['’]t|don['’]t\s+know)"
    r"|i['’]m\s+(?:unable|not\s+able)"
    r"|(?:hard|difficult|impossible)\s+to\s+(?:say|tell|determine)"
    r"|not\s+enough\s+(?:information|context)|cannot\s+be\s+determined)\b",
    re.I,
)
_CLOSED_BY = re.compile(r"[ \t]*(?:$|\n|[.,;:!)\]}>*_\"'`“”’—–-])")
_CONNECTOR = re.compile(
    r"[\s*_\"'`]*(?:/|\||,|\bor\b|\band\b|\bvs\b\.?|\bversus\b)[\s*_\"'`(]*", re.I
)
_PUNCTUATION_ONLY = re.compile(r"[\W_]*")
# "A is correct", "A or B": a capital letter followed by these is a choice, not an article.
_NOT_ARTICLE = re.compile(
    r"\s+(?:is|was|seems|looks|would|should|must|appears|fits|matches|because|since"
    r"|or|and|nor|vs|versus)\b"
)
_WORD_AFTER = re.compile(r"\s+[^\W\d_]")
_OPTION_BEFORE = re.compile(r"\b(?:option|choice|letter)\s+$", re.I)


@dataclass(frozen=True, slots=True)
class LabelSet:
    """A route's closed answer set, compiled once per set of labels."""

    # The label's words, lowercased and space-joined → the label as configured.
    by_key: Mapping[str, str]
    mention: re.Pattern[str]
    marked: re.Pattern[str]

    def read(self, text: str) -> str | None:
        lines = [line for line in text.splitlines() if line.strip()]
        if not lines:
            return None
        if (label := self.by_key.get(key(lines[0]))) is not None:
            return label
        marked = {
            label
            for m in self.marked.finditer(text)
            if (label := self._label(text, m, explicit=True)) is not None
        }
        if marked:
            return marked.pop() if len(marked) == 1 else None
        if (label := self.by_key.get(key(lines[-1]))) is not None:
            return label
        mentions = list(self.mention.finditer(text))
        if not mentions:
            return None
        lead = mentions[0]
        opens = _PUNCTUATION_ONLY.fullmatch(text, 0, lead.start()) is not None
        if opens and _CLOSED_BY.match(text, lead.end()):
            offered = len(mentions) > 1 and _CONNECTOR.fullmatch(
                text, lead.end(), mentions[1].start()
            )
            if not offered:
                return self.by_key[key(lead.group("label"))]
        if _DOUBT.search(text):
            return None
        said = {
            label
            for m in mentions
            if not _NEGATED.search(text, max(0, m.start() - 48), m.start())
            and (label := self._label(text, m, explicit=False)) is not None
        }
        return said.pop() if len(said) == 1 else None

    def _label(self, text: str, m: re.Match[str], *, explicit: bool) -> str | None:
        start, end = m.span("label")
        if (
            end - start == 1
            and text[start].isalpha()
            and not _letter_counts(text, start, explicit=explicit)
        ):
            return None
        return self.by_key[key(m.group("label"))]


def key(text: str) -> str:
    """A label's identity: its words, lowercased, joined by single spaces."""
    return " ".join(_WORD.findall(text.lower()))


@lru_cache(maxsize=256)
def label_set(labels: tuple[str, ...]) -> LabelSet:
    by_key: dict[str, str] = {}
    for label in labels:
        by_key.setdefault(key(label), label)
    # Longest first, so that an alternation tries "not neutral" before "neutral".
    words = sorted((k.split(" ") for k in by_key if k), key=lambda w: (-len(w), -len("".join(w))))
    alternatives = "|".join(r"[\W_]+".join(re.escape(w) for w in ws) for ws in words) or r"(?!)"
    label = rf"{_LEFT}(?P<label>{alternatives}){_RIGHT}"
    return LabelSet(
        by_key=by_key,
        mention=re.compile(label, re.I),
        marked=re.compile(_MARKER + _GAP + label, re.I),
    )


def _letter_counts(text: str, at: int, *, explicit: bool) -> bool:
    letter = text[at]
    before, after = text[at - 1 : at], text[at + 1 : at + 2]
    if before in ("(", "[") and after in (")", "]"):
        return True
    if _OPTION_BEFORE.search(text, max(0, at - 16), at):
        return True
    if letter.isupper():
        article = letter in "AI" and _WORD_AFTER.match(text, at + 1) is not None
        return explicit or not article or _NOT_ARTICLE.match(text, at + 1) is not None
    return explicit and not (letter in "ai" and _WORD_AFTER.match(text, at + 1))
