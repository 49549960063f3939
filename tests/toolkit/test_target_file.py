"""Target files: the smallest one works, and each mistake is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlite_faults import TargetError, load_target

SMALLEST = """\
app = "shop.main:app"
database_url_env = "SHOP_DB"
ready = "GET /health"

[write]
request = "POST /items/"
json = { title = "{unique}", secret = "{secret}", tags = ["{unique}"] }
id_field = "id"

[read]
request = "GET /items/{id}"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "target.toml"
    path.write_text(text)
    return path


def test_the_smallest_target_file_is_enough(tmp_path: Path) -> None:
    target = load_target(write(tmp_path, SMALLEST))
    assert target.name == "main" and target.app == "shop.main:app" and not target.factory
    assert target.root == tmp_path.resolve()
    assert target.ready.label == "GET /health" and target.probe_request == target.ready
    assert target.write.request.label == "POST /items/"
    request = target.write.write_request("u1", "s1")
    assert json.loads(request.content or b"") == {"title": "u1", "secret": "s1", "tags": ["u1"]}
    assert request.headers == {"Content-Type": "application/json"}
    assert target.write.read_request(7).url == "/items/7"
    assert target.write.unique_part == "json"
    assert target.database_url == "sqlite:///{path}" and target.write.table is None


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.replace('app = "shop.main:app"\n', ""), "'app' is required"),
    (lambda t: t.replace('id_field = "id"\n', ""), "id_field"),
    (lambda t: t.replace('id_field = "id"\n', 'id_field = "id"\nid_header = "Location"\n'),
     "one of them"),
    (lambda t: t.replace('json = {', 'form = { a = "1" }\njson = {'), "not both"),
    (lambda t: t.replace('"{secret}"', '"{secrets}"'), "unknown placeholder {secrets}"),
    (lambda t: t.replace('[read]', '[read]\nexpect = "all"'), "expect must be"),
    (lambda t: 'server = "gunicorn"\n' + t, "server must be one of"),
    (lambda t: t.replace("GET /items/{id}", "GET /items/"), "must contain {id}"),
    (lambda t: t.replace('"{unique}"', '"fixed"'), "{unique}"),
    (lambda t: t.replace("POST /items/", "POST items"), "METHOD /path"),
    (lambda t: 'colour = "blue"\n' + t, "unknown keys ['colour']"),
    (lambda t: 'database_url = "sqlite:///x.db"\n' + t, "must contain {path}"),
    (lambda t: t + "[", "not valid TOML"),
])
def test_each_mistake_is_named(tmp_path: Path, change: object, message: str) -> None:
    with pytest.raises(TargetError, match=message.replace("[", r"\[").replace("{", r"\{")):
        load_target(write(tmp_path, change(SMALLEST)))  # type: ignore[operator]


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="no target file"):
        load_target(tmp_path / "nope.toml")
