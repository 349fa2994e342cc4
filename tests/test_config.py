import pytest

from captioner.config import PRESETS, CaptionerConfig


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_json(name, tmp_path):
    cfg = CaptionerConfig.from_name(name)
    cfg.save(tmp_path / "config.json")
    assert CaptionerConfig.load(tmp_path / "config.json") == cfg


def test_base_preset_is_vit_b_and_gpt2_small():
    cfg = CaptionerConfig.from_name("base")
    assert cfg.encoder_name == "vit_base_patch16_224"
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.vocab_size) == (12, 12, 768, 50257)


def test_unknown_preset_and_field_are_named():
    with pytest.raises(ValueError, match="huge"):
        CaptionerConfig.from_name("huge")
    with pytest.raises(ValueError, match="n_layers"):
        CaptionerConfig.from_dict({"n_layers": 2})
