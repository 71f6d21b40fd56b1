"""Tools of the technical-support agent: troubleshooting articles, devices, tickets.

``search_help`` is a small keyword search over ``data/troubleshooting.json`` (no model, no
index): a word of the question that is one of an article's keywords counts 2, one in its title
1, and a product the question names (``camera``, ``thermostat``, a SKU) 2 for articles about
that product. The two best articles are returned. ``check_device`` compares a device's
firmware with the latest and its warranty with the shop's date, and attaches the guide for what
its record shows (an error code, offline, an update stuck, not paired, a low battery), so one
call is enough and the model only has to read the answer out; given a description of the
problem instead of a serial, it answers with the guides ``search_help`` finds.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

import lumo_data as data

from shoal.tools import tool

__all__ = ["check_device", "open_ticket", "search_help"]

Priority = Literal["low", "medium", "high"]

#: words people use for each product
_PRODUCT_WORDS = {
    "LH-100": ("hub",),
    "LB-20": ("bulb", "bulbs", "light", "lights", "lamp"),
    "LC-30": ("cam", "camera", "cameras"),
    "LT-40": ("thermostat", "heating"),
    "LP-10": ("plug", "plugs", "socket"),
    "LD-50": ("doorbell", "chime", "bell"),
    "LS-60": ("sensor", "sensors", "motion"),
}
#: error code -> the article about it
_ERROR_ARTICLES = {"E104": "KB-103", "E301": "KB-106"}
#: product -> the article for a device of it that is offline (default: Wi-Fi, KB-101)
_OFFLINE_ARTICLES = {"LC-30": "KB-102", "LP-10": "KB-109", "LB-20": "KB-104", "LS-60": "KB-104"}


def _guide_for(record: dict[str, Any]) -> str | None:
    """The article for what a device's record shows, most specific first."""
    if record.get("last_error") in _ERROR_ARTICLES:
        return _ERROR_ARTICLES[record["last_error"]]
    if record.get("update"):
        return "KB-105"
    if record["status"] == "not paired":
        return "KB-104"
    if record["status"] == "offline":
        return _OFFLINE_ARTICLES.get(record["sku"], "KB-101")
    battery = str(record.get("battery", "")).rstrip("%")
    if battery.isdigit() and int(battery) < 15:
        return "KB-110"
    return None


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9][a-z0-9.-]*", text.lower().replace("wi-fi", "wifi")))


def _score(article: dict[str, Any], words: set[str], text: str) -> int:
    score = 0
    for keyword in article["keywords"]:
        keyword = keyword.replace("wi-fi", "wifi")
        if (" " in keyword and keyword in text) or keyword in words:
            score += 2
    score += len(words & _words(article["title"]) - {"a", "the", "or", "is", "will", "not"})
    for sku in article["products"]:
        if sku.lower() in text or words & set(_PRODUCT_WORDS.get(sku, ())):
            score += 2
    return score


@tool
def search_help(query: str) -> dict[str, Any]:
    """Search the troubleshooting guides for a problem with a device or the app.

    Args:
        query: The problem in a few words.
    """
    text = query.lower().replace("wi-fi", "wifi")
    words = _words(text)
    if not words:
        return {"error": "describe the problem in a few words"}
    ranked = sorted(
        ((_score(a, words, text), a) for a in data.load("troubleshooting")),
        key=lambda pair: -pair[0],
    )
    found = [
        {"article": a["id"], "title": a["title"], "steps": a["steps"]}
        for score, a in ranked[:2]
        if score >= 2
    ]
    if not found:
        return {"error": "no guide matches; try other words, or open a ticket"}
    return {"articles": found}


@tool
def check_device(serial: str) -> dict[str, Any]:
    """Check a device by its serial number: status, firmware, warranty, guide.

    Args:
        serial: The serial number the customer gave.
    """
    found = data.device(serial)
    if found is None:
        answer: dict[str, Any] = {"error": f"no device {serial!r}; serials look like LC30-58211"}
        guides = search_help.function(serial) if re.search(r"[a-z]{3}", serial, re.I) else {}
        if "articles" in guides:  # forgiving: a problem described instead of a serial
            answer["guides"] = guides["articles"]
        return answer
    product = data.product(found["sku"]) or {}
    latest = product.get("latest_firmware")
    registered = dt.date.fromisoformat(found["registered_on"])
    years = int(product.get("warranty_years", 1))
    warranty_end = registered.replace(year=registered.year + years)
    answer = {
        **found,
        "product": product.get("name"),
        "latest_firmware": latest,
        "firmware_up_to_date": found["firmware"] == latest,
        "warranty": f"{'valid' if data.today() <= warranty_end else 'ended'} "
        f"(until {warranty_end})",
    }
    article = _guide_for(found)
    if article is not None:
        guide = next(a for a in data.load("troubleshooting") if a["id"] == article)
        answer["guide"] = {"article": article, "title": guide["title"], "steps": guide["steps"]}
    return data.without_empty(answer)


@tool
def open_ticket(issue: str, serial: str = "", priority: Priority = "medium") -> dict[str, Any]:
    """Open a ticket for a technician when the customer asks for a repair or a visit.

    Args:
        issue: The problem in one sentence.
        serial: The device's serial number, if known.
        priority: low, medium or high.
    """
    issue = issue.strip()
    if not issue:
        return {"error": "describe the problem in a sentence"}
    device = data.device(serial) if serial.strip() else None
    if serial.strip() and device is None:
        return {"error": f"no device {serial!r}; leave serial out if unknown"}
    body = {"issue": issue, "serial": device["serial"] if device else None, "priority": priority}
    number = data.record_request("ticket", body)
    return data.without_empty(
        {"ticket_id": f"T-{number:04d}", "status": "open", **body, "reply_within": "1 day"}
    )
