"""Checkpoint formats: key maps, readers, writers and the loader, checked against diffusers itself (test-only)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from core import checkpoints as ck
from core.config import PRESETS, tiny_config
from core.errors import CheckpointError

diffusers = pytest.importorskip("diffusers")
SanaVideoTransformer3DModel = diffusers.SanaVideoTransformer3DModel

INERT = ("dropout", "interpolation_scale", "guidance_embeds_scale", "_diffusers_version")


def diffusers_kwargs(cfg):
    kwargs = cfg.to_diffusers_dict()
    kwargs.pop("_class_name")
    return kwargs


def official_from_diffusers(sd):
    """The official layout written out independently of core.checkpoints (the convert script, run backwards)."""
    off = {}
    top = {
        "x_embedder.proj": "patch_embedding", "t_embedder.mlp.0": "time_embed.emb.timestep_embedder.linear_1",
        "t_embedder.mlp.2": "time_embed.emb.timestep_embedder.linear_2", "t_block.1": "time_embed.linear",
        "y_embedder.y_proj.fc1": "caption_projection.linear_1", "y_embedder.y_proj.fc2": "caption_projection.linear_2",
        "final_layer.linear": "proj_out",
    }
    for o, d in top.items():
        off[o + ".weight"], off[o + ".bias"] = sd[d + ".weight"], sd[d + ".bias"]
    off["attention_y_norm.weight"] = sd["caption_norm.weight"]
    off["final_layer.scale_shift_table"] = sd["scale_shift_table"]
    layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("transformer_blocks."))
    for i in range(layers):
        b, t = f"blocks.{i}.", f"transformer_blocks.{i}."
        off[b + "scale_shift_table"] = sd[t + "scale_shift_table"]
        off[b + "attn.qkv.weight"] = torch.cat([sd[t + f"attn1.to_{x}.weight"] for x in "qkv"])
        off[b + "attn.q_norm.weight"] = sd[t + "attn1.norm_q.weight"]
        off[b + "attn.k_norm.weight"] = sd[t + "attn1.norm_k.weight"]
        off[b + "attn.proj.weight"] = sd[t + "attn1.to_out.0.weight"]
        off[b + "attn.proj.bias"] = sd[t + "attn1.to_out.0.bias"]
        off[b + "cross_attn.q_linear.weight"] = sd[t + "attn2.to_q.weight"]
        off[b + "cross_attn.q_linear.bias"] = sd[t + "attn2.to_q.bias"]
        off[b + "cross_attn.kv_linear.weight"] = torch.cat([sd[t + "attn2.to_k.weight"], sd[t + "attn2.to_v.weight"]])
        off[b + "cross_attn.kv_linear.bias"] = torch.cat([sd[t + "attn2.to_k.bias"], sd[t + "attn2.to_v.bias"]])
        off[b + "cross_attn.q_norm.weight"] = sd[t + "attn2.norm_q.weight"]
        off[b + "cross_attn.k_norm.weight"] = sd[t + "attn2.norm_k.weight"]
        off[b + "cross_attn.proj.weight"] = sd[t + "attn2.to_out.0.weight"]
        off[b + "cross_attn.proj.bias"] = sd[t + "attn2.to_out.0.bias"]
        for o, d in (("inverted_conv.conv", "conv_inverted"), ("depth_conv.conv", "conv_depth")):
            off[b + f"mlp.{o}.weight"], off[b + f"mlp.{o}.bias"] = sd[t + f"ff.{d}.weight"], sd[t + f"ff.{d}.bias"]
        off[b + "mlp.point_conv.conv.weight"] = sd[t + "ff.conv_point.weight"]
        off[b + "mlp.t_conv.weight"] = sd[t + "ff.conv_temp.weight"]
    return off


def with_official_extras(off, cfg):
    """The four training-only tensors the released .pth also holds."""
    out = dict(off)
    out["y_embedder.y_embedding"] = torch.randn(7, cfg.caption_channels)
    out["pos_embed"] = torch.randn(1, 4, cfg.hidden_size)
    out["logvar_linear.weight"] = torch.randn(1, cfg.hidden_size)
    out["logvar_linear.bias"] = torch.randn(1)
    return out


@pytest.fixture(scope="module")
def cfg():
    return tiny_config()


@pytest.fixture(scope="module")
def reference(cfg):
    """diffusers' model with random weights everywhere (the default init leaves some tables trivial)."""
    torch.manual_seed(0)
    model = SanaVideoTransformer3DModel(**diffusers_kwargs(cfg)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return model


@pytest.fixture(scope="module")
def ref_sd(reference):
    return {k: v.detach().clone() for k, v in reference.state_dict().items()}


@pytest.fixture(scope="module")
def saved(reference, tmp_path_factory):
    """Folders written by diffusers' save_pretrained: single file and sharded (small max_shard_size)."""
    root = tmp_path_factory.mktemp("diffusers_saved")
    reference.save_pretrained(root / "single")
    reference.save_pretrained(root / "sharded", max_shard_size=20_000)
    assert (root / "sharded" / ck.SAFETENSORS_INDEX_NAME).is_file()
    return root


def inputs(cfg):
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(1, cfg.in_channels, 3, 4, 6, generator=g)
    caption = torch.randn(1, 5, cfg.caption_channels, generator=g)
    mask = torch.tensor([[True, True, True, False, False]])
    timestep = torch.tensor([637.0])  # an integer: the official floor is then a no-op, so only eps numerics differ
    return latents, caption, mask, timestep


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def assert_parity(model, reference, cfg):
    latents, caption, mask, timestep = inputs(cfg)
    with torch.no_grad():
        want = reference(latents, caption, timestep, encoder_attention_mask=mask.long()).sample
        got = model(latents, timestep, model.encode_text(caption, mask))
    assert got.shape == want.shape
    assert rel_err(got, want) <= 1e-5


# ------------------------------------------------------------------------------------------------ shapes, key map
@pytest.mark.parametrize("name", ["tiny", "480p", "720p"])
def test_expected_shapes_equal_diffusers_state_dict(name):
    cfg = tiny_config() if name == "tiny" else PRESETS[name]
    with torch.device("meta"):
        model = SanaVideoTransformer3DModel(**diffusers_kwargs(cfg))
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = ck.expected_diffusers_shapes(cfg)
    assert got == want
    assert list(got) == list(want)  # module order decides how save_pretrained splits shards


def test_expected_shapes_agree_with_model_package(cfg):
    convert = pytest.importorskip("core.model.convert")
    for c in (cfg, PRESETS["480p"], PRESETS["720p"]):
        assert convert.expected_diffusers_shapes(c) == ck.expected_diffusers_shapes(c)


def test_official_to_diffusers_and_back(ref_sd, cfg):
    official = official_from_diffusers(ref_sd)
    mapped = ck.official_to_diffusers(with_official_extras(official, cfg))
    assert set(mapped) == set(ref_sd)
    for k, v in ref_sd.items():
        assert torch.equal(mapped[k], v), k
    back = ck.diffusers_to_official(ref_sd)
    assert set(back) == set(official)
    for k, v in official.items():
        assert torch.equal(back[k], v), k


def test_official_unknown_key_is_named(ref_sd):
    official = official_from_diffusers(ref_sd)
    official["blocks.0.attn.mystery.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"blocks\.0\.attn\.mystery\.weight"):
        ck.official_to_diffusers(official)


def test_diffusers_to_official_rejects_unknown_and_partial(ref_sd):
    with pytest.raises(CheckpointError, match="norm_out.weight"):
        ck.diffusers_to_official({**ref_sd, "norm_out.weight": torch.zeros(3)})
    partial = {k: v for k, v in ref_sd.items() if k != "transformer_blocks.1.attn1.to_v.weight"}
    with pytest.raises(CheckpointError, match=r"blocks\.1\.attn\.qkv\.weight"):
        ck.diffusers_to_official(partial)


@pytest.mark.parametrize("name", ["480p", "720p"])
def test_infer_config_finds_released_presets(name):
    shapes = ck.expected_diffusers_shapes(PRESETS[name])
    assert ck.infer_config(shapes) == PRESETS[name]


# ------------------------------------------------------------------------------------------------ readers
@pytest.mark.parametrize("layout", ["single", "sharded"])
def test_read_folder_written_by_diffusers(saved, ref_sd, cfg, layout):
    read_cfg, sd = ck.read_diffusers_transformer(saved / layout)
    with sd:
        assert read_cfg == cfg
        assert sd.shapes() == {k: tuple(v.shape) for k, v in ref_sd.items()}
        for k, v in ref_sd.items():
            assert torch.equal(sd[k], v), k


def test_pipeline_folder_with_transformer_subfolder(saved, tmp_path, cfg):
    shutil.copytree(saved / "single", tmp_path / "pipe" / "transformer")
    (tmp_path / "pipe" / "model_index.json").write_text("{}")
    read_cfg, sd = ck.read_diffusers_transformer(tmp_path / "pipe")
    sd.close()
    assert read_cfg == cfg


def test_official_safetensors_reads_row_slices(ref_sd, tmp_path):
    save_file({k: v.contiguous() for k, v in official_from_diffusers(ref_sd).items()}, str(tmp_path / "o.safetensors"))
    with ck.read_safetensors_file(tmp_path / "o.safetensors") as sd:
        assert sd.shapes() == {k: tuple(v.shape) for k, v in ref_sd.items()}
        for k, v in ref_sd.items():
            assert torch.equal(sd[k], v), k


# ------------------------------------------------------------------------------------------------ loader parity
@pytest.mark.parametrize("layout", ["single", "sharded"])
def test_load_diffusers_folder_matches_diffusers_forward(saved, reference, cfg, layout):
    model = ck.load_transformer(saved / layout, numerics="diffusers")
    assert model.cfg.linear_attn_eps == 1e-15
    assert_parity(model, reference, cfg)


def test_load_official_pth_matches_diffusers_forward(ref_sd, reference, cfg, tmp_path):
    path = tmp_path / "SANA_Video_tiny.pth"
    torch.save({"state_dict": with_official_extras(official_from_diffusers(ref_sd), cfg)}, path)
    model = ck.load_transformer(path, preset=cfg, numerics="diffusers")
    assert_parity(model, reference, cfg)
    assert ck.load_transformer(path, preset=cfg).cfg.linear_attn_eps == 1e-8  # official numerics by default


def test_load_official_safetensors_matches_diffusers_forward(ref_sd, reference, cfg, tmp_path):
    save_file({k: v.contiguous() for k, v in official_from_diffusers(ref_sd).items()}, str(tmp_path / "o.safetensors"))
    model = ck.load_transformer(tmp_path / "o.safetensors", preset=cfg, numerics="diffusers")
    assert_parity(model, reference, cfg)


def test_load_casts_to_requested_dtype(saved):
    model = ck.load_transformer(saved / "single", dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_pth_config_inferred_from_shapes(tmp_path):
    cfg = tiny_config(num_attention_heads=2, attention_head_dim=112, num_cross_attention_heads=2,
                      cross_attention_head_dim=112, cross_attention_dim=224, num_layers=1, mlp_ratio=1.0)
    torch.manual_seed(3)
    sd = {k: torch.randn(s) for k, s in ck.expected_diffusers_shapes(cfg).items()}
    ck.write_official_pth(tmp_path / "m.pth", sd)
    _, _, numerics = ck.read_checkpoint(tmp_path / "m.pth")
    assert numerics == "official"
    model = ck.load_transformer(tmp_path / "m.pth")
    for k, v in sd.items():
        assert torch.equal(model.diffusers_state_dict()[k], v), k
    assert model.cfg.num_layers == 1 and model.cfg.num_attention_heads == 2


def test_tiny_pth_without_preset_asks_for_one(ref_sd, tmp_path):
    ck.write_official_pth(tmp_path / "tiny.pth", ref_sd)
    with pytest.raises(CheckpointError, match="pass a preset"):
        ck.load_transformer(tmp_path / "tiny.pth")


# ------------------------------------------------------------------------------------------------ writers
def test_written_single_folder_is_what_diffusers_writes(saved, ref_sd, cfg, tmp_path):
    ck.write_diffusers_transformer(tmp_path / "t", cfg, ref_sd)
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["config.json", ck.SAFETENSORS_NAME]
    mine = json.loads((tmp_path / "t" / "config.json").read_text())
    theirs = json.loads((saved / "single" / "config.json").read_text())
    assert {k: v for k, v in mine.items() if k not in INERT} == {k: v for k, v in theirs.items() if k not in INERT}
    assert (tmp_path / "t" / ck.SAFETENSORS_NAME).read_bytes() == (saved / "single" / ck.SAFETENSORS_NAME).read_bytes()
    with safe_open(str(tmp_path / "t" / ck.SAFETENSORS_NAME), "pt") as f:
        assert f.metadata() == {"format": "pt"}
    loaded = SanaVideoTransformer3DModel.from_pretrained(tmp_path / "t")
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, ref_sd[k]), k


def test_written_sharded_folder_is_what_diffusers_writes(saved, ref_sd, cfg, tmp_path):
    ck.write_diffusers_transformer(tmp_path / "t", cfg, ref_sd, max_shard_bytes=20_000)
    mine = sorted(p.name for p in (tmp_path / "t").iterdir())
    assert mine == sorted(p.name for p in (saved / "sharded").iterdir())
    for name in mine:
        if name.endswith(".safetensors") or name.endswith(".index.json"):
            assert (tmp_path / "t" / name).read_bytes() == (saved / "sharded" / name).read_bytes(), name
    loaded = SanaVideoTransformer3DModel.from_pretrained(tmp_path / "t")
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, ref_sd[k]), k


def test_rewrite_switches_layout_and_leaves_no_temporaries(ref_sd, cfg, tmp_path):
    folder = tmp_path / "t"
    ck.write_diffusers_transformer(folder, cfg, ref_sd, max_shard_bytes=20_000)
    ck.write_diffusers_transformer(folder, cfg, ref_sd)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", ck.SAFETENSORS_NAME]
    ck.write_diffusers_transformer(folder, cfg, ref_sd, max_shard_bytes=20_000)
    assert not (folder / ck.SAFETENSORS_NAME).exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
    read_cfg, sd = ck.read_diffusers_transformer(folder)
    with sd:
        assert read_cfg == cfg and torch.equal(sd["proj_out.weight"], ref_sd["proj_out.weight"])


def test_writer_refuses_wrong_state_dict_and_keeps_old_files(ref_sd, cfg, tmp_path):
    ck.write_diffusers_transformer(tmp_path / "t", cfg, ref_sd)
    before = (tmp_path / "t" / ck.SAFETENSORS_NAME).read_bytes()
    bad = {k: v for k, v in ref_sd.items() if k != "proj_out.bias"}
    with pytest.raises(CheckpointError, match="proj_out.bias"):
        ck.write_diffusers_transformer(tmp_path / "t", cfg, bad)
    assert (tmp_path / "t" / ck.SAFETENSORS_NAME).read_bytes() == before


def test_official_pth_format(ref_sd, tmp_path):
    ck.write_official_pth(tmp_path / "m.pth", ref_sd)
    obj = torch.load(tmp_path / "m.pth", weights_only=True)
    assert list(obj) == ["state_dict"]
    assert set(obj["state_dict"]) == set(official_from_diffusers(ref_sd))
    mapped = ck.read_official_pth(tmp_path / "m.pth")
    for k, v in ref_sd.items():
        assert torch.equal(mapped[k], v), k


# ------------------------------------------------------------------------------------------------ bad checkpoints
@pytest.fixture()
def model_never_built(monkeypatch):
    """Validation must fail before the model is built or anything is assigned."""
    import core.model

    class Forbidden:
        def __init__(self, *a, **k):
            raise AssertionError("model built for an invalid checkpoint")

    monkeypatch.setattr(core.model, "SanaVideoTransformer", Forbidden)


def _single_folder(tmp_path, cfg, sd):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "config.json").write_text(ck.diffusers_config_json(cfg))
    save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / ck.SAFETENSORS_NAME))
    return folder


