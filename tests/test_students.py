"""Student registry, tower shrinking and weight inheritance, on tiny seeded teachers."""

import json
import math

import pytest
import torch

from tiny_models import TINY_IMAGE, TINY_PREPROCESS, TINY_TEXT, tiny_tokenizer
from vledge.compress.students import (
    DEFAULT_CAMERA_STUDENT, DEFAULT_CLIP_STUDENT, DEFAULT_STUDENT, StudentSpec, build_student, count_parameters, default_student,
    get_student, list_students,
)
from vledge.compress.students.inherit import pick_layers
from vledge.errors import ConfigError
from vledge.models import load_dual_encoder, load_teacher, save_dual_encoder
from vledge.models.factory import build_dual_encoder


NARROW = {"arch": "narrow_resnet", "widths": [8, 8, 16, 16], "blocks": [3, 2, 1, 1]}
DEEP_TEXT = {**TINY_TEXT, "num_layers": 3}  # hidden 32, 2 heads of 16
WIDE_VIT = {**TINY_IMAGE["vit"], "num_layers": 3}  # hidden 32, 2 heads of 16


pytestmark = pytest.mark.usefixtures("one_thread")


def teacher_with(image: dict, text: dict = DEEP_TEXT, seed: int = 0):
    torch.manual_seed(seed)
    model = build_dual_encoder(
        image, text, embed_dim=16, tokenizer=tiny_tokenizer(), preprocess=TINY_PREPROCESS,
        labels={"classes": ["bag", "coat"], "templates": ["a photo of a {}."]},
    )
    with torch.no_grad():  # BatchNorm and LayerNorm start at 1 / 0: jitter them so a misplaced tensor shows
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.05 * torch.randn_like(tensor))
    return model.eval()


@pytest.fixture(scope="module")
def vit_teacher():
    return teacher_with(WIDE_VIT)


@pytest.fixture(scope="module")
def resnet_teacher():
    return teacher_with(NARROW)


@pytest.fixture(scope="module")
def clip_teacher(tmp_path_factory):
    from tiny_clip import make_tiny_clip_folder

    return load_teacher(make_tiny_clip_folder(tmp_path_factory.mktemp("clip")))


def embed(model, texts=("a photo of a bag.", "a coat")):
    size = model.preprocess.image_size
    pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model.encode_image(pixels), model.encode_text(*model.tokenize(list(texts)))


def spec(image, text, inherit=True):
    return StudentSpec("test", "a test student", image, text, inherit)


def shrink(depth, width):
    return {"shrink": {"depth": depth, "width": width}}


# --- registry


def test_registry_covers_the_required_architectures():
    specs = {s.name: s for s in list_students()}
    assert DEFAULT_STUDENT in specs and DEFAULT_CLIP_STUDENT in specs
    image_archs = {s.image_tower.get("arch") for s in specs.values()}
    assert {"mobilenet_v3_small", "mobilenet_v3_large", "narrow_resnet", "vit"} <= image_archs
    berts = [s.text_tower for s in specs.values() if s.text_tower.get("arch") == "bert"]
    assert berts and all(2 <= b["num_layers"] <= 4 and 128 <= b["hidden_size"] <= 512 for b in berts)
    assert any("shrink" in s.image_tower and "shrink" in s.text_tower for s in specs.values())
    for s in specs.values():
        assert StudentSpec.from_dict(s.to_dict()) == s and s.description


def test_unknown_student_suggests_the_closest_name():
    with pytest.raises(ConfigError, match="unknown student 'narrow-resnet18-bert'. Did you mean 'narrow-resnet18-bert2'"):
        get_student("narrow-resnet18-bert")


def test_spec_validation_says_what_is_wrong():
    with pytest.raises(ConfigError, match="student 'x': image_tower must be a tower config with an 'arch'"):
        StudentSpec("x", "", {"widths": [1]}, {"arch": "bert"})
    with pytest.raises(ConfigError, match="unknown keys: towers"):
        StudentSpec.from_dict({"name": "x", "description": "", "towers": {}})


