"""The ``inbound`` format: our own webhook JSON (``schemas/inbound-message.schema.json``).

The fields are mapped by ``processing/payload.py`` (``build_payload``); this
module serialises them and adds, when the stream asks for it
(``include_raw``), the message as received: ``raw: {size, content}`` with the
content in base64, so 8-bit and binary mail arrives byte for byte (with our
trace headers on top, as ``headers`` shows them: ``Source.delivered``).
"""

from __future__ import annotations

import base64

from ..job import Rendered
from ..payload import build_payload
from ._shared import Source, json_body

CONTENT_TYPE = "application/json"


def render(source: Source) -> Rendered:
    payload = build_payload(
        source.parsed,
        envelope=source.envelope,
        stream=source.stream.name,
        delivery_id=source.delivery_id,
        decision=source.decision,
    )
    if source.stream.include_raw:
        raw = source.delivered
        payload["raw"] = {"size": len(raw), "content": base64.b64encode(raw).decode("ascii")}
    return Rendered(CONTENT_TYPE, json_body(payload, source.size))
