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


def test_fields_are_checked_against_their_declared_types():
    ok = {
        "cross_attention_every": [0, 2],
        "rope_adjustments": {"factor": 8, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_seq_len": 64},
        "n_query_groups": 2,
        "final_logit_softcapping": 30,  # an int is a float
        "encoder_conv_stem": [16, 32],
    }
    assert CaptionerConfig.from_dict(ok).cross_attention_every == [0, 2]
    assert CaptionerConfig.from_dict({"cross_attention_every": 3}).cross_attention_every == 3
    bad = [
        ("cross_attention_every", "every", "int | list[int]"),
        ("cross_attention_every", [1.5], "int | list[int]"),
        ("rope_adjustments", {"factor": "8"}, r"dict\[str, float\] \| None"),
        ("n_query_groups", True, r"int \| None"),  # a bool is not an int
        ("encoder_conv_stem", [16, "32"], r"list\[int\] \| None"),
        ("n_layer", None, "int"),
        ("positions", 1, "str"),
    ]
    for name, value, expected in bad:
        with pytest.raises(ValueError, match=rf"config field '{name}' is .*; expected a {expected}$"):
            CaptionerConfig.from_dict({name: value})


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"norm_class_name": "BatchNorm"}, "norm_class_name"),
        ({"mlp_class_name": "MoE"}, "mlp_class_name"),
        ({"positions": "alibi"}, "positions"),
        ({"n_query_groups": 3}, "n_query_groups"),
        ({"n_embd": 31}, "n_embd"),
        ({"positions": "rope", "head_size": 7}, "head_size"),
        ({"rope_adjustments": {"factor": 2.0, "beta": 1.0}}, "rope_adjustments"),
        ({"rope_layers": [0, 5]}, "rope_layers"),
        ({"final_logit_softcapping": 0.0}, "final_logit_softcapping"),
        ({"attention_logit_softcapping": -1.0}, "attention_logit_softcapping"),
        ({"attention_scores_scalar": 0}, "attention_scores_scalar"),
        ({"cross_attention_every": 9}, "cross_attention_every"),
    ],
)
def test_decoder_options_no_block_can_take_are_named(changes, named):
    with pytest.raises(ValueError, match=named):
        CaptionerConfig.from_name("tiny", n_layer=2, **changes).check_decoder()
