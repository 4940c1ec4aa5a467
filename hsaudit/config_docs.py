"""Write the configuration's key reference and JSON Schema from the schema's models.

``python -m hsaudit.config_docs`` rewrites the generated part of docs/configuration.md (between
its two marker lines; the hand-written text around them is kept) and docs/config.schema.json
from ``hsaudit.config_schema``; ``python -m hsaudit.config_docs --check`` exits non-zero when
the committed files differ from what the schema gives (the tests run it). Every key of every
section is listed with its type, default and the description of its field.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from hsaudit.config_schema import ATTACK_SETTINGS, AnalysisSettings, FlatInput, NanoAODInput, known_keys

DOCS = Path(__file__).resolve().parent.parent / "docs"
MARKDOWN = DOCS / "configuration.md"
JSON_SCHEMA = DOCS / "config.schema.json"
BEGIN = "<!-- key reference: generated from hsaudit/config_schema.py by `python -m hsaudit.config_docs`; edit the schema, not this table -->"
END = "<!-- end of the generated key reference -->"


# ---------------------------------------------------------------------------- types
def _args(annotation) -> tuple:
    return typing.get_args(annotation)


def _is_model(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _unwrap(annotation) -> tuple[Any, list, bool]:
    """(annotation without Annotated/Optional, constraint metadata, nullable)."""
    metadata: list = []
    nullable = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            args = _args(annotation)
            metadata += list(args[1:])
            annotation = args[0]
        elif origin in (Union, types.UnionType) and type(None) in _args(annotation):
            nullable = True
            rest = [a for a in _args(annotation) if a is not type(None)]
            annotation = rest[0] if len(rest) == 1 else Union[tuple(rest)]
        else:
            return annotation, metadata, nullable


def _constraints(metadata) -> str:
    out = []
    for m in metadata:
        for cls, sign, attr in ((Gt, ">", "gt"), (Ge, ">=", "ge"), (Lt, "<", "lt"), (Le, "<=", "le")):
            if isinstance(m, cls):
                out.append(f"{sign} {getattr(m, attr)}")
        if isinstance(m, MinLen) and m.min_length > 0:
            out.append(f"at least {m.min_length}")
        if isinstance(m, MaxLen):
            out.append(f"at most {m.max_length}")
    return ", ".join(out)


def type_name(annotation, metadata=()) -> str:
    """A short, human type: ``int >= 0``, ``list of str``, ``pgd`` \\| ``fgsm``, ``mapping``."""
    annotation, more, nullable = _unwrap(annotation)
    metadata = list(metadata) + more
    origin = typing.get_origin(annotation)
    if origin is Literal:
        text = " \\| ".join(f"`{v}`" for v in _args(annotation))
    elif origin is list:
        text = f"list of {type_name(_args(annotation)[0])}"
    elif origin is dict:
        inner = _args(annotation)[1]
        text = "mapping" if _is_model(_unwrap(inner)[0]) else f"mapping to {type_name(inner)}"
    elif origin in (Union, types.UnionType):
        text = " or ".join(type_name(a) for a in _args(annotation))
    elif _is_model(annotation):
        text = "mapping"
    elif annotation is Any:
        text = "any"
    else:
        text = getattr(annotation, "__name__", str(annotation))
    limits = _constraints(metadata)
    if limits:
        text = f"{text} ({limits})"
    return f"{text} or null" if nullable else text


def default_text(field) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
        if _is_model(type(value)):
            return "see below" if type(value).model_fields else ""
        return f"`{json.dumps(value)}`" if value not in ({}, []) else "empty"
    value = field.default
    if value is None or value is PydanticUndefined:
        return "none"
    return f"`{json.dumps(value)}`"


# ---------------------------------------------------------------------------- tables
def _rows(model: type[BaseModel], prefix: str, keys=None) -> list[tuple[str, str, str, str]]:
    """(key, type, default, meaning) for every key of ``model`` and, depth first, of the
    sections inside it."""
    rows = []
    for key in keys or model.model_fields:
        field = model.model_fields[key]
        path = f"{prefix}.{key}" if prefix else key
        ann, _, _ = _unwrap(field.annotation)
        origin = typing.get_origin(ann)
        inner = None
        if _is_model(ann):
            inner = (ann, path)
        elif origin is dict and _is_model(_unwrap(_args(ann)[1])[0]):
            inner = (_unwrap(_args(ann)[1])[0], f"{path}.<name>")
        elif origin is list and _is_model(_unwrap(_args(ann)[0])[0]):
            inner = (_unwrap(_args(ann)[0])[0], f"{path}[i]")
        elif origin in (Union, types.UnionType):
            models = [a for a in (_unwrap(x)[0] for x in _args(ann)) if _is_model(a)]
            if len(models) == 1:
                inner = (models[0], path)
        description = " ".join((field.description or "").split()).replace("|", "\\|")
        rows.append((path, type_name(field.annotation, field.metadata), default_text(field), description))
        if inner is not None:
            rows += _rows(*inner)
    return rows


def _table(rows) -> list[str]:
    out = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, kind, default, meaning in rows:
        out.append(f"| `{key}` | {kind} | {default} | {meaning} |")
    return out


def _doc(model: type[BaseModel]) -> str:
    text = " ".join((model.__doc__ or "").split())
    return text


def reference() -> str:
    """The generated key reference (markdown)."""
    lines = [
        "Every key with its type, default (`required`: no default; `none`: unset) and meaning. An",
        "unknown key anywhere is an error naming its path and the known keys.",
        "",
    ]
    for key, field in AnalysisSettings.model_fields.items():
        ann = _unwrap(field.annotation)[0]
        if key == "input":
            lines += ["### `input`", "", " ".join((field.description or "").split()), ""]
            for model in (NanoAODInput, FlatInput):
                lines += [f"#### `input.kind: {model.model_fields['kind'].annotation.__args__[0]}`", "", _doc(model), ""]
                lines += _table(_rows(model, "input")) + [""]
            continue
        if key == "attacks":
            lines += ["### `attacks`", "", " ".join((field.description or "").split()),
                      "Settings common to every type are listed with each type.", ""]
            for name, model in ATTACK_SETTINGS.items():
                lines += [f"#### `type: {name}`", "", _doc(model), ""]
                lines += _table(_rows(model, "attacks.<name>", keys=known_keys(model))) + [""]
            continue
        title = f"### `{key}`"
        nested = _is_model(ann) or typing.get_origin(ann) in (dict, list)
        if not nested:
            continue
        lines += [title, ""]
        inner = _unwrap(_args(ann)[-1])[0] if typing.get_origin(ann) in (dict, list) else ann
        intro = _doc(inner) if _is_model(inner) and "__doc__" in vars(inner) and inner.__doc__ else ""
        lines += [intro or " ".join((field.description or "").split()), ""]
        lines += _table(_rows(AnalysisSettings, "", keys=[key])) + [""]
    scalars = [k for k, f in AnalysisSettings.model_fields.items()
               if not (_is_model(_unwrap(f.annotation)[0]) or typing.get_origin(_unwrap(f.annotation)[0]) in (dict, list))
               and k != "input"]
    top = ["### Top level", "", *_table(_rows(AnalysisSettings, "", keys=scalars)), ""]
    return "\n".join(lines[:3] + top + lines[3:]).rstrip() + "\n"


def json_schema() -> str:
    schema = AnalysisSettings.model_json_schema()
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              "title": "hsaudit analysis configuration", **{k: v for k, v in schema.items() if k != "title"}}
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


def markdown(current: str) -> str:
    """``current`` with the text between the markers replaced by the generated reference."""
    if BEGIN not in current or END not in current:
        raise SystemExit(f"{MARKDOWN}: the marker lines of the generated reference are missing")
    head, rest = current.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n\n{reference()}\n{END}{tail}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed files are stale")
    args = parser.parse_args(argv)
    wanted = {MARKDOWN: markdown(MARKDOWN.read_text()), JSON_SCHEMA: json_schema()}
    stale = [p for p, text in wanted.items() if not p.exists() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"{p.name} is stale: run python -m hsaudit.config_docs", file=sys.stderr)
        return 1 if stale else 0
    for p in stale:
        p.write_text(wanted[p])
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
