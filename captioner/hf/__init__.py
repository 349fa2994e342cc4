"""The transformers export (`captioner export-hf`): `configuration_captioner.py` and `modeling_captioner.py` are
copied into the exported folder as they are, so they import only torch, timm and transformers, never captioner;
`export.py` writes the folder."""
