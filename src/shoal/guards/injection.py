"""Prompt-injection markers in text the model is about to read.

A tool result (a web page, a file, an e-mail) is data, but a model reads it like any other
prompt; text such as "ignore all previous instructions" or a forged chat-template token is an
attempt to make it take orders from that data. :class:`InjectionGuard` looks for such markers
and blocks the text; the agent loop then shows the model a notice that the content was withheld.

The text is normalised before matching so simple disguises do not help: invisible characters
(zero-width spaces and joiners, bidirectional controls, soft hyphens, variation selectors) are
removed, Unicode "tag" characters (an invisible copy of ASCII) are turned back into ASCII,
compatibility forms are folded (NFKC: fullwidth letters, ligatures), common Cyrillic and Greek
look-alike letters become Latin, case is folded and runs of whitespace become one space.

The markers are heuristics, chosen for few false alarms in ordinary data; they do not make a
model immune to injection. :data:`DEFAULT_INJECTION_MARKERS` lists them (regular expressions,
matched without regard to case against the normalised text).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from shoal.exceptions import UserError
from shoal.guards._checks import names, set_name, text_stages
from shoal.guards.base import Guard, GuardContext, TextStage, Verdict
from shoal.messages import ToolCall

__all__ = ["DEFAULT_INJECTION_MARKERS", "InjectionGuard", "normalize_for_matching"]

_EARLIER = r"(?:previous|prior|above|earlier|preceding|former|original|initial|old)"
_ORDERS = r"(?:instructions?|prompts?|directions?|directives?|rules|guidelines|commands?)"
_FILLER = r"(?:(?:all|any|of|the|your|my|these|those|every|each|and|system|developer)\s)*"

#: The built-in markers (regular expressions over the normalised, case-folded text).
DEFAULT_INJECTION_MARKERS: tuple[str, ...] = (
    # "ignore all previous instructions", "disregard your rules", "forget the prior prompt"
    rf"\b(?:ignore|disregard|forget|override|overrule|bypass)\s{_FILLER}{_EARLIER}\s(?:\w+\s)?"
    rf"{_ORDERS}",
    r"\b(?:ignore|disregard|forget|override|overrule|bypass)\s(?:all\s|any\s)?(?:of\s)?"
    rf"(?:your|my|all|the\ssystem|the\sdeveloper)\s(?:\w+\s)?{_ORDERS}",
    # "ignore the above and ...", "disregard everything above."
    r"\b(?:ignore|disregard|forget)\s(?:all\s|everything\s|anything\s)?(?:of\s)?"
    r"(?:the\s|what\s(?:is|was)\s|what's\s)?(?:above|previous|preceding|prior)"
    r"(?:\s(?:text|content|conversation))?(?:[.,;:!]|\sand\b|$)",
    r"\bforget\s(?:everything|all)\s(?:you\s(?:were|have\sbeen)\s(?:told|given)|above)",
    # role hijacking
    r"\byou\sare\snow\s(?:a|an|the|my|no\slonger|in\s\w+\smode|dan\b|unrestricted|jailbroken"
    r"|free\sof|not\sbound)",
    r"(?:^|[.!?:;,]\s?|\bplease\s|\bnow\s|\bjust\s|\byou\s(?:must|should|will)\s)"
    r"(?:act\sas\s(?:a|an|my|the|if\syou|though\syou|dan)|pretend\s(?:to\sbe|you\sare))\b",
    # smuggled orders and prompt extraction
    r"\b(?:new|updated|revised|real|actual|additional)\s(?:system\s)?instructions?\s?:",
    r"\bsystem\sprompt\b",
    r"\breveal\s(?:your|the)\s(?:system\s|hidden\s|initial\s)?(?:prompt|instructions)",
    r"\b(?:do\snot|don't|never)\s(?:tell|inform|alert|mention\s(?:this|it)\sto)\sthe\suser\b",
    # forged chat-template and tool-call tokens
    r"<\|\s?(?:im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id"
    r"|end_header_id|begin_of_text|end_of_text)\s?\|>",
    r"\[/?inst\]",
    r"<</?sys>>",
    r"</?(?:start_of_turn|end_of_turn)>",
    r"#{3,}\s?(?:system|instructions?)\b",
    r"</?tool_call>",
)

# Invisible characters: format controls (Cf), variation selectors, the combining grapheme
# joiner and the Hangul fillers. Tag characters (U+E0000 block) are handled apart.
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e007f\U000e0100-\U000e01ef]"
)
_TAGS = re.compile("[\U000e0020-\U000e007e]+")
# Cyrillic and Greek letters that look like Latin ones (applied after case folding)
_LOOKALIKES = str.maketrans("аеорсухіјѕԁɡνοτκαι", "aeopcyxijsdgvotkai")
_WHITESPACE = re.compile(r"\s+")


def _untag(match: re.Match[str]) -> str:
    return " " + "".join(chr(ord(char) - 0xE0000) for char in match.group(0)) + " "


def normalize_for_matching(text: str, *, invisible: str = "") -> str:
    """``text`` as the markers see it: tag characters decoded to ASCII, invisible characters
    replaced by ``invisible`` (removed by default), NFKC, case folded, look-alike letters as
    Latin, whitespace runs as one space."""
    text = _INVISIBLE.sub(invisible, _TAGS.sub(_untag, text))
    text = unicodedata.normalize("NFKC", text).casefold().translate(_LOOKALIKES)
    return _WHITESPACE.sub(" ", text)


class InjectionGuard(Guard):
    """Blocks text that carries a prompt-injection marker.

    ``markers`` replaces the built-in :data:`DEFAULT_INJECTION_MARKERS` (to extend them, pass
    ``[*DEFAULT_INJECTION_MARKERS, r"my marker"]``); each is a regular expression matched
    without regard to case against the normalised text, so write spaces as ``\\s`` or `` ``.
    ``stages`` picks the text stages checked: tool results by default; add ``"input"`` to
    screen the caller's message too (or ``"output"``).
    """

    def __init__(
        self,
        markers: Sequence[str] | None = None,
        *,
        stages: Sequence[TextStage] = ("tool_result",),
        name: str | None = None,
    ) -> None:
        owner = type(self).__name__
        patterns = (
            DEFAULT_INJECTION_MARKERS if markers is None else names(owner, "markers", markers)
        )
        if not patterns:
            raise UserError(f"{owner}: markers is empty; the guard would never block anything")
        compiled: list[re.Pattern[str]] = []
        for pattern in patterns:
            try:
                compiled.append(re.compile(pattern, re.IGNORECASE))
            except re.error as exc:
                raise UserError(
                    f"{owner}: marker {pattern!r} is not a regular expression: {exc}"
                ) from None
        self.markers: tuple[str, ...] = tuple(patterns)
        self._compiled = tuple(compiled)
        self.stages = text_stages(owner, stages)
        set_name(self, name)

    def find(self, text: str) -> str | None:
        """The first marker found in ``text`` (the matched, normalised words), or ``None``."""
        variants = [normalize_for_matching(text)]
        if _INVISIBLE.search(text):
            # an invisible character may stand between two words ("ignore\u200bprevious")
            variants.append(normalize_for_matching(text, invisible=" "))
        for normalised in variants:
            for pattern in self._compiled:
                match = pattern.search(normalised)
                if match:
                    found = match.group(0).strip(" .,!?:;") or match.group(0)
                    return found if len(found) <= 80 else found[:77] + "..."
        return None

    def check_input(self, text: str, ctx: GuardContext) -> Verdict | None:
        return self._check("input", text, "the input")

    def check_tool_result(self, call: ToolCall, content: str, ctx: GuardContext) -> Verdict | None:
        return self._check("tool_result", content, f"the result of {call.name!r}")

    def check_output(self, text: str, ctx: GuardContext) -> Verdict | None:
        return self._check("output", text, "the output")

    def _check(self, stage: TextStage, text: str, where: str) -> Verdict | None:
        if stage not in self.stages:
            return None
        found = self.find(text)
        if found is None:
            return None
        reason = f"possible prompt injection in {where}: matched {found!r}"
        return Verdict("block", reason, guard=self.name)