@pytest.mark.parametrize("problem, pattern", [
    ("missing", r"1 missing: transformer_blocks\.1\.ff\.conv_temp\.weight"),
    ("unexpected", r"1 unexpected: transformer_blocks\.2\.ff\.conv_temp\.weight"),
    ("misshapen", r"1 misshapen: caption_norm\.weight \(31,\) \(expected \(32,\)\)"),
    ("integer", r"not floating point: caption_norm\.weight"),
])
def test_bad_tensors_listed_in_one_error(ref_sd, cfg, tmp_path, model_never_built, problem, pattern):
    sd = dict(ref_sd)
    if problem == "missing":
        del sd["transformer_blocks.1.ff.conv_temp.weight"]
    elif problem == "unexpected":
        sd["transformer_blocks.2.ff.conv_temp.weight"] = torch.zeros(2)
    elif problem == "misshapen":
        sd["caption_norm.weight"] = torch.zeros(31)
    else:
        sd["caption_norm.weight"] = torch.zeros(32, dtype=torch.int32)
    with pytest.raises(CheckpointError, match=pattern):
        ck.load_transformer(_single_folder(tmp_path, cfg, sd))


def test_several_problems_reported_together(ref_sd, cfg, tmp_path, model_never_built):
    sd = dict(ref_sd)
    del sd["proj_out.bias"]
    sd["caption_norm.weight"] = torch.zeros(5)
    with pytest.raises(CheckpointError, match=r"missing: proj_out\.bias; 1 unexpected|missing: proj_out\.bias.*misshapen"):
        ck.load_transformer(_single_folder(tmp_path, cfg, sd))


