"""Personal data redaction: e-mail addresses, phone numbers and payment card numbers.

:func:`redact_pii` replaces each found value with a numbered placeholder: ``[EMAIL_1]``,
``[PHONE_1]``, ``[CARD_1]``. Numbers count distinct values within one text, so the same address
twice becomes the same placeholder twice (e-mail addresses compare without regard to case,
phone and card numbers by their digits). Numbering starts after any placeholder of the same
kind already in the text, so redacting twice never merges two values.

What counts as each kind, and what deliberately does not:

- **e-mail**: ``local@domain.tld`` with the usual characters (letters, digits, ``._%+-``).
- **card**: 13 to 19 digits that pass the Luhn check, written together or in groups as cards
  are printed (every group but the last of 4 or 6 digits, separated by single spaces or
  dashes: ``4111 1111 1111 1111``, ``3782-822463-10005``). A number that fails the check (an
  order or tracking id) stays, and so does a longer unbroken run of digits. Groups are tried as
  written, so a card followed by other digits ("... 1111 12/26") is still found.
- **phone**: an international number (``+`` and 7 to 15 digits: ``+44 20 7946 0958``,
  ``+4915112345678``), an area code in parentheses (``(555) 123-4567``), the North American
  ``555-123-4567`` shape, or a national number with a trunk ``0`` written in groups
  (``020 7946 0958``, ``06 12 34 56 78``); 7 to 12 digits for the national forms. Separators
  are single spaces, dots or dashes. Dates (``2026-11-22``, ``22.11.2026``), times, IPv4
  addresses, prices, short numbers ("order 1042") and unbroken digit runs without ``+`` (they
  cannot be told apart from ids) are left alone. When other digit groups follow a number with
  only a space between, the longest start that is a phone number is replaced.

E-mail addresses are replaced first, then cards, then phones, so digits inside an address or a
card are never taken for a phone number. Every pattern is anchored at the start of a run of
characters, so a hostile megabyte of digits or letters is scanned in linear time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from shoal.exceptions import UserError
from shoal.guards._checks import plural, set_name, text_stages
from shoal.guards.base import Guard, GuardContext, TextStage, Verdict
from shoal.messages import ToolCall

__all__ = ["PIIRedactionGuard", "luhn_valid", "redact_pii"]

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*+@"
    r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])"
)
# a run of digit groups joined by single spaces or dashes (a leading "+" marks a phone),
# starting where no run continues
_CARD_RUN = re.compile(r"(?<![\w+])(?<!\d[ .,-])\+?\d++(?:[ -]\d++)*+(?!\w)")
# phone numbers, by shape; each alternative is possessive, so a failed match never
# backtracks through the ways of splitting a long digit run
_PHONE = re.compile(
    r"(?<![\w+])(?<!\d[.,-])(?:"
    # +country code, optional (area code), up to six groups: +44 20 7946 0958, +4915112345678
    r"\+\d{1,4}(?:[ .-]?\(\d{1,5}\))?(?:[ .-]?\d{1,6}+){1,6}+"
    # (area code) and groups: (555) 123-4567, (030) 1234567
    r"|\(\d{1,5}\)[ .-]?\d{2,8}+(?:[ .-]\d{2,8}+){0,3}+"
    # North American: 555-123-4567, 555.123.4567, 555 123 4567
    r"|\d{3}[ .-]\d{3}[ .-]\d{4}"
    # national with a trunk 0, in groups: 020 7946 0958, 030 1234567, 06 12 34 56 78
    r"|0\d{1,4}+(?:[ /.-]\d{2,8}+){1,4}+"
    r")(?![\w@]|[.,-]\d)"
)
_DATE = re.compile(r"\d{4}([-./ ])\d{1,2}\1\d{1,2}|\d{1,2}([-./ ])\d{1,2}\2\d{2,4}")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_GROUP_END = re.compile(r"[ ./-](?=[\d(])")
_CURRENCY_BEFORE = re.compile(r"[$€£¥₹]\s?$")

_KINDS = ("email", "phone", "card")
_LABELS = {"email": "EMAIL", "phone": "PHONE", "card": "CARD"}
_NOUNS = {"email": "email", "phone": "phone number", "card": "card number"}


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn checksum used by payment cards."""
    if not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


class _Placeholders:
    """Numbered placeholders for one text: the same value always gets the same one."""

    def __init__(self, text: str) -> None:
        self._seen: dict[tuple[str, str], str] = {}
        self._next: dict[str, int] = {}
        for kind, label in _LABELS.items():
            used = [int(n) for n in re.findall(rf"\[{label}_(\d{{1,9}})\]", text)]
            self._next[kind] = max(used, default=0) + 1
        self.counts: dict[str, int] = {}

    def get(self, kind: str, key: str) -> str:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        placeholder = self._seen.get((kind, key))
        if placeholder is None:
            placeholder = f"[{_LABELS[kind]}_{self._next[kind]}]"
            self._next[kind] += 1
            self._seen[(kind, key)] = placeholder
        return placeholder


def _digits(text: str) -> str:
    return "".join(char for char in text if char.isdigit())


