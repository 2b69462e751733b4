"""`carecoord rules check|dry-run`: validate a rules file, and see what it would do with sample events."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from app.settings import get_settings

rules_cli = typer.Typer(help="Check a rules file, or dry-run it over sample events.", no_args_is_help=True)

_MSH_START = re.compile(r"(?m)^(?=MSH\|)")


def _load(path: Path) -> object:
    from app.rules.config import RulesFileError, load_rules

    try:
        return load_rules(path)
    except RulesFileError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


@rules_cli.command()
def check(path: Annotated[Path, typer.Argument(help="the rules file (TOML)")]) -> None:
    """Validate a rules file; exit 1 with the offending rule and key when it is invalid."""
    from app.rules.config import RulesFile

    rules = _load(path)
    assert isinstance(rules, RulesFile)
    enabled = [r.id for r in (*rules.rule, *rules.member_rule) if r.enabled]
    typer.echo(
        f"{path}: valid; {len(rules.rule)} rules and {len(rules.member_rule)} member rules, "
        f"enabled: {', '.join(enabled) or 'none'}"
    )


def split_event_file(text: str) -> list[tuple[str, bytes]]:
    """(source, payload) for each event: a JSON Bundle or list of Bundles (Da Vinci notifications),
    else HL7 v2 messages, each starting at a line beginning `MSH|`, segments split by CR or LF."""
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped.startswith(("{", "[")):
        data = json.loads(stripped)
        bundles = data if isinstance(data, list) else [data]
        return [("davinci", json.dumps(b).encode()) for b in bundles]
    messages = [m.strip() for m in _MSH_START.split(stripped.replace("\r\n", "\n").replace("\r", "\n"))]
    return [("hl7v2", m.replace("\n", "\r").encode()) for m in messages if m]


@rules_cli.command("dry-run")
def dry_run_command(
    events: Annotated[Path, typer.Argument(help="HL7 v2 ADT messages, or a JSON Da Vinci Bundle / list of Bundles")],
    rules: Annotated[Path | None, typer.Option(help="rules file (default CARECOORD_RULES_FILE)")] = None,
    unattributed: Annotated[bool, typer.Option(help="treat the patients as not on the roster")] = False,
    practice: Annotated[str | None, typer.Option(help="the attributed practice (the tasks' team)")] = None,
) -> None:
    """Show which tasks the events would raise, complete or cancel, in order. Writes nothing."""
    from app.consumers.davinci_decode import decode_davinci
    from app.consumers.hl7v2_decode import decode_hl7v2
    from app.encounters.notice import DecodeError
    from app.rules.dry_run import dry_run
    from app.runtime import Runtime

    settings = get_settings()
    if rules is not None:
        _load(rules)
        settings = settings.model_copy(update={"rules_file": rules})
    runtime = Runtime(settings, run_consumers=False)  # not started: only its decoders and rule engine
    options = runtime.decode_options()
    notices = []
    for i, (source, payload) in enumerate(split_event_file(events.read_text(encoding="utf-8")), start=1):
        try:
            notices.append(decode_hl7v2(payload, options) if source == "hl7v2" else decode_davinci(payload, options))
        except DecodeError as exc:
            typer.echo(f"event {i}: skipped, {exc.reason}", err=True)
    steps, tasks = dry_run(
        notices, runtime.rule_engine, runtime.sensitivity_policy(), attributed=not unattributed, practice=practice
    )
    console = Console()
    for step in steps:
        console.print(f"[bold]{step.message}[/bold]  encounter {step.encounter or '-'}")
        for task in step.created:
            console.print(f"  + {task.task_id} {task.type} -> {task.role} due {task.due_at.isoformat()} ({task.rule})")
        for task, reason in step.completed:
            console.print(f"  ✓ {task.task_id} {task.type} completed: {reason}")
        for task, reason in step.cancelled:
            console.print(f"  x {task.task_id} {task.type} cancelled: {reason}")
    table = Table("task", "type", "role", "team", "due", "status", "reason", title="tasks at the end")
    for task in tasks:
        table.add_row(
            task.task_id, task.type, task.role, task.team or "", task.due_at.isoformat(), task.status, task.reason or ""
        )
    console.print(table)
