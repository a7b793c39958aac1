"""How many messages a text is sent as: GSM-7 or UCS-2 segments. An SMS costs one credit a
segment (``credits``), and the Test panel shows the count."""

from __future__ import annotations

import math
from dataclasses import dataclass

# GSM 03.38: a text of only these characters is sent 7 bits a character (160 to a message,
# 153 to each part of a longer one); the extension characters take two. Any other character
# makes the whole text UCS-2 (70, then 67 to a part), counted in UTF-16 units.
GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = set("^{}\\[~]|€\f")


@dataclass(frozen=True)
class SmsCount:
    characters: int
    segments: int
    encoding: str  # "GSM-7" or "UCS-2"


def sms_count(text: str) -> SmsCount:
    """How many characters a text has and how many messages it is sent as."""
    if all(c in GSM7 or c in GSM7_EXTENSION for c in text):
        units = sum(2 if c in GSM7_EXTENSION else 1 for c in text)
        single, part, encoding = 160, 153, "GSM-7"
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, part, encoding = 70, 67, "UCS-2"
    segments = 1 if units <= single else math.ceil(units / part)
    return SmsCount(len(text), segments, encoding)
