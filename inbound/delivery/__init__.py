"""Deliver: POST each processed message to its stream's webhook, with retries, and record the outcome."""

import sys

# httpx 0.28 imports its command-line client on ``import httpx`` whenever click, rich and
# pygments are installed, as they are here (rich draws ``inbound status``): 4.4 MiB of the
# pipeline's memory for a command nobody runs in it. An entry of None makes that import fail,
# which httpx expects (it then defines a stub). Upstream makes the import lazy in a later version.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
