"""A dataset's review settings: how many reviewers answer each item, and the reasons a reviewer can reject with.

They live in the dataset's settings under "review"; what a dataset does not set comes from the service's
settings (SPROUT_REVIEW_REJECT_REASONS).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.core.config import Settings

REASON_PATTERN = r"^[a-z0-9][a-z0-9_]{0,63}$"


def _valid_reasons(reasons: list[str] | None) -> list[str] | None:
    for reason in reasons or ():
        if not re.match(REASON_PATTERN, reason):
            raise ValueError(f"reason {reason!r}: use lower-case letters, digits and '_' (at most 64)")
    if reasons is not None and len(set(reasons)) != len(reasons):
        raise ValueError("reasons must be distinct")
    return reasons


OVERLAP = Field(
    default=1,
    ge=1,
    le=10,
    description="Reviewers who answer each item. With more than one, an item is decided when all agree, "
    "and goes to an admin when they do not.",
)


class ReviewSettingsIn(BaseModel):
    """What a dataset manager sets; a field left out takes its default."""

    model_config = ConfigDict(extra="forbid")

    overlap: int = OVERLAP
    reject_reasons: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=50,
        description="Reasons a reviewer picks from when rejecting (plus a free-text note); left out, the "
        "service's default reasons.",
    )

    _reasons = field_validator("reject_reasons")(_valid_reasons)


class ReviewSettings(BaseModel):
    """A dataset's review settings in effect."""

    model_config = ConfigDict(extra="forbid")

    overlap: int = OVERLAP
    reject_reasons: list[str] = Field(default_factory=list, max_length=50)

    _reasons = field_validator("reject_reasons")(_valid_reasons)


def review_settings_of(dataset_settings: dict[str, Any] | None, settings: Settings) -> ReviewSettings:
    """A dataset's review settings from its settings column, completed by the service's defaults."""
    stored = (dataset_settings or {}).get("review") or {}
    merged = {"reject_reasons": list(settings.review_reject_reasons), **stored}
    return ReviewSettings.model_validate(merged)
