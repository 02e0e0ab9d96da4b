"""``qw enqueue``: put one job on a queue, by task name or as a raw payload."""

from __future__ import annotations

import json
from typing import Any

import click

from qw.app import task_payload
from qw.cli._common import Seconds, echo_json, echo_text, json_option, open_client, store_options
from qw.cli.worker import app_from_options
from qw.errors import InvalidInput, InvalidPayload
from qw.model import Enqueued, JSONValue, NewJob

__all__ = ["enqueue", "parse_json"]


def parse_json(value: str | None, what: str) -> JSONValue:
    """``value`` decoded from JSON (None stays None); InvalidPayload if it is not JSON."""
    if value is None:
        return None
    try:
        return json.loads(value)  # type: ignore[no-any-return]
    except json.JSONDecodeError as exc:
        raise InvalidPayload(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        # The decoder recurses per nesting level; a deep document exhausts the stack.
        raise InvalidPayload(f"{what} is nested too deeply to decode") from None


@click.command()
@click.argument("task_name", metavar="[TASK]", required=False)
@store_options
@click.option(
    "--app", "app_spec", metavar="MOD:APP", help="Look TASK up in this app (queue and defaults)."
)
@click.option("--queue", "-q", metavar="QUEUE", help="Queue (required without --app).")
@click.option("--args", "args_json", metavar="JSON", help="Positional arguments, a JSON array.")
@click.option("--kwargs", "kwargs_json", metavar="JSON", help="Keyword arguments, a JSON object.")
@click.option(
    "--payload", "payload_json", metavar="JSON", help="A raw JSON payload instead of TASK."
)
@click.option("--delay", type=Seconds(), metavar="SECONDS", help="Due this much later.")
@click.option("--priority", type=int, help="Lower runs first (default 0, or the task's).")
@click.option("--max-attempts", type=click.IntRange(min=1), help="Attempts before the job fails.")
@click.option("--dedupe-key", metavar="KEY", help="Refuse a second live job with this key.")
@json_option
def enqueue(
    task_name: str | None,
    url: str | None,
    namespace: str | None,
    app_spec: str | None,
    queue: str | None,
    args_json: str | None,
    kwargs_json: str | None,
    payload_json: str | None,
    delay: float | None,
    priority: int | None,
    max_attempts: int | None,
    dedupe_key: str | None,
    as_json: bool,
) -> None:
    """Enqueue one job and print its id.

    \b
    qw enqueue --app myapp:app myapp.send_email --args '["a@example.com"]'
    qw enqueue --queue emails myapp.send_email --kwargs '{"to": "a@example.com"}'
    qw enqueue --queue raw --payload '{"anything": [1, 2]}'
    """
    args = parse_json(args_json, "--args")
    kwargs = parse_json(kwargs_json, "--kwargs")
    if args is not None and not isinstance(args, list):
        raise InvalidInput("--args must be a JSON array")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise InvalidInput("--kwargs must be a JSON object")
    options: dict[str, Any] = {
        "delay": delay,
        "priority": priority,
        "max_attempts": max_attempts,
        "dedupe_key": dedupe_key,
    }
    options = {k: v for k, v in options.items() if v is not None}
    if payload_json is not None:
        if task_name or app_spec or args is not None or kwargs is not None:
            raise InvalidInput("--payload replaces TASK, --app, --args and --kwargs; give one")
        if queue is None:
            raise InvalidInput("--payload needs --queue")
        with open_client(url, namespace) as client:
            answer = client.enqueue(
                [NewJob(queue, parse_json(payload_json, "--payload"), **options)]
            )[0]
    elif task_name is None:
        raise InvalidInput("give TASK (with --app or --queue), or --queue and --payload")
    elif app_spec is not None:
        app = app_from_options(app_spec, url, namespace)
        task = app.tasks.get(task_name)
        if task is None:
            known = ", ".join(sorted(app.tasks)) or "none"
            raise InvalidInput(f"{app_spec} has no task {task_name!r} (tasks: {known})")
        call = task.options(queue=queue, job_id=None, **options)
        try:
            answer = app.client.enqueue([call.job(*(args or []), **(kwargs or {}))])[0]
        finally:
            app.close()
    else:
        if queue is None:
            raise InvalidInput("TASK without --app needs --queue")
        new = NewJob(queue, task_payload(task_name, args or [], kwargs or {}), **options)
        with open_client(url, namespace) as client:
            answer = client.enqueue([new])[0]
    _report(answer, as_json)


def _report(answer: Enqueued, as_json: bool) -> None:
    if as_json:
        echo_json({"id": answer.id, "created": answer.created})
        return
    echo_text(answer.id)
    if not answer.created:
        click.echo("qw: a live job already holds that dedupe key; this is its id", err=True)
