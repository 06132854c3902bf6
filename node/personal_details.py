"""Spotting personal details in a draft before it is published: a phone number, an email
address, a street address or a date of birth. Pure functions, no I/O.

It only ever warns (the author may publish anyway), so it leans towards silence where a
health community writes numbers all day: blood sugar ("5.6", "7.8 mmol/L"), HbA1c
("48 mmol/mol"), doses ("12 units"), blood pressure ("120/80") and appointments without a year
("on 12 March", "12/03") must never trip it. So a phone number needs the shape of one (a
leading + or 0, or the US 3-3-4 grouping) and enough digits; a street address needs a
house number, a capitalised name and a street word; a date of birth needs both a full date
(with its year) and a word that says it is a birth date.
"""

from __future__ import annotations

import re
from enum import StrEnum


class Detail(StrEnum):
    PHONE = "a phone number"
    EMAIL = "an email address"
    ADDRESS = "a street address"
    BIRTH_DATE = "a date of birth"


# Digits that are not part of a longer number, a decimal or a fraction on either side.
_BEFORE = r"(?<![\w.,/+-])"
_AFTER = r"(?![\w/]|[.,]\d)"
# A gap between digit groups as people type them: one space, dot or hyphen.
_GAP = r"[ .-]?"

_PHONE_PATTERNS = (
    # International: +44 7700 900123, +44 (0)20 7946 0958, +1-202-555-0143, +447700900123.
    re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(0\))?(?:[ .-]?\(?\d{1,5}\)?){2,5}" + _AFTER),
    # UK national: 07700 900123, 020 7946 0958, (0161) 496 0000, 01632960001.
    re.compile(_BEFORE + r"\(?0\d{2,4}\)?" + _GAP + r"\d{3,4}" + _GAP + r"\d{3,4}" + _AFTER),
    # US national: (555) 123-4567, 555-123-4567, 555.123.4567, 555 123 4567.
    re.compile(r"(?<![\w.,/+-])(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}" + _AFTER),
)
_PHONE_DIGITS = range(10, 16)  # E.164 numbers have at most 15; UK and US ones 10 or 11

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[a-zA-Z]{2,}")

_STREET_WORDS = (
    "Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Close|Crescent|Way|Place|Court|Terrace|"
    "Gardens|Boulevard|Blvd|Square|Grove|Row|Mews|Parade|Walk"
)
# A house number (221, 221B, 12a), one to three capitalised words, a street word.
_ADDRESS = re.compile(
    _BEFORE
    + r"\d{1,5}[A-Za-z]?,? (?:[A-Z][\w'’-]*\.? ){1,3}(?:"
    + _STREET_WORDS
    + "|"
    + _STREET_WORDS.lower()
    + r")\b\.?"
)

_MONTHS = (
    "jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    "sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?"
)
_ORDINAL = r"(?:st|nd|rd|th)?"
_FULL_DATE = (
    r"(?:\d{1,2}[/.-]\d{1,2}[/.-](?:\d{4}|\d{2})"  # 03/05/1985, 3.5.85
    r"|\d{4}-\d{1,2}-\d{1,2}"  # 1985-05-03
    rf"|\d{{1,2}}{_ORDINAL} (?:of )?(?:{_MONTHS}),? \d{{4}}"  # 3 May 1985, 3rd of May 1985
    rf"|(?:{_MONTHS}) \d{{1,2}}{_ORDINAL},? \d{{4}})"  # May 3, 1985
)
_BIRTH_WORDS = r"born|d\.?o\.?b\.?|date of birth|birth ?date|birthday"
# The birth word, then the date within a few words on the same line.
_BIRTH_DATE = re.compile(
    rf"\b(?:{_BIRTH_WORDS})(?:\W|\b)[^\n.]{{0,25}}?(?<![\d/.-]){_FULL_DATE}(?![\d/])",
    re.IGNORECASE,
)


def _looks_like_phone(text: str) -> bool:
    for pattern in _PHONE_PATTERNS:
        for found in pattern.finditer(text):
            if sum(c.isdigit() for c in found.group()) in _PHONE_DIGITS:
                return True
    return False


def personal_details(*texts: str) -> list[Detail]:
    """The kinds of personal detail that `texts` seem to contain, in a fixed order."""
    text = "\n".join(texts)
    found = []
    if _looks_like_phone(text):
        found.append(Detail.PHONE)
    if _EMAIL.search(text):
        found.append(Detail.EMAIL)
    if _ADDRESS.search(text):
        found.append(Detail.ADDRESS)
    if _BIRTH_DATE.search(text):
        found.append(Detail.BIRTH_DATE)
    return found