@pytest.mark.parametrize("name", [s.name for s in list_students()])
def test_every_student_builds_for_a_tiny_teacher(name, vit_teacher):
    student = build_student(name, vit_teacher)
    image, text = embed(student)
    assert image.shape == (2, 16) and text.shape == (2, 16)
    assert torch.allclose(image.norm(dim=-1), torch.ones(2)) and torch.allclose(text.norm(dim=-1), torch.ones(2))
    assert student.tokenizer is vit_teacher.tokenizer and student.preprocess == vit_teacher.preprocess
    assert student.labels == vit_teacher.labels and student.labels is not vit_teacher.labels
    assert student.logit_scale.item() == vit_teacher.logit_scale.item()
    assert student.source["student"] == name and set(student.source["inherited"]) == {"image", "text"}


def test_default_student_is_ten_times_smaller_than_the_demo_teacher():
    from vledge.train.config import DEMO_IMAGE_TOWER, DEMO_TEXT_TOWER

    teacher = build_dual_encoder(
        DEMO_IMAGE_TOWER, DEMO_TEXT_TOWER, embed_dim=256, tokenizer=tiny_tokenizer(32), preprocess=TINY_PREPROCESS,
    )
    assert default_student(teacher) == DEFAULT_STUDENT
    student = build_student(DEFAULT_STUDENT, teacher)
    assert count_parameters(teacher) / count_parameters(student) >= 10
    assert student.image_tower.config["stem"] == "small"
    # Two of the four BERT layers, the first and the last, each cut to two heads of the teacher's size.
    assert student.source["inherited"]["text"]["layers"] == {"encoder.layer.": [0, 3]}
    assert student.source["inherited"]["text"]["fresh"] == []


# --- inheritance


def test_pick_layers_keeps_first_and_last_evenly():
    assert pick_layers(2, 4) == [0, 3]
    assert pick_layers(3, 12) == [0, 6, 11]
    assert pick_layers(1, 6) == [0]
    assert pick_layers(4, 4) == [0, 1, 2, 3]


@pytest.mark.parametrize("image", [WIDE_VIT, NARROW, TINY_IMAGE["mobilenet"]], ids=["vit", "narrow_resnet", "mobilenet"])
def test_full_size_shrink_inherits_everything_and_matches_the_teacher(image):
    teacher = teacher_with(image)
    student = build_student(spec(shrink(1, 1), shrink(1, 1)), teacher)
    for side in ("image", "text"):
        record = student.source["inherited"][side]
        assert record["family_match"] and record["sliced"] == [] and record["fresh"] == []
    (image, text), (teacher_image, teacher_text) = embed(student), embed(teacher)
    assert len(image) and len(text)
    assert torch.equal(image, teacher_image) and torch.equal(text, teacher_text)


def test_bert_inheritance_picks_layers_and_slices_whole_heads(vit_teacher):
    # Same head count, half the head size: each head keeps its first 8 of 16 dimensions.
    text = {"arch": "bert", "hidden_size": 16, "num_layers": 2, "num_heads": 2, "intermediate_size": 24}
    student = build_student(spec(TINY_IMAGE["mobilenet"], text), vit_teacher)
    record = student.source["inherited"]["text"]
    assert record["layers"] == {"encoder.layer.": [0, 2]} and record["fresh"] == []
    s, t = student.text_tower.state_dict(), vit_teacher.text_tower.state_dict()
    heads = torch.tensor(list(range(0, 8)) + list(range(16, 24)))
    layer = "encoder.encoder.layer.{}.attention."
    assert torch.equal(s[layer.format(1) + "self.query.weight"], t[layer.format(2) + "self.query.weight"][heads][:, :16])
    assert torch.equal(s[layer.format(1) + "self.value.bias"], t[layer.format(2) + "self.value.bias"][heads])
    assert torch.equal(s[layer.format(0) + "output.dense.weight"], t[layer.format(0) + "output.dense.weight"][:16][:, heads])
    assert torch.equal(s["encoder.encoder.layer.1.intermediate.dense.weight"], t["encoder.encoder.layer.2.intermediate.dense.weight"][:24, :16])
    assert torch.equal(s["encoder.embeddings.word_embeddings.weight"], t["encoder.embeddings.word_embeddings.weight"][:, :16])
    assert torch.equal(s["encoder.embeddings.LayerNorm.bias"], t["encoder.embeddings.LayerNorm.bias"][:16])
    assert torch.equal(s["proj.weight"], t["proj.weight"][:, :16])
    assert "encoder.embeddings.position_embeddings.weight" in record["sliced"]
    # A family mismatch (mobilenet student, ViT teacher) inherits nothing.
    assert student.source["inherited"]["image"]["family_match"] is False


