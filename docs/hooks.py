"""mkdocs hooks: the reference pages generated from the code, so they cannot drift from it.

A page holding ``<!-- generated: cli -->`` gets every command of the ``worldprobe`` app with its options (read from
the typer app itself); ``<!-- generated: study -->`` gets every key of a study file with its type, range, default and
example (read from the study's rule tables and settings dataclasses).
"""

from __future__ import annotations

import dataclasses
from typing import Any


def on_page_markdown(markdown: str, **_: Any) -> str:
    if "<!-- generated: cli -->" in markdown:
        markdown = markdown.replace("<!-- generated: cli -->", cli_reference())
    if "<!-- generated: study -->" in markdown:
        markdown = markdown.replace("<!-- generated: study -->", study_reference())
    return markdown


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def cli_reference() -> str:
    """Every command and sub-command of the app: its help and a table of its options."""
    import typer.main

    from worldprobe.cli import app

    root = typer.main.get_command(app)
    lines = ["## `worldprobe` (global options)", "", _options(root)]
    for name, command in sorted(root.commands.items()):
        subs = getattr(command, "commands", None)
        for sub_name, sub in sorted(subs.items()) if subs else [("", command)]:
            title = f"worldprobe {name} {sub_name}".strip()
            lines += [f"## `{title}`", "", _cell(sub.help or "").replace("\\|", "|"), "", _options(sub)]
    return "\n".join(lines)


def _options(command: Any) -> str:
    rows = ["| option | type | default | what it does |", "|---|---|---|---|"]
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        names = " / ".join(f"`{n}`" for n in [*param.opts, *getattr(param, "secondary_opts", [])])
        kind = "flag" if getattr(param, "is_flag", False) else _type_name(param)
        default = "" if param.default in (None, False) or callable(param.default) else f"`{param.default}`"
        required = " (required)" if param.required else ""
        rows.append(f"| {names}{required} | {kind} | {default} | {_cell(getattr(param, 'help', '') or '')} |")
    return "\n".join(rows) + "\n"


def _type_name(param: Any) -> str:
    """The value type of an option: typer's own parameters name it with ``bare_type()``, click's with ``.type``."""
    if hasattr(param, "bare_type"):
        return str(param.bare_type())
    return getattr(param.type, "name", str(param.type))


def study_reference() -> str:
    """Every section and key of a study file, from the rule tables the study parser checks it with."""
    from worldprobe.study import DATASET_RULES, HEAD_RULES, SECTIONS, DatasetEntry, Study

    tables = [("[study]", HEAD_RULES, Study), ("[[datasets]] (one per dataset)", DATASET_RULES, DatasetEntry)]
    tables += [(f"[{name}]", rules, settings) for name, (settings, rules) in SECTIONS.items()]
    lines = []
    for title, rules, settings in tables:
        defaults = {f.name: f.default for f in dataclasses.fields(settings)
                    if f.default is not dataclasses.MISSING}  # fmt: skip
        lines += [f"## `{title}`", "", "| key | type | allowed | default | example |", "|---|---|---|---|---|"]
        for key, rule in rules.items():
            kinds = rule.kind if isinstance(rule.kind, tuple) else (rule.kind,)
            kind = " or ".join(k.__name__ for k in kinds) + (" list" if rule.many else "")
            bounds = []
            if rule.minimum is not None:
                bounds.append(f">= {rule.minimum:g}")
            if rule.maximum is not None:
                bounds.append(f"<= {rule.maximum:g}")
            if rule.choices is not None:
                known = rule.choices() if callable(rule.choices) else rule.choices
                shown = list(known)[:12]
                bounds.append(", ".join(f"`{c}`" for c in shown) + (" ..." if len(list(known)) > 12 else ""))
            default = defaults.get(key, "")
            default = f"`{default}`" if default not in ("", None, ()) else ""
            lines.append(f"| `{key}` | {kind} | {_cell('; '.join(bounds))} | {_cell(default)} | "
                         f"{_cell(rule.example or '')} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)
