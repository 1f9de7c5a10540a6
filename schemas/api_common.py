"""Types every API model shares: credit amounts on the wire and the problem+json body."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from schemas.money import MICROS_PER_CREDIT, MoneyError, to_micros

_AMOUNT_PATTERN = r"^-?[0-9]+(\.[0-9]{1,6})?$"


def _check_decimal(value: Any) -> Decimal:
    # Floats are refused outright: 0.1 as a binary float is not 0.1 credits.
    if isinstance(value, bool | float):
        raise ValueError(
            'amounts are decimal strings such as "12.5", never JSON numbers with a fraction'
        )
    if not isinstance(value, Decimal | int | str):
        raise ValueError('amounts are decimal strings such as "12.5"')
    try:
        micros = to_micros(value)
    except MoneyError as exc:
        raise ValueError(str(exc)) from None
    return Decimal(micros) / MICROS_PER_CREDIT


# A credit amount: a decimal string with at most 6 places ("12.5", "0.000001"); integers pass.
Credits = Annotated[
    Decimal,
    BeforeValidator(_check_decimal),
    WithJsonSchema({"type": "string", "pattern": _AMOUNT_PATTERN, "examples": ["10.000000"]}),
]
# A strictly positive credit amount.
PositiveCredits = Annotated[Credits, Field(gt=0)]


class ValidationIssue(BaseModel):
    """One field that broke one rule."""

    field: str = Field(examples=["body.amount"])
    rule: str = Field(examples=["greater_than"])
    message: str = Field(examples=["Input should be greater than 0"])


class ProblemOut(BaseModel):
    """An error (RFC 9457 problem+json); `code` is machine-readable, extra members may follow."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "https://meterline.dev/problems/insufficient_credit",
                    "title": "Payment Required",
                    "status": 402,
                    "detail": "account 'acme' has a balance of 1.000000; 2.000000 would "
                    "overdraw it. Add credit or deduct less.",
                    "code": "insufficient_credit",
                    "balance": "1.000000",
                }
            ]
        },
    )

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[ValidationIssue] | None = None
