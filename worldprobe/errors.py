"""The one exception type for errors a user can cause (bad input, missing files, bad options)."""

from __future__ import annotations

from pathlib import Path


class WorldprobeError(Exception):
    """An error the user can fix. The CLI prints it as one line (plus an optional hint), no traceback.

    Give the file, the row and the field where they are known, e.g.
    ``WorldprobeError("latitude 123.0 is outside [-90, 90]", file=path, row=17, field="latitude")``.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        row: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.row = row
        self.field = field
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = []
        if self.file is not None:
            where.append(str(self.file))
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.field is not None:
            where.append(f"field '{self.field}'")
        text = f"{': '.join([', '.join(where), self.message]) if where else self.message}"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text
