"""A YAML loader that refuses duplicate keys and reads 1e-4 as a number.

PyYAML keeps the last of two equal keys silently: a second `budget:` once turned a 4 x 2
sweep into 50 x 30. This loader raises instead, naming the key and both lines. PyYAML also
follows YAML 1.1, where `1e-4` and `1.0e8` are strings (a float needs a dot and a signed
exponent); learning rates are written that way, so this loader reads them as YAML 1.2 does.

    yaml.load(text, Loader=StrictLoader)
"""

from __future__ import annotations

import re

import yaml


class StrictLoader(yaml.SafeLoader):
    pass


def _mapping_without_duplicates(loader: StrictLoader, node: yaml.MappingNode) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
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
    return loader.construct_mapping(node, deep=True)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)
# YAML 1.2's float: digits with an optional fraction and an exponent whose sign is optional.
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)
