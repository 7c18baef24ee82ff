"""The base of every settings section: a typed model that refuses unknown keys."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A settings section (``Settings.<name>``); an unknown key is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")
