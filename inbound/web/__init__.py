"""The HTTP side of inbound: the API (``api.py``), its error format (``problems.py``) and the server (``server.py``)."""