def test_vit_inheritance_slices_packed_qkv_by_head(vit_teacher):
    image = {"arch": "vit", "patch_size": 7, "num_layers": 2, "num_heads": 2, "hidden_dim": 16, "mlp_dim": 24}
    student = build_student(spec(image, shrink(1, 1)), vit_teacher)
    assert student.source["inherited"]["image"]["layers"] == {"encoder_layer_": [0, 2]}
    s, t = student.image_tower.state_dict(), vit_teacher.image_tower.state_dict()
    rows = torch.tensor([block * 32 + head * 16 + d for block in range(3) for head in range(2) for d in range(8)])
    key = "backbone.encoder.layers.encoder_layer_{}.self_attention.in_proj_weight"
    assert torch.equal(s[key.format(1)], t[key.format(2)][rows][:, :16])
    assert torch.equal(s["backbone.encoder.pos_embedding"], t["backbone.encoder.pos_embedding"][..., :16])
    assert torch.equal(s["backbone.conv_proj.weight"], t["backbone.conv_proj.weight"][:16])
    # A different patch size changes the kernel and the position grid: those stay fresh.
    other = build_student(spec({**image, "patch_size": 4}, shrink(1, 1)), vit_teacher).source["inherited"]["image"]
    assert {"backbone.conv_proj.weight", "backbone.encoder.pos_embedding"} <= set(other["fresh"])


def test_resnet_inheritance_keeps_the_first_block_of_each_stage(resnet_teacher):
    image = {"arch": "narrow_resnet", "widths": [4, 8, 8, 16], "blocks": [2, 1, 1, 1]}
    student = build_student(spec(image, shrink(1, 1)), resnet_teacher)
    record = student.source["inherited"]["image"]
    assert record["layers"] == {"layer1.": [0, 2], "layer2.": [0], "layer3.": [0], "layer4.": [0]}
    assert record["fresh"] == []
    s, t = student.image_tower.state_dict(), resnet_teacher.image_tower.state_dict()
    assert torch.equal(s["backbone.layer1.1.conv2.weight"], t["backbone.layer1.2.conv2.weight"][:4, :4])
    assert torch.equal(s["backbone.layer2.0.downsample.1.running_var"], t["backbone.layer2.0.downsample.1.running_var"][:8])
    assert torch.equal(s["proj.weight"], t["proj.weight"][:, :16])


def test_narrow_resnet_names_match_torchvision_resnet18():
    import vledge.models.narrow_resnet  # noqa: F401  registers the tower
    from vledge.models.image_towers import build_image_tower

    torchvision_tower = build_image_tower({"arch": "resnet18", "stem": "small"}, 8).state_dict()
    narrow = build_image_tower({"arch": "narrow_resnet", "widths": [64, 128, 256, 512], "blocks": [2, 2, 2, 2]}, 8).state_dict()
    assert {k: v.shape for k, v in narrow.items()} == {k: v.shape for k, v in torchvision_tower.items()}


def test_inherit_false_builds_fresh_weights(vit_teacher):
    text = {"arch": "bert", "hidden_size": 16, "num_layers": 2, "num_heads": 2, "intermediate_size": 24}
    inherited = build_student(spec(shrink(1, 0.5), text), vit_teacher)
    fresh = build_student(spec(shrink(1, 0.5), text, inherit=False), vit_teacher)
    assert fresh.source["inherited"]["text"] == {"family_match": False, "reason": "the spec sets inherit: false"}
    key = "encoder.embeddings.word_embeddings.weight"
    assert not torch.equal(fresh.text_tower.state_dict()[key], inherited.text_tower.state_dict()[key])
    assert torch.equal(inherited.text_tower.state_dict()[key], vit_teacher.text_tower.state_dict()[key][:, :16])


