"""`noor concepts add/list/remove`: the trained concepts (LoRA adapters of `noor train lora`) this machine serves."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from noor.cli.base import BadInput, app

concepts_app = typer.Typer(
    help="Trained concepts: adapters of `noor train lora` that a request names by key.", no_args_is_help=True
)
app.add_typer(concepts_app, name="concepts")


def _size(size_bytes: int) -> str:
    if size_bytes < 1024:
        return f"{size_bytes} B"
    size = size_bytes / 1024
    for unit in ("KB", "MB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


@concepts_app.command("add")
def concepts_add(
    key: Annotated[str, typer.Argument(help="the key a request names it by, e.g. red_square or dolly_zoom")],
    path: Annotated[Path, typer.Option(help="the adapter folder (noor train lora --out)")],
    model: Annotated[
        str | None, typer.Option(help="the installed model it acts on (default: the one it was trained on)")
    ] = None,
    description: Annotated[str, typer.Option(help="what it teaches, shown in the studio's picker")] = "",
) -> None:
    """Register an adapter as a concept, after checking it fits the model (its layers exist in the model)."""
    from noor.engine import concepts

    try:
        concept = concepts.add(key, path, model=model, description=description)
    except ValueError as err:
        raise BadInput(str(err)) from None
    words = "; ".join(f"{lang}: {' '.join(ws)}" for lang, ws in concept.words.items())
    said = f"{concept.key}: acts on {concept.model}, {_size(concept.size_bytes)}"
    print(said + (f", words {words}" if words else ""))


@concepts_app.command("list")
def concepts_list() -> None:
    """The registered concepts: key, the model each acts on, the words it teaches, size, adapter folder."""
    from noor.engine import concepts

    table = Table(title="concepts")
    for column in ("key", "model", "words", "size", "path", "description"):
        table.add_column(column)
    for c in concepts.installed().values():
        words = "; ".join(f"{lang}: {' '.join(ws)}" for lang, ws in c.words.items())
        table.add_row(c.key, c.model, words, _size(c.size_bytes), c.path, c.description)
    Console(width=200).print(table)


@concepts_app.command("remove")
def concepts_remove(key: Annotated[str, typer.Argument(help="a registered concept key")]) -> None:
    """Unregister a concept (its folder is left as it is); queued jobs that name it then fail, credits back."""
    from noor.engine import concepts

    try:
        gone = concepts.remove(key)
    except concepts.UnknownConcept as err:
        raise BadInput(f"KEY: {str(err).removeprefix('concepts: ')}") from None
    print(f"{gone.key}: removed (the adapter folder {gone.path} is kept)")
