from __future__ import annotations

import uuid

from app.domain.principal import CredentialKind, Principal
from app.domain.users import Role


def make(models: tuple[str, ...] | None, tools: tuple[str, ...] | None) -> Principal:
    return Principal(
        user_id=uuid.uuid4(),
        email="a@example.com",
        role=Role.USER,
        credential=CredentialKind.API_KEY,
        allowed_models=models,
        allowed_tools=tools,
    )


def test_none_means_everything() -> None:
    principal = make(None, None)
    assert principal.may_use_model("anything")
    assert principal.may_use_tool("calculator")


def test_empty_means_nothing() -> None:
    principal = make((), ())
    assert not principal.may_use_model("gpt-4o")
    assert not principal.may_use_tool("calculator")
    assert principal.visible_models(["a", "b"]) == []


def test_list_means_exactly_those() -> None:
    principal = make(("gpt-4o",), ("calculator",))
    assert principal.visible_models(["gpt-4o", "gpt-4o-mini"]) == ["gpt-4o"]
    assert principal.may_use_tool("calculator")
    assert not principal.may_use_tool("http_get")