# --- shrinking


def test_shrink_errors_name_the_student_and_the_fix(vit_teacher):
    mobilenet = teacher_with(TINY_IMAGE["mobilenet"])
    with pytest.raises(ConfigError, match="student 'test' image tower: mobilenet_v3_small towers shrink in width only"):
        build_student(spec(shrink(0.5, 0.5), shrink(1, 1)), mobilenet)
    with pytest.raises(ConfigError, match=r"shrink depth must be a fraction in \(0, 1\], got 2"):
        build_student(spec(shrink(2, 1), shrink(1, 1)), vit_teacher)
    with pytest.raises(ConfigError, match="unknown shrink keys \\['layers'\\]"):
        build_student(spec({"shrink": {"layers": 0.5}}, shrink(1, 1)), vit_teacher)


def test_clip_shrink_derives_a_smaller_hf_config(clip_teacher):
    assert default_student(clip_teacher) == DEFAULT_CLIP_STUDENT
    student = build_student(DEFAULT_CLIP_STUDENT, clip_teacher)
    for side, tower in (("image", student.image_tower), ("text", student.text_tower)):
        hf = tower.config["hf_config"]
        assert (hf["num_hidden_layers"], hf["num_attention_heads"], hf["hidden_size"], hf["intermediate_size"]) == (1, 1, 16, 32)
        record = student.source["inherited"][side]
        assert record["family_match"] and record["fresh"] == []
    s, t = student.text_tower.state_dict(), clip_teacher.text_tower.state_dict()
    key = "encoder.text_model.encoder.layers.{}.self_attn.k_proj.weight"
    assert student.source["inherited"]["text"]["layers"] == {"encoder.layers.": [0]}
    assert torch.equal(s[key.format(0)], t[key.format(0)][:16, :16])
    assert student.text_tower.config["hf_config"]["vocab_size"] == clip_teacher.text_tower.config["hf_config"]["vocab_size"]
    image, text = embed(student)
    assert image.shape == (2, 16) and text.shape == (2, 16)


def test_clip_full_size_shrink_matches_the_teacher(clip_teacher):
    student = build_student(spec(shrink(1, 1), shrink(1, 1)), clip_teacher)
    (image, text), (teacher_image, teacher_text) = embed(student), embed(clip_teacher)
    assert len(image) and len(text)
    assert torch.allclose(image, teacher_image, atol=1e-6) and torch.allclose(text, teacher_text, atol=1e-6)


# --- save and reload


@pytest.mark.parametrize("teacher_name", ["resnet", "clip"])
def test_student_round_trips_through_a_checkpoint(teacher_name, tmp_path, resnet_teacher, clip_teacher):
    teacher = resnet_teacher if teacher_name == "resnet" else clip_teacher
    student = build_student(default_student(teacher), teacher)
    loaded = load_dual_encoder(save_dual_encoder(student, tmp_path / "student"))
    assert loaded.image_tower.config == student.image_tower.config
    (image, text), (student_image, student_text) = embed(loaded), embed(student)
    assert len(image) and len(text)
    assert torch.equal(image, student_image) and torch.equal(text, student_text)
    assert math.isclose(loaded.logit_scale.item(), student.logit_scale.item())


def test_build_is_seeded(vit_teacher):
    fresh = spec({"arch": "narrow_resnet", "widths": [4, 4, 8, 8], "blocks": [1, 1, 1, 1]}, shrink(1, 1))
    a, b = (build_student(fresh, vit_teacher, seed=3) for _ in range(2))
    c = build_student(fresh, vit_teacher, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.image_tower.proj.weight, c.image_tower.proj.weight)


# --- camera students and their cost on the reference teachers


