"""Space-file YAML shapes no one plans for (issue 26, part 8): merge keys, deep nesting, an alias bomb,
look-alike and invisible characters in keys. Each is read or refused in one line before anything runs."""

import pytest

from fer_tune.errors import FerTuneError
from fer_tune.search.sweep_file import load_space
from fer_tune.search.yaml_strict import MAX_DEPTH


def space(tmp_path, text: str):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return load_space(path)


def refusal(tmp_path, text: str) -> str:
    with pytest.raises(FerTuneError) as caught:
        space(tmp_path, text)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400, message[:1000]
    return message


def test_merge_keys_share_a_block_and_the_mappings_own_keys_win(tmp_path):
    loaded = space(
        tmp_path,
        "name: m\n"
        "search: {algorithm: random, seed: 3}\n"
        "budget:\n  <<: {num_samples: 4, max_epochs: 3}\n  max_epochs: 2\n"
        "space:\n  model: basic\n",
    )
    assert (loaded.budget.num_samples, loaded.budget.max_epochs) == (4, 2)


def test_a_merge_of_an_anchored_block_and_of_several_blocks(tmp_path):
    loaded = space(
        tmp_path,
        "name: m\nsearch: {algorithm: random}\n"
        "space:\n  model: basic\n"
        "  lr: &range {loguniform: [1.0e-4, 1.0e-2]}\n"
        "  weight_decay: {<<: *range}\n",
    )
    [weight_decay] = [p for p in loaded.space if p.name == "weight_decay"]
    assert (weight_decay.kind, tuple(weight_decay.values)) == ("loguniform", (1e-4, 1e-2))
    loaded = space(
        tmp_path,
        "name: m\n"
        "resources: &one {cpu: 1}\n"
        "budget:\n  <<: [{num_samples: 5}, {max_epochs: 2}]\n"
        "pruner:\n  <<: {name: none}\n"
        "space:\n  model: basic\n",
    )
    assert (loaded.budget.num_samples, loaded.budget.max_epochs, loaded.pruner.name) == (5, 2, "none")


def test_an_own_key_written_twice_beside_a_merge_is_still_a_duplicate(tmp_path):
    message = refusal(tmp_path, "name: m\nbudget:\n  <<: {num_samples: 4}\n  max_epochs: 2\n  max_epochs: 3\n")
    assert "duplicate key 'max_epochs'" in message


def test_a_document_nested_thousands_deep_is_one_line(tmp_path):
    message = refusal(tmp_path, "name: d\nspace:\n  model: " + "[" * 5000 + "]" * 5000 + "\n")
    assert f"nested over {MAX_DEPTH} levels" in message and "s.yaml: line 3" in message


def test_an_alias_bomb_gives_a_short_line(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 8)]
    message = refusal(tmp_path, "\n".join(lines) + "\nname: *a7\n")
    assert message.startswith(f"{tmp_path / 's.yaml'}: name: a list: expected a name")


@pytest.mark.parametrize("key, shown", [("bud\u200bget", r"bud\u200bget"), ("n\u0430me", r"n\u0430me")])
def test_an_invisible_or_look_alike_character_in_a_key_is_shown_escaped(tmp_path, key, shown):
    message = refusal(tmp_path, f"name: k\n{key}: {{num_samples: 2}}\nspace:\n  model: basic\n")
    assert f"'{shown}'" in message and "unknown key" in message
