"""Types every API model shares: the problem+json body."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


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
