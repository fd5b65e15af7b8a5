"""A YAML loader that refuses duplicate keys and reads 1e-4 as a number.

PyYAML keeps the last of two equal keys silently: a second `budget:` once turned a 4 x 2
sweep into 50 x 30. This loader raises instead, naming the key and both lines. PyYAML also
follows YAML 1.1, where `1e-4` and `1.0e8` are strings (a float needs a dot and a signed
exponent); learning rates are written that way, so this loader reads them as YAML 1.2 does.

    yaml.load(read_yaml_text(path, "search-space file"), Loader=StrictLoader)

Merge keys (`<<: *base`) are read as YAML defines them; `read_yaml_text` refuses a document nested
over MAX_DEPTH levels before PyYAML's recursive composer sees it.

`read_yaml_text` reads only what a YAML file can be: a regular file (not a folder, a FIFO that
would block, /dev/null), of bounded size (a 10 MB file took PyYAML 39 s), in UTF-8 or, with a
byte-order mark, UTF-16/32 (as Windows editors save it); anything else is one line saying so.
"""

from __future__ import annotations

import codecs
import re
import stat
from pathlib import Path

import yaml

from fer_tune.errors import FerTuneError

MAX_YAML_BYTES = 1_000_000  # the largest seed space is 3 kB; PyYAML parses ~250 kB/s
BOMS = (  # longest first: UTF-32-LE's mark starts with UTF-16-LE's
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)  # fmt: skip


def read_yaml_text(path: Path, what: str) -> str:
    """The text of the YAML file `path`, or one line naming it and what it is instead."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise FerTuneError(f"{path}: {what} not found") from None
    except OSError as err:
        raise FerTuneError(f"{path}: cannot read this {what} ({err.strerror or err})") from None
    if stat.S_ISDIR(info.st_mode):
        raise FerTuneError(f"{path}: is a folder; expected a {what} (YAML)")
    if not stat.S_ISREG(info.st_mode):
        kind = (
            "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a device" if stat.S_ISCHR(info.st_mode) else "a special file"
        )
        raise FerTuneError(f"{path}: is {kind}, not a regular file; expected a {what} (YAML)")
    if info.st_size > MAX_YAML_BYTES:
        raise FerTuneError(f"{path}: {info.st_size} bytes; expected a {what} of at most {MAX_YAML_BYTES // 1000} kB")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise FerTuneError(f"{path}: cannot read this {what} ({err.strerror or err})") from None
    encoding = next((name for bom, name in BOMS if data.startswith(bom)), "utf-8")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise FerTuneError(
            f"{path}: line {line}: not {encoding.upper().removesuffix('-SIG')} text (byte {data[err.start]:#04x}); "
            "expected UTF-8 (or UTF-16 with a byte-order mark): save the file as UTF-8"
        ) from None
    check_depth(text, path)
    return text


class StrictLoader(yaml.SafeLoader):
    pass


def _mapping_without_duplicates(loader: StrictLoader, node: yaml.MappingNode) -> dict:
    """A mapping whose own keys are each written once. Merge keys (`<<: *base`) are YAML's way to share
    a block between files' sections: the merged keys may be overridden by the mapping's own, as YAML says."""
    own = [(k, v) for k, v in node.value if k.tag != "tag:yaml.org,2002:merge"]
    seen: dict = {}
    for key_node, _ in own:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (lines {seen[key] + 1} and {key_node.start_mark.line + 1}); "
                "expected each key once",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    loader.flatten_mapping(node)  # the merged keys first, then the mapping's own (PyYAML's SafeConstructor)
    return loader.construct_mapping(node, deep=True)


MAX_DEPTH = 64  # nesting levels; a space file uses 4, and PyYAML's composer recurses (RecursionError at ~1000)


def check_depth(text: str, path: Path) -> None:
    """Refuse a document nested deeper than MAX_DEPTH, reading its events (the parser does not recurse)."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=StrictLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    line = event.start_mark.line + 1
                    raise FerTuneError(
                        f"{path}: line {line}: nested over {MAX_DEPTH} levels deep; expected a space file"
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return  # the loader reports it, with its line


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)
# YAML 1.2's float: digits with an optional fraction and an exponent whose sign is optional.
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)
