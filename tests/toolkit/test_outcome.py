"""One outcome parser: what an answer means for whether a write may have committed."""

from __future__ import annotations

import httpx
import pytest
from sqlite_faults import outcome_of


def answer(status: int, body: object = None, text: str | None = None) -> httpx.Response:
    if text is not None:
        return httpx.Response(status, text=text)
    return httpx.Response(status, json=body)


@pytest.mark.parametrize(("response", "code"), [
    (answer(504, {"error": {"code": "deadline_exceeded", "message": "..."}}),
     "deadline_exceeded"),
    (answer(409, {"code": "name_taken"}), "name_taken"),
    (answer(404, {"detail": "Not Found"}), "Not Found"),
    (answer(422, {"detail": [{"loc": ["body"], "msg": "x"}]}), "http-422"),
    (answer(500, text="Internal Server Error"), "http-500"),
    (answer(201, {"id": 1}), ""),
])
def test_the_code_comes_from_the_body_when_the_service_names_one(
        response: httpx.Response, code: str) -> None:
    assert outcome_of(response).code == code


def test_no_answer_is_status_0_named_by_the_exception() -> None:
    outcome = outcome_of(None, httpx.ReadTimeout("slow"))
    assert (outcome.status, outcome.code, outcome.answered) == (0, "ReadTimeout", False)
    assert not outcome.definite_failure


@pytest.mark.parametrize(("status", "body", "definite"), [
    (409, {"detail": "taken"}, True),
    (422, {"detail": []}, True),
    (503, {"error": {"code": "overloaded"}}, True),  # never started: cannot have committed
    (503, {"error": {"code": "storage_busy"}}, False),
    (500, {"detail": "Database error occurred"}, False),
    (504, {"error": {"code": "deadline_exceeded"}}, False),
    (429, {"detail": "slow down"}, False),
])
def test_only_refusals_that_cannot_have_committed_are_definite(
        status: int, body: object, definite: bool) -> None:
    assert outcome_of(answer(status, body)).definite_failure is definite
