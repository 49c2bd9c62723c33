"""Work: what the parse worker does with a job -- parse the message, build each stream's body.

Kept apart from ``job.py`` (the contract both sides of the pipe share) so that only the
processes that parse import the parser, the formats and their libraries: the worker, and
:class:`~inbound.processing.isolation.InProcessParser` in tests and benches. The pipeline
process that hands out the jobs does not (about 10 MB less in it).
"""

from __future__ import annotations

from .formats import Source, render
from .job import Outcome, ParseJob, Rendered
from .mimeshape import BeyondLimits, mime_shape
from .parse import parse_message


def run_job(job: ParseJob) -> Outcome:
    """Parse *job*'s message and build each requested body; any error becomes part of the outcome."""
    max_depth, max_parts = job.limits.max_mime_depth, job.limits.max_mime_parts
    refusal = mime_shape(job.raw, max_depth, max_parts).refusal(max_depth, max_parts)
    if refusal is not None:
        return Outcome.failed(refusal)
    try:
        parsed = parse_message(job.raw, job.limits)
    except BeyondLimits as exc:  # parts the walk recovered, which the scan could not see: refused alike
        return Outcome.failed(str(exc))
    except Exception as exc:  # noqa: BLE001 -- any parser failure is this message's, not the stage's
        _reraise_memory_error(exc)
        return Outcome.failed(f"cannot parse message: {exc}")
    bodies: dict[str, Rendered | str] = {}
    for request in job.renders:
        source = Source(parsed, job.envelope, request.stream, request.delivery_id, job.raw, request.decision)
        try:
            bodies[request.stream.name] = render(source)
        except Exception as exc:  # noqa: BLE001 -- as above: one bad message, recorded as Failed
            _reraise_memory_error(exc)
            bodies[request.stream.name] = f"cannot build payload: {exc}"
    return Outcome(
        sender=parsed.from_.email if parsed.from_ else None,
        subject=parsed.subject,
        attachments=len(parsed.attachments),
        bodies=bodies,
    )


def _reraise_memory_error(exc: BaseException) -> None:
    """Running out of memory is the worker's to report (with the limit), even when a parser wrapped it."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MemoryError):
            raise seen
        seen = seen.__cause__ or seen.__context__
