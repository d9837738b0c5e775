"""Emoji class folders: CLDR group/subgroup read from emoji-test.txt, matched to the emoji builder's file names."""

from __future__ import annotations

from PIL import Image

from cliptune.data.builders.emoji_classes import build_emoji_classes, class_folder_name, read_emoji_test
from cliptune.inference.class_folders import read_class_folders

EMOJI_TEST = """# group: Smileys & Emotion
# subgroup: face-smiling
1F600                                                  ; fully-qualified     # 😀 E1.0 grinning face
263A FE0F                                              ; fully-qualified     # ☺️ E0.6 smiling face
# group: Animals & Nature
# subgroup: animal-mammal
1F436                                                  ; fully-qualified     # 🐶 E0.6 dog face
"""


def test_groups_and_subgroups_by_file_name(tmp_path):
    path = tmp_path / "emoji-test.txt"
    path.write_text(EMOJI_TEST, encoding="utf-8")
    table = read_emoji_test(path)
    assert table["263a-fe0f"].subgroup == "face-smiling" and table["1f436"].group == "Animals & Nature"
    assert class_folder_name("Smileys & Emotion") == "smileys and emotion"
    assert class_folder_name("animal-mammal") == "animal mammal"

    images = []
    for name in ("1f600.png", "263a-fe0f.png", "1f436.png", "1f9ff.png"):  # the last one is not in the table
        Image.new("RGB", (8, 8)).save(tmp_path / name)
        images.append(tmp_path / name)
    counts = build_emoji_classes(images, tmp_path / "groups", "group", table=table)
    assert counts == {"animals and nature": 1, "smileys and emotion": 2}
    folders = read_class_folders(tmp_path / "groups")
    assert folders.classnames == ["animals and nature", "smileys and emotion"] and len(folders.records) == 3
    assert build_emoji_classes(images, tmp_path / "sub", "subgroup", min_images=2, table=table) == {
        "face smiling": 2}
