"""Target files: the smallest one works, and each mistake is named."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
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


TEMPLATED = """\
app = "shop.main:app"

[write]
request = "PUT /shops/{env:SHOP}/items/{unique}"
query = { secret = "{secret}" }
json = { item = { title = "{unique}", tags = ["{unique}", 7] } }
headers = { Authorization = "Bearer {env:SHOP_TOKEN}" }
id_field = "data.0.id"

[read]
request = "POST /search"
form = { id = "{id}", q = "x y" }
expect = "unique"
"""


def test_every_part_of_a_request_is_a_template(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP", "main st")
    monkeypatch.setenv("SHOP_TOKEN", "t0ken")
    target = load_target(write(tmp_path, TEMPLATED))
    request = target.write.write_request("a/b c", "s3")
    assert request.method == "PUT" and request.url == "/shops/main%20st/items/a%2Fb%20c"
    assert request.params == {"secret": "s3"}
    assert request.headers == {"Authorization": "Bearer t0ken",
                               "Content-Type": "application/json"}
    assert json.loads(request.content or b"") == {"item": {"title": "a/b c",
                                                           "tags": ["a/b c", 7]}}
    read = target.write.read_request(42)
    assert read.content == b"id=42&q=x+y"
    assert read.headers == {"Content-Type": "application/x-www-form-urlencoded"}
    # Reports show the template, never a value: the token is nowhere in a label.
    assert "t0ken" not in target.write.request.label + target.read.label
    assert target.write.unique_part == "json"


def test_the_new_id_comes_from_a_nested_field_or_a_header(tmp_path: Path) -> None:
    nested = load_target(write(tmp_path, TEMPLATED)).write
    assert nested.new_id(httpx.Response(201, json={"data": [{"id": 9}]})) == 9
    with pytest.raises(KeyError):
        nested.new_id(httpx.Response(201, json={"data": [{"uid": 9}]}))
    located = load_target(write(tmp_path, SMALLEST.replace(
        'id_field = "id"', 'id_header = "Location"'))).write
    assert located.new_id(httpx.Response(201, headers={"Location": "/items/17/"})) == "17"
    assert located.expect == "unique"  # no body to compare whole with
    assert located.reads_back(None, "u1", {"item": {"title": "u1"}})
    assert not located.reads_back(None, "u1", {"item": {"title": "u2"}})


def test_a_missing_environment_variable_is_named(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOP", raising=False)
    monkeypatch.setenv("SHOP_TOKEN", "t0ken")
    target = load_target(write(tmp_path, TEMPLATED))
    with pytest.raises(TargetError, match=r"needs \$SHOP, which is not set"):
        target.write.write_request("u", "s")
