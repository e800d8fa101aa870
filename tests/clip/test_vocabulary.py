"""The Vocabulary value: validation where it is made, its file format, what it says."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from densevlm_d2.clip import Vocabulary, VocabularyError
from densevlm_d2.data import VOCABULARY_DIR, shipped_vocabulary


@pytest.mark.parametrize(
    "names, match",
    [
        ("cat", r"got the string 'cat': put a single name in a list \(\['cat'\]\)"),
        (b"cat", "got the string"),
        ([], "empty vocabulary"),
        (["cat", None, "dog", 3], r"must be strings; .* has NoneType, int at index 1, 3"),
        (["cat", " ", "", "dog"], r"must not be blank; .* at index 1, 2"),
        (["cat", ", ,"], r"must not be blank; .* at index 1"),
        ({"cat", "dog"}, "ordered list of class names, got set"),
        (42, "ordered list of class names, got int"),
    ],
)
def test_bad_names_are_refused_with_their_index(names, match):
    with pytest.raises(VocabularyError, match=match):
        Vocabulary.from_names(names)


def test_repeats_are_reported(caplog):
    with caplog.at_level(logging.WARNING):
        vocab = Vocabulary.from_names(["cat", "dog", "cat"])
    assert "repeats ['cat']" in caplog.text and len(vocab) == 3


def test_what_a_vocabulary_says():
    vocab = Vocabulary(
        names=("sky, clouds", "cat", "tv, television", "wall"),
        is_thing=(False, True, True, False),
        background_index=0,
        novel=("tv, television",),
        source="mine",
    )
    assert vocab.display_names == ("background", "cat", "tv", "wall")
    assert vocab.synonyms(2) == ("tv", "television")
    assert vocab.novel_mask == (False, False, True, False)
    assert vocab.synonym_queries() == (("sky", "clouds", "cat", "tv", "television", "wall"),
                                       (0, 0, 1, 2, 2, 3))  # fmt: skip
    assert vocab.queries is vocab and vocab.surplus_index is None
    assert vocab.thing_flags() == (False, True, True, False)
    with pytest.raises(VocabularyError, match="needs to know which classes are things"):
        Vocabulary.from_names(["a"]).thing_flags("DenseVLM")
    np_names = Vocabulary.from_names(np.array(["a", "b"]))
    assert np_names.names == ("a", "b")


def test_consistency_checks():
    for kwargs, match in (
        ({"is_thing": (True,)}, "one boolean per class"),
        ({"background_index": 2}, "not a class index"),
        ({"background_index": True}, "not a class index"),
        ({"novel": ("zebra",)}, r"novel classes \['zebra'\] are not among"),
        ({"query_names": ("x", "a", "y")}, "must start with the first 1 class names"),
        ({"query_names": ("a",)}, "must start with the first 1"),
    ):
        with pytest.raises(VocabularyError, match=match):
            Vocabulary(names=("a", "b"), **kwargs)


def test_queried_names_differ_from_the_scored_ones():
    vocab = Vocabulary(
        names=("cat", "dog", "background"),
        query_names=("cat", "dog", "sky", "wall"),
        background_index=2,
    )
    assert vocab.surplus_index == 2 and vocab.queries.names == ("cat", "dog", "sky", "wall")
    assert vocab.queries.background_index is None  # a background made of many queries


def test_file_format_round_trip_and_errors(tmp_path):
    vocab = Vocabulary(names=("a", "b"), is_thing=(True, False), source="x")
    path = tmp_path / "v.json"
    path.write_text(json.dumps(vocab.to_json()))
    again = Vocabulary.from_file(path, source="x")
    assert again == vocab
    (tmp_path / "list.json").write_text(json.dumps([{"name": "a", "isthing": 1}]))
    with pytest.raises(VocabularyError, match="list.json: a class-list file is a json object"):
        Vocabulary.from_file(tmp_path / "list.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(VocabularyError, match="broken.json cannot be read as json"):
        Vocabulary.from_file(tmp_path / "broken.json")
    with pytest.raises(VocabularyError, match="not found"):
        Vocabulary.from_file(tmp_path / "missing.json")
    (tmp_path / "blank.json").write_text(json.dumps({"classes": ["a", ""]}))
    with pytest.raises(VocabularyError, match=r"blank.json: .* must not be blank"):
        Vocabulary.from_file(tmp_path / "blank.json")


def test_every_shipped_file_is_one_format():
    files = sorted(VOCABULARY_DIR.glob("*.json"))
    assert len(files) == 11 and not list(VOCABULARY_DIR.glob("*/"))
    for f in files:
        vocab = shipped_vocabulary(f.stem)
        assert vocab.extra.get("source"), f  # every file says where its names come from
    assert sum(shipped_vocabulary("coco_stuff_ade20k_316").is_thing) == 204
    assert shipped_vocabulary("voc_20b").surplus_index == 20
    assert shipped_vocabulary("voc_21").background_index == 0


def test_typed_text_one_line_or_one_class_per_line():
    assert Vocabulary.from_text(" cat, wall ,sky, ").names == ("cat", "wall", "sky")
    lines = Vocabulary.from_text("tv, television\n\n  wall [stuff]\nball [thing]\n")
    assert lines.names == ("tv, television", "wall", "ball")
    assert lines.is_thing is None  # tv is neither marked nor known
    known = Vocabulary.from_names(["television, tv", "sky"], is_thing=[True, False])
    flagged = Vocabulary.from_text("tv, television\nwall [stuff]\nball [thing]", known=[known])
    assert flagged.is_thing == (True, False, True)
    assert Vocabulary.from_text("sky, tv", known=[known]).is_thing == (False, True)
    assert Vocabulary.from_text("cat").source == "typed list"


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty vocabulary of typed list"),
        ("cat,, sky", "empty name between commas"),
        ("[thing]", "must not be blank"),
        (["cat"], "a typed vocabulary is text, got list"),
    ],
)
def test_typed_text_errors_name_the_problem(text, message):
    with pytest.raises(VocabularyError, match=message):
        Vocabulary.from_text(text)
