"""UserCreate: the limits on a new user's name and password, and the password kept out of
reprs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.schemas import UserCreate, UserOut

pytestmark = pytest.mark.unit

PASSWORD = "correct horse battery"


def error_types(exc: ValidationError) -> set[tuple[str, str]]:
    return {(str(err["loc"][0]), err["type"]) for err in exc.errors()}


@pytest.mark.parametrize("name", ["a", "x" * 64, "Zoë Ångström", "o'brien-smith", "名前"])
def test_valid_names_are_accepted(name: str) -> None:
    assert UserCreate(name=name, password=PASSWORD).name == name


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("", "string_too_short"),
        ("x" * 65, "string_too_long"),
        ("nul\x00byte", "string_pattern_mismatch"),
        ("tab\tname", "string_pattern_mismatch"),
        ("line\nbreak", "string_pattern_mismatch"),
        ("trailing newline\n", "string_pattern_mismatch"),
        ("esc\x1b[31mred", "string_pattern_mismatch"),
        ("del\x7f", "string_pattern_mismatch"),
    ],
)
def test_invalid_names_are_rejected(name: str, error: str) -> None:
    with pytest.raises(ValidationError) as caught:
        UserCreate(name=name, password=PASSWORD)
    assert error_types(caught.value) == {("name", error)}


@pytest.mark.parametrize("password", ["p" * 8, "p" * 128, "spaces are fine", "ünïcödé!"])
def test_valid_passwords_are_accepted(password: str) -> None:
    assert UserCreate(name="ada", password=password).password == password


@pytest.mark.parametrize(
    ("password", "error"),
    [("", "string_too_short"), ("p" * 7, "string_too_short"), ("p" * 129, "string_too_long")],
)
def test_invalid_passwords_are_rejected(password: str, error: str) -> None:
    with pytest.raises(ValidationError) as caught:
        UserCreate(name="ada", password=password)
    assert error_types(caught.value) == {("password", error)}


def test_extra_fields_are_forbidden() -> None:
    with pytest.raises(ValidationError) as caught:
        UserCreate.model_validate({"name": "ada", "password": PASSWORD, "is_admin": True})
    assert error_types(caught.value) == {("is_admin", "extra_forbidden")}


@pytest.mark.parametrize("missing", ["name", "password"])
def test_both_fields_are_required(missing: str) -> None:
    body = {"name": "ada", "password": PASSWORD}
    del body[missing]
    with pytest.raises(ValidationError) as caught:
        UserCreate.model_validate(body)
    assert error_types(caught.value) == {(missing, "missing")}


def test_repr_and_str_never_show_the_password() -> None:
    body = UserCreate(name="ada", password=PASSWORD)
    for text in (repr(body), str(body), f"{body!r}"):
        assert PASSWORD not in text
        assert "password" not in text
        assert "ada" in text


def test_user_out_has_no_secret_fields() -> None:
    assert set(UserOut.model_fields) == {"id", "name", "created_at"}


@pytest.mark.parametrize("name", ["a\x85b", "csi\x9b31mred"])
def test_c1_control_characters_in_names_are_rejected(name: str) -> None:
    with pytest.raises(ValidationError):
        UserCreate(name=name, password="p" * 8)
