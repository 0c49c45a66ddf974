"""A reference to a secret in the fabric's secret store (used by every connection option that
needs a secret: the password, an OAuth2 client secret, a DKIM key, a proxy password)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["SecretRef"]


class SecretRef(BaseModel):
    """A reference to a secret in the fabric's secret store: the name, never the value.

    YAML: ``password: {secret: smtp-reports-password}``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    # NAME#KEY: one key or field of a structured secret (a JSON secret in AWS, a Vault KV entry),
    # for stores that have them; the others refuse the `#`.
    secret: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-/]+(#[A-Za-z0-9_.\-]+)?$",
                        description="Name of the secret in the fabric's secret store (NAME#KEY: one key of a "
                                    "structured secret, in stores that have them: aws_secrets_manager, vault).")

    @model_validator(mode="before")
    @classmethod
    def _from_plain_value(cls, data: Any) -> Any:
        if isinstance(data, str):
            # A bare string would be the secret itself (a password, a key, a token): refuse it
            # without echoing it. The field's path comes before this text in every message.
            raise ValueError(
                "must be a secret reference such as {secret: NAME}, never the secret's value; "
                "store the value with `mailgem secrets set NAME`"
            )
        return data
