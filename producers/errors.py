"""The one error adapters raise: which field of the input broke which rule."""

from __future__ import annotations

import re

from pydantic import ValidationError

from schemas.errors import DomainError
from schemas.event import UsageEvent

_REQUIRED_HINT = {
    "event_id": "with source, the idempotency key; a provider response's id can supply it",
    "account_id": "the account that pays",
    "occurred_at": "RFC 3339 with offset; it selects the price",
    "model": "the model id, e.g. openai/gpt-4o-mini",
}
_VALUE_ERROR = re.compile(r"^(?:Value error, )?(?P<field>[a-z_]+) \(")


class AdapterError(DomainError, ValueError):
    """An input that cannot become a UsageEvent; `field` is a dotted path, `rule` what it broke.

    A ValueError too, so a pydantic validator may raise it.
    """

    code = "invalid_event"
    status = 422

    def __init__(
        self,
        field: str,
        rule: str,
        *,
        problems: list[tuple[str, str]] | None = None,
        codes: list[str] | None = None,
    ):
        self.problems = problems or [(field, rule)]
        # The machine name of each problem's rule (pydantic's error type, e.g.
        # control_character, less_than_equal); "usage_event" when the adapter's own.
        self.codes = codes or ["usage_event"] * len(self.problems)
        self.field, self.rule = self.problems[0]
        super().__init__("; ".join(f"{f}: {r}" for f, r in self.problems))

    @classmethod
    def from_validation(cls, exc: ValidationError, *, prefix: str = "") -> AdapterError:
        """Each pydantic error as (field path, message), e.g. ("units.images", "...>= 0")."""
        problems: list[tuple[str, str]] = []
        codes: list[str] = []
        for err in exc.errors(include_url=False):
            msg = str(err["msg"]).removeprefix("Value error, ")
            path = ".".join(str(p) for p in err["loc"])
            if not path:
                # A model-level rule (reasoning <= output) names its field in the message.
                m = _VALUE_ERROR.match(msg)
                field = m.group("field") if m else ""
                path = field if field in UsageEvent.model_fields else "event"
            if err["type"] == "missing":
                hint = _REQUIRED_HINT.get(path)
                msg = f"is required ({hint})" if hint else "is required"
            problems.append((prefix + path, msg))
            codes.append(str(err["type"]))
        return cls(problems[0][0], problems[0][1], problems=problems, codes=codes)