def _redact_cards(run: str, names: _Placeholders) -> str:
    """Replace each stretch of whole groups shaped like a printed card (every group but the
    last of 4 or 6 digits: 4-4-4-4, 4-6-5, or one unbroken group) holding 13-19 digits that
    pass Luhn; from the left, the longest stretch first."""
    if len(run) < 13:
        return run
    parts = re.split(r"([ -])", run)  # groups at even indexes, separators at odd ones
    groups = parts[0::2]
    out: list[str] = []
    index = 0
    while index < len(groups):
        best = -1
        size = 0
        for end in range(index, len(groups)):
            size += len(groups[end])
            if size > 19:
                break
            if size >= 13 and luhn_valid("".join(groups[index : end + 1])):
                best = end
            if len(groups[end]) not in (4, 6):
                break  # only the last group of a card may have another length
        stop = index if best < 0 else best
        if best < 0:
            out.append(groups[index])
        else:
            out.append(names.get("card", "".join(groups[index : best + 1])))
        if stop < len(groups) - 1:
            out.append(parts[2 * stop + 1])
        index = stop + 1
    return "".join(out)


def _is_phone(candidate: str) -> bool:
    """The digit count and the exclusions the shapes in ``_PHONE`` cannot express."""
    digits = len(_digits(candidate))
    if candidate.startswith("+"):
        return 7 <= digits <= 15
    if _DATE.fullmatch(candidate) or _IPV4.fullmatch(candidate):
        return False
    return 7 <= digits <= 12


def _phone_length(candidate: str) -> int:
    """The length of the longest start of ``candidate``, ending after a whole group, that is a
    phone number (0: none). A number followed by other digits ("+1 555 123 4567 2024") gives
    more groups than a phone number has; the longest start that fits is taken."""
    if _is_phone(candidate):
        return len(candidate)
    for match in reversed(list(_GROUP_END.finditer(candidate))):
        if _is_phone(candidate[: match.start()]):
            return match.start()
    return 0


def redact_pii(
    text: str, *, emails: bool = True, phones: bool = True, cards: bool = True
) -> tuple[str, dict[str, int]]:
    """``text`` with e-mail addresses, phone numbers and Luhn-valid card numbers replaced by
    numbered placeholders, and how many values of each kind were replaced (``"email"``,
    ``"phone"``, ``"card"``; only kinds found appear)."""
    names = _Placeholders(text)
    if emails:
        text = _EMAIL.sub(lambda m: names.get("email", m.group(0).casefold()), text)
    if cards:
        text = _CARD_RUN.sub(lambda m: _redact_cards(m.group(0), names), text)
    if phones:

        def phone(match: re.Match[str]) -> str:
            candidate = match.group(0)
            before = match.string[max(match.start() - 2, 0) : match.start()]
            if _CURRENCY_BEFORE.search(before):
                return candidate
            end = _phone_length(candidate)
            if not end:
                return candidate
            key = ("+" if candidate.startswith("+") else "") + _digits(candidate[:end])
            return names.get("phone", key) + candidate[end:]

        text = _PHONE.sub(phone, text)
    return text, {kind: names.counts[kind] for kind in _KINDS if kind in names.counts}


def describe_counts(counts: dict[str, int]) -> str:
    """``"redacted 1 email, 2 card numbers"``."""
    found = [plural(counts[kind], _NOUNS[kind]) for kind in _KINDS if counts.get(kind)]
    return "redacted " + ", ".join(found)


class PIIRedactionGuard(Guard):
    """Replaces e-mail addresses, phone numbers and card numbers with placeholders (see
    :func:`redact_pii`) at the chosen text stages: the input, tool results and the output by
    default. Tool-call arguments are not touched: a call cannot be redacted, only blocked."""

    def __init__(
        self,
        *,
        emails: bool = True,
        phones: bool = True,
        cards: bool = True,
        stages: Sequence[TextStage] = ("input", "tool_result", "output"),
        name: str | None = None,
    ) -> None:
        owner = type(self).__name__
        for arg, value in (("emails", emails), ("phones", phones), ("cards", cards)):
            if not isinstance(value, bool):
                raise UserError(f"{owner}: {arg} must be True or False, got {value!r}")
        if not (emails or phones or cards):
            raise UserError(f"{owner}: emails, phones and cards are all off; nothing to redact")
        self.emails = emails
        self.phones = phones
        self.cards = cards
        self.stages = text_stages(owner, stages)
        set_name(self, name)

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        """:func:`redact_pii` with this guard's kinds."""
        return redact_pii(text, emails=self.emails, phones=self.phones, cards=self.cards)

    def check_input(self, text: str, ctx: GuardContext) -> Verdict | None:
        return self._check("input", text, lambda: "")

    def check_tool_result(self, call: ToolCall, content: str, ctx: GuardContext) -> Verdict | None:
        return self._check("tool_result", content, lambda: f" in the result of {call.name!r}")

    def check_output(self, text: str, ctx: GuardContext) -> Verdict | None:
        return self._check("output", text, lambda: "")

    def _check(self, stage: TextStage, text: str, where: Callable[[], str]) -> Verdict | None:
        if stage not in self.stages:
            return None
        redacted, counts = self.redact(text)
        if not counts:
            return None
        return Verdict("redact", describe_counts(counts) + where(), guard=self.name, text=redacted)
