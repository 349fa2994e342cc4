from captioner.shapes import (
    ShapeObject,
    captions,
    make_scene,
    parse_caption,
    scene_objects,
    score,
    write_imagefolder,
)
from captioner.shapes.scenes import COLORS, SHAPES


def obj(size: str, color: str, shape: str, x: int = 0) -> ShapeObject:
    return ShapeObject(size, color, shape, x, 32)


def test_scenes_are_deterministic_and_split_dependent():
    a, b = make_scene("train", 7), make_scene("train", 7)
    assert a.objects == b.objects and a.captions == b.captions
    assert a.image.tobytes() == b.image.tobytes()
    assert a.image.size == (64, 64) and a.image.mode == "RGB"
    assert [make_scene("test", i).objects for i in range(5)] != [make_scene("train", i).objects for i in range(5)]


def test_scene_contents_follow_the_spec():
    for i in range(200):
        objs = scene_objects("train", i)
        assert 1 <= len(objs) <= 3
        assert [o.x for o in objs] == sorted(o.x for o in objs)
        for k, o in enumerate(objs):
            assert o.color in COLORS and o.shape in SHAPES and o.size in ("small", "large")
            x0, y0, x1, y1 = o.box
            assert 0 <= x0 and 0 <= y0 and x1 < 64 and y1 < 64
            for p in objs[k + 1 :]:  # boxes do not overlap
                px0, py0, px1, py1 = p.box
                assert x1 < px0 or px1 < x0 or y1 < py0 or py1 < y0


def test_every_caption_names_objects_left_to_right():
    for i in range(100):
        scene = make_scene("val", i)
        truth = [(o.size, o.color, o.shape) for o in scene.objects]
        assert len(set(scene.captions)) >= 3
        for caption in scene.captions:
            assert parse_caption(caption) == truth


def test_rendered_colours_are_where_the_objects_are():
    scene = make_scene("train", 3)
    for o in scene.objects:
        assert scene.image.getpixel((o.x, o.y)) == COLORS[o.color]


def test_scorer_on_hand_made_cases():
    scene = [obj("small", "red", "circle", 10), obj("large", "blue", "square", 40)]
    perfect = score(["a small red circle and a large blue square"], [scene])
    assert perfect["exact_match"] == 1.0 and perfect["attribute_accuracy"] == 1.0
    assert score(["from left to right, a small red circle and a large blue square"], [scene])["exact_match"] == 1.0
    swapped = score(["a large blue square and a small red circle"], [scene])
    assert swapped["exact_match"] == 0.0 and swapped["attribute_accuracy"] == 0.0
    one_wrong = score(["a small red circle and a large green square"], [scene])
    assert one_wrong["exact_match"] == 0.0 and abs(one_wrong["attribute_accuracy"] - 5 / 6) < 1e-9
    missing = score(["a small red circle"], [scene])
    assert missing["exact_match"] == 0.0 and abs(missing["attribute_accuracy"] - 3 / 6) < 1e-9
    extra = score(["a small red circle, a large blue square and a small red cross"], [scene])
    assert extra["exact_match"] == 0.0 and abs(extra["attribute_accuracy"] - 6 / 9) < 1e-9
    assert score(["nothing here"], [scene])["attribute_accuracy"] == 0.0


def test_compositional_holdout_split():
    held = [("red", "triangle"), ("blue", "cross")]
    for split in ("train", "test"):
        for i in range(200):
            assert not {(o.color, o.shape) for o in scene_objects(split, i, held)} & set(held)
    for i in range(100):
        assert {(o.color, o.shape) for o in scene_objects("novel", i, held)} & set(held)


def test_captions_have_several_wordings():
    one = captions([obj("small", "red", "circle")])
    assert one[0] == "a small red circle" and "one shape: a small red circle" in one
    three = captions(
        [obj("small", "red", "circle", 1), obj("large", "blue", "square", 2), obj("small", "red", "cross", 3)]
    )
    assert "from left to right, a small red circle, a large blue square and a small red cross" in three


def test_write_imagefolder(tmp_path):
    import json

    write_imagefolder(tmp_path, "test", 3)
    rows = [json.loads(line) for line in (tmp_path / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all((tmp_path / r["file_name"]).is_file() for r in rows)
    assert rows[0]["text"] == make_scene("test", 0).captions
    try:
        write_imagefolder(tmp_path, "test", 3)
    except FileExistsError as err:
        assert "metadata.jsonl" in str(err)
    else:
        raise AssertionError("an existing metadata.jsonl must not be overwritten silently")