def test_config_that_does_not_match_weights(saved, cfg, tmp_path, model_never_built):
    folder = tmp_path / "t"
    shutil.copytree(saved / "single", folder)
    data = json.loads((folder / "config.json").read_text())
    data["num_layers"] = 3
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"missing: transformer_blocks\.2\."):
        ck.load_transformer(folder)


@pytest.mark.parametrize("content, pattern", [
    ("{not json", "not valid JSON"),
    ('{"num_layers": 2, "made_up_field": 1}', "made_up_field"),
    ('{"_class_name": "AutoencoderKLWan"}', "not a SanaVideoTransformer3DModel"),
    ('{"num_attention_heads": 3}', "cross_attention_dim"),
])
def test_invalid_config_json(saved, tmp_path, content, pattern):
    folder = tmp_path / "t"
    shutil.copytree(saved / "single", folder)
    (folder / "config.json").write_text(content)
    with pytest.raises(CheckpointError, match=pattern):
        ck.load_transformer(folder)


def test_missing_config_json(saved, tmp_path):
    folder = tmp_path / "t"
    shutil.copytree(saved / "single", folder)
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config not found"):
        ck.read_diffusers_transformer(folder)


def test_truncated_safetensors_names_the_file(saved, tmp_path):
    folder = tmp_path / "t"
    shutil.copytree(saved / "single", folder)
    weights = folder / ck.SAFETENSORS_NAME
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=rf"{ck.SAFETENSORS_NAME}.*truncated or corrupt"):
        ck.load_transformer(folder)