def test_every_spec_names_registered_reference_teachers():
    from vledge.compress.students.reference import REFERENCE_TEACHERS

    named = [(s.name, t) for s in list_students() for t in s.teachers]
    assert {name for name, _ in named} == {s.name for s in list_students()}
    assert all(t in REFERENCE_TEACHERS for _, t in named)
    with pytest.raises(ConfigError, match="teachers must be a list of reference teacher names"):
        StudentSpec("x", "", {"arch": "bert"}, {"arch": "bert"}, teachers="clip-vit-b32")


def test_camera_students_cost_less_and_inherit_what_their_families_allow():
    from vledge.compress.students.reference import measure, measure_teacher

    teacher = measure_teacher("tiny-clip-224")
    vit, cnn = measure(get_student("camera-vit-shrink"), "tiny-clip-224"), measure(get_student("camera-resnet18-shrink-text"), "tiny-clip-224")
    assert vit.inherits == ("image", "text") and cnn.inherits == ("text",)
    assert vit.image_size == 224 and vit.params < teacher.params and vit.image_macs < teacher.image_macs
    assert 0 < vit.text_macs < teacher.text_macs and cnn.text_macs == vit.text_macs


def test_flop_counter_gives_the_macs_of_a_linear_tower():
    from vledge.compress.students.reference import REFERENCE_TEACHERS, tower_macs

    tower = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 224 * 224, 7, bias=False))
    assert tower_macs(tower, "image", REFERENCE_TEACHERS.get("tiny-clip-224")) == 3 * 224 * 224 * 7


def test_camera_vit_student_starts_from_the_224_px_teachers_weights(tmp_path):
    from test_camera_teachers import camera_teachers

    script = camera_teachers()
    teacher = load_teacher(script.build_teacher(script.TEST_TEACHER, tmp_path))
    assert default_student(teacher) == DEFAULT_CAMERA_STUDENT == "camera-vit-shrink"
    student = build_student(DEFAULT_CAMERA_STUDENT, teacher)
    record = student.source["inherited"]["image"]
    assert record["family_match"] and record["fresh"] == [] and record["sliced"]
    key = "backbone.vision_model.embeddings.patch_embedding.weight"
    assert torch.equal(student.image_tower.state_dict()[key], teacher.image_tower.state_dict()[key][:16])
    image, text = embed(student)
    assert image.shape == (2, 16) and text.shape == (2, 16)


def test_cli_lists_each_students_cost_on_its_teachers(capsys, monkeypatch):
    from vledge.cli import main
    from vledge.compress.students import reference

    def fake(spec, teacher):
        return reference.StudentCost(teacher, 224, 2_500_000, 480_000_000, 380_000_000, ("text",))

    monkeypatch.setattr(reference, "measure", fake)
    monkeypatch.setattr(reference, "measure_teacher", lambda name: fake(None, name))
    assert main(["students"]) == 0
    out = capsys.readouterr().out
    assert ("camera-resnet18-shrink-text\n" in out and
            "  on clip-vit-b32 (224 px): 2.50M params, 0.480 GMACs an image, 0.380 GMACs a prompt; inherits text" in out)
    assert "  the teacher clip-vit-b16 itself: 2.50M params" in out


# --- ranking for a teacher folder


def test_students_ranked_for_a_clip_folder_cheapest_image_tower_first(clip_teacher, tmp_path, capsys):
    from vledge.cli import main
    from vledge.compress.students.ranking import rank_students
    from tiny_clip import make_tiny_clip_folder

    ranked = rank_students(clip_teacher, "int8")
    fitting = [r for r in ranked if r.error is None]
    assert len(fitting) >= 2 and any(r.error for r in ranked)  # vit-tiny-bert2: no patch size fits 30-px images
    macs = [r.image_macs for r in fitting]
    assert macs == sorted(macs) and all(m > 0 for m in macs)
    assert all(r.size_bytes == r.params for r in fitting)  # one byte a weight at int8
    assert ranked.index(fitting[-1]) < ranked.index(next(r for r in ranked if r.error))  # misfits last
    assert main(["students", "--teacher", str(make_tiny_clip_folder(tmp_path / "clip")), "--target", "cuda",
                 "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["precision"] == "fp16" and listed["students"][0]["estimated_size_bytes"] == 2 * listed["students"][0]["params"]