def test_truncated_shard_names_the_shard(saved, tmp_path):
    folder = tmp_path / "t"
    shutil.copytree(saved / "sharded", folder)
    shard = sorted(folder.glob("diffusion_pytorch_model-*.safetensors"))[1]
    shard.write_bytes(shard.read_bytes()[:50])
    with pytest.raises(CheckpointError, match=shard.name):
        ck.load_transformer(folder)


def test_missing_shard_is_named(saved, tmp_path):
    folder = tmp_path / "t"
    shutil.copytree(saved / "sharded", folder)
    shard = sorted(folder.glob("diffusion_pytorch_model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"missing.*{shard.name}"):
        ck.load_transformer(folder)


def test_index_that_misplaces_a_key(saved, tmp_path):
    folder = tmp_path / "t"
    shutil.copytree(saved / "sharded", folder)
    index_path = folder / ck.SAFETENSORS_INDEX_NAME
    index = json.loads(index_path.read_text())
    names = sorted(set(index["weight_map"].values()))
    key = next(k for k, v in index["weight_map"].items() if v == names[0])
    index["weight_map"][key] = names[1]
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        ck.load_transformer(folder)


def test_index_pointing_outside_the_folder(saved, tmp_path):
    folder = tmp_path / "t"
    shutil.copytree(saved / "sharded", folder)
    index_path = folder / ck.SAFETENSORS_INDEX_NAME
    index = json.loads(index_path.read_text())
    index["weight_map"]["proj_out.bias"] = "../evil.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="outside its folder"):
        ck.read_diffusers_transformer(folder)


def test_bin_is_refused(saved, tmp_path):
    folder = tmp_path / "t"
    folder.mkdir()
    shutil.copy(saved / "single" / "config.json", folder / "config.json")
    (folder / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(CheckpointError, match="pickle"):
        ck.load_transformer(folder)
    with pytest.raises(CheckpointError, match="pickle"):
        ck.load_transformer(folder / "diffusion_pytorch_model.bin")


class NotATensor:
    pass


def test_pth_with_python_objects_is_refused(ref_sd, tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": official_from_diffusers(ref_sd), "extra": NotATensor()}, path)
    with pytest.raises(CheckpointError, match="evil.pth"):
        ck.load_transformer(path, preset=tiny_config())


def test_truncated_pth_names_the_file(ref_sd, tmp_path):
    path = tmp_path / "cut.pth"
    ck.write_official_pth(path, ref_sd)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cut.pth"):
        ck.load_transformer(path, preset=tiny_config())


def test_missing_path(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        ck.load_transformer(tmp_path / "nothing_here")


def test_validation_reads_no_tensor_data(saved, cfg, monkeypatch):
    """Keys, shapes and dtypes come from the safetensors headers; tensor data is read only when asked for."""
    reads = []
    original = ck._SafetensorsFiles.tensor
    monkeypatch.setattr(ck._SafetensorsFiles, "tensor", lambda self, key, part: reads.append(key) or original(
        self, key, part))
    for layout in ("single", "sharded"):
        _, sd = ck.read_diffusers_transformer(saved / layout)
        with sd:
            ck.validate_state_dict(sd, cfg)
            assert "proj_out.weight" in sd and "nope" not in sd and len(sd) == len(ck.expected_diffusers_shapes(cfg))
    assert reads == []


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["single", "sharded", "official"])
def test_load_straight_to_cuda(saved, ref_sd, reference, cfg, tmp_path, layout):
    if layout == "official":
        source = tmp_path / "o.safetensors"
        save_file({k: v.contiguous() for k, v in official_from_diffusers(ref_sd).items()}, str(source))
    else:
        source = saved / layout
    model = ck.load_transformer(source, device="cuda", dtype=torch.float32, numerics="diffusers", preset=cfg)
    assert {p.device.type for p in model.parameters()} == {"cuda"}
    latents, caption, mask, timestep = inputs(cfg)
    with torch.no_grad():
        want = reference(latents, caption, timestep, encoder_attention_mask=mask.long()).sample
        got = model(latents.cuda(), timestep.cuda(), model.encode_text(caption.cuda(), mask.cuda())).cpu()
    assert rel_err(got, want) <= 1e-4  # GPU reductions differ from the CPU reference in order
