"""Loading SAM/MobileSAM/reference WSI-SAM files and our own format."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import wsisam
from conftest import DEVICE, assert_python_prints, make_model, random_pair


def sam_layout(state: dict) -> dict:
    """Our state dict laid out as SAM's/MobileSAM's published files: image_encoder.*,
    prompt_encoder.*, mask_decoder.* (SAM's decoder keys only, once)."""
    out = {}
    for k, v in state.items():
        if k.startswith("mask_decoder_hr."):
            rest = k[len("mask_decoder_hr."):]
            if not rest.startswith(wsisam.modeling.WSI_PARAM_PREFIXES):
                out["mask_decoder." + rest] = v
        elif not k.startswith("mask_decoder_lr."):
            out[k] = v
    return out


def sam_style_state(model: wsisam.WsiSam, with_classifier: bool = False) -> dict:
    """What SAM's/MobileSAM's published files hold: image_encoder.*, prompt_encoder.*, mask_decoder.*."""
    state = {k: v.clone() for k, v in sam_layout(model.state_dict()).items()}
    if with_classifier:  # MobileSAM keeps TinyViT's unused classifier
        dim = model.config.encoder.embed_dims[-1]
        state["image_encoder.head.weight"] = torch.randn(1000, dim)
        state["image_encoder.head.bias"] = torch.randn(1000)
        state["image_encoder.norm_head.weight"] = torch.ones(dim)
        state["image_encoder.norm_head.bias"] = torch.zeros(dim)
    return state


def outputs(model, rng_seed=0, boxes=((20.0, 30.0, 120.0, 160.0), (5.0, 5.0, 60.0, 40.0))):
    rng = np.random.default_rng(rng_seed)
    hr, lr = random_pair(rng, model.config.img_size)
    p = wsisam.WsiSamPredictor(model, device=DEVICE)
    p.set_patch_pairs(hr, lr)
    out = p.predict(boxes=np.array(boxes))
    sam, _ = p.predict_sam(boxes=np.array(boxes))
    return out, sam


def test_mobile_sam_file_loads_into_tiny_vit_after_eval(tmp_path):
    src = make_model("vit_tiny_test", seed=1)
    path = tmp_path / "mobile_sam.pt"
    torch.save(sam_style_state(src, with_classifier=True), path)
    # Built (and switched to eval) before its weights arrive: MobileSAM's cached-bias pitfall.
    dst = wsisam.build_wsisam("vit_tiny_test", sam_checkpoint=path).eval()
    for k in ("hf_token", "hf_mlp", "compress_vit_feat", "embedding_encoder", "embedding_maskfeature"):
        getattr(dst.mask_decoder_hr, k).load_state_dict(getattr(src.mask_decoder_hr, k).state_dict())
        getattr(dst.mask_decoder_lr, k).load_state_dict(getattr(src.mask_decoder_lr, k).state_dict())
    (a, sa), (b, sb) = outputs(src), outputs(dst)
    np.testing.assert_array_equal(a.hr_logits, b.hr_logits)
    np.testing.assert_array_equal(sa, sb)


def test_sam_vit_file_fills_both_decoders(tmp_path):
    src = make_model("vit_test", seed=2)
    path = tmp_path / "sam_vit_test.pth"
    torch.save(sam_style_state(src), path)
    dst = wsisam.build_wsisam("vit_test", sam_checkpoint=path)
    for dec in (dst.mask_decoder_hr, dst.mask_decoder_lr):
        torch.testing.assert_close(dec.iou_token.weight, src.mask_decoder_hr.iou_token.weight, rtol=0, atol=0)
    _, sam_a = outputs(src)
    _, sam_b = outputs(dst)
    np.testing.assert_array_equal(sam_a, sam_b)


def test_reference_decoder_files_load(tmp_path):
    src = make_model("vit_test", seed=4)
    sam_path, hr_path, lr_path = tmp_path / "sam.pth", tmp_path / "hr.pth", tmp_path / "lr.pth"
    torch.save(sam_style_state(src), sam_path)
    torch.save({"model": src.mask_decoder_hr.state_dict(), "epoch": 19}, hr_path)
    torch.save({"model": {"module." + k: v for k, v in src.mask_decoder_lr.state_dict().items()}}, lr_path)
    dst = wsisam.build_wsisam("vit_test", sam_checkpoint=sam_path, hr_decoder_checkpoint=hr_path,
                              lr_decoder_checkpoint=lr_path)
    assert dst.config.token_aggregation == "sum"  # the reference weights need the sum
    src_sum = wsisam.build_wsisam("vit_test", token_aggregation="sum")
    src_sum.load_state_dict(src.state_dict())
    a, _ = outputs(src_sum.eval())
    b, _ = outputs(dst)
    np.testing.assert_array_equal(a.hr_logits, b.hr_logits)
    np.testing.assert_array_equal(a.lr_logits, b.lr_logits)


def test_mismatched_decoder_file_names_missing_and_unexpected_keys(tmp_path):
    src = make_model("vit_test")
    state = src.mask_decoder_hr.state_dict()
    state.pop("hf_token.weight")
    state["hq_token.weight"] = torch.zeros(1, 64)
    path = tmp_path / "bad.pth"
    torch.save({"model": state}, path)
    with pytest.raises(wsisam.CheckpointError) as e:
        wsisam.load_reference_decoder(src.mask_decoder_hr, path)
    msg = str(e.value)
    assert "bad.pth" in msg and "missing keys: hf_token.weight" in msg and "unexpected keys: hq_token.weight" in msg


def test_wrong_backbone_checkpoint_reports_shape_mismatch(tmp_path):
    path = tmp_path / "sam_b.pth"
    torch.save(sam_style_state(make_model("vit_test")), path)
    with pytest.raises(wsisam.CheckpointError, match="sam_b.pth.*(missing keys|unexpected keys)"):
        wsisam.build_wsisam("vit_tiny_test", sam_checkpoint=path)


def test_decoder_file_without_model_key(tmp_path):
    path = tmp_path / "plain.pth"
    torch.save(make_model("vit_test").mask_decoder_hr.state_dict(), path)
    with pytest.raises(wsisam.CheckpointError, match="no 'model' state dict"):
        wsisam.load_reference_decoder(make_model("vit_test").mask_decoder_hr, path)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": make_model("vit_test").mask_decoder_hr}, path)  # a module object, not weights
    with pytest.raises(wsisam.CheckpointError, match="weights-only"):
        wsisam.load_reference_decoder(make_model("vit_test").mask_decoder_hr, path)


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(wsisam.CheckpointError, match="nope.pt not found"):
        wsisam.build_wsisam("vit_test", sam_checkpoint=tmp_path / "nope.pt")


@pytest.mark.parametrize("name", ["vit_test", "vit_tiny_test"])
def test_own_format_round_trips_to_identical_outputs(tmp_path, name):
    src = make_model(name, seed=7, token_aggregation="sum", add_sam_logits=False)
    path = wsisam.save_wsisam(src, tmp_path / "model.safetensors")
    dst = wsisam.build_wsisam(None, checkpoint=path)
    assert dst.config == src.config
    (a, sa), (b, sb) = outputs(src), outputs(dst)
    np.testing.assert_array_equal(a.hr_logits, b.hr_logits)
    np.testing.assert_array_equal(a.lr_logits, b.lr_logits)
    np.testing.assert_array_equal(a.iou, b.iou)
    np.testing.assert_array_equal(sa, sb)
    with pytest.raises(ValueError, match="holds a .* model, not 'vit_b'"):
        wsisam.build_wsisam("vit_b", checkpoint=path)


def test_foreign_safetensors_file_is_rejected(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(wsisam.CheckpointError, match="not a wsisam-engine model"):
        wsisam.build_wsisam(None, checkpoint=path)


# ---------------------------------------------------------------- the published files' key names
# Built independently of our modules: SAM's from segment-anything's own builders, MobileSAM's and the
# reference decoders' from manifests written from their public architectures (tests/data/).
DATA = Path(__file__).parent / "data"


def manifest(name: str) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v) for k, v in json.loads((DATA / name).read_text()).items()}


def zeros(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {k: torch.zeros(s, dtype=torch.long if k.endswith("num_batches_tracked") else torch.float32)
            for k, s in shapes.items()}


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h"])
def test_sam_files_key_names_and_shapes_load(name):
    """A state dict with the key names and shapes of SAM's published sam_vit_{b,l,h} files (from
    segment-anything's own builder, on the meta device) fits our model exactly."""
    from segment_anything import sam_model_registry

    with torch.device("meta"):
        sam_state = sam_model_registry[name]().state_dict()
        model = wsisam.WsiSam(wsisam.config.get_config(name))
    wsisam.checkpoint.load_sam_state(model, sam_state, Path(f"sam_{name}.pth"))  # raises on any mismatch
    ours = {k for k in model.state_dict() if wsisam.checkpoint._is_sam_key(k)}
    mapped = set(wsisam.checkpoint._sam_state(sam_state))
    assert mapped == ours  # every SAM part of ours filled, nothing of SAM's left over


def test_mobile_sam_manifest_loads_into_vit_tiny(tmp_path):
    path = tmp_path / "mobile_sam.pt"
    torch.save(zeros(manifest("mobile_sam.json")), path)
    model = wsisam.build_wsisam("vit_tiny", sam_checkpoint=path)
    sam_params = {k: v for k, v in model.state_dict().items()
                  if wsisam.checkpoint._is_sam_key(k) and v.is_floating_point()}
    assert sam_params and all(not v.any() for v in sam_params.values())  # every SAM weight came from the file


def test_reference_decoder_manifest_loads_into_vit_tiny_decoders(tmp_path):
    state = zeros(manifest("wsisam_decoder_vit_t.json"))
    model = wsisam.build_wsisam("vit_tiny")
    for decoder, file_state in ((model.mask_decoder_hr, state), (model.mask_decoder_lr, {
            "module." + k: v for k, v in state.items()})):  # DDP-saved files prefix "module."
        path = tmp_path / "decoder.pth"
        torch.save({"model": file_state, "epoch": 3}, path)
        wsisam.load_reference_decoder(decoder, path)
        assert all(not v.any() for v in decoder.state_dict().values())


def test_manifests_are_not_vacuous(tmp_path):
    """One key renamed or one shape changed in a manifest is refused."""
    shapes = manifest("wsisam_decoder_vit_t.json")
    renamed = {("hq_token.weight" if k == "hf_token.weight" else k): v for k, v in shapes.items()}
    reshaped = {**shapes, "compress_vit_feat.0.weight": (768, 256, 2, 2)}  # a vit_b decoder
    decoder = wsisam.build_wsisam("vit_tiny").mask_decoder_hr
    for bad in (renamed, reshaped):
        path = tmp_path / "bad.pth"
        torch.save({"model": zeros(bad)}, path)
        with pytest.raises(wsisam.CheckpointError, match="does not fit"):
            wsisam.load_reference_decoder(decoder, path)


# ---------------------------------------------------------------- weights mapped from the file, not copied
def mapped_file(t: torch.Tensor) -> str | None:
    """The file whose memory map holds ``t``'s data (/proc/self/maps); None for anonymous memory."""
    ptr = t.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        low, high = (int(x, 16) for x in fields[0].split("-"))
        if low <= ptr < high:
            return fields[5] if len(fields) > 5 else None
    return None


def written_kib(path) -> int:
    """How much of this process's mappings of ``path`` has been written to (private copies of its pages)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and not fields[0].endswith(":"):
            inside = len(fields) > 5 and fields[5] == str(path)
        elif inside and fields[0] == "Private_Dirty:":
            total += int(fields[1])
    return total


def copied_load(path) -> wsisam.WsiSam:
    """How files were loaded before they were mapped: a model initialised, then the file's values copied in."""
    from safetensors.torch import load_file

    model = wsisam.WsiSam(wsisam.checkpoint.read_config(path))
    model.load_state_dict(load_file(str(path)))
    return model.eval()


def tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and every buffer, those not stored in files included."""
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def assert_same_tensors(got: torch.nn.Module, want: torch.nn.Module) -> None:
    a, b = tensors(got), tensors(want)
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k].dtype, a[k].device, a[k].requires_grad) == (b[k].dtype, b[k].device, b[k].requires_grad), k
        assert torch.equal(a[k], b[k]), k


needs_proc_maps = pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/self/maps (Linux)")


@needs_proc_maps
def test_model_actor_maps_the_demo_model_file_and_matches_a_copied_load():
    from engine.distributed.model_spec import DEMO_MODEL, ModelSpec

    model = ModelSpec.demo().segmenter("cpu").predictor.model  # what a model actor holds
    reference = copied_load(DEMO_MODEL)
    assert_same_tensors(model, reference)
    largest = max(model.parameters(), key=torch.Tensor.numel)
    assert mapped_file(largest) == str(DEMO_MODEL), "the weights were copied out of the file"
    (a, sa), (b, sb) = outputs(reference), outputs(model)
    np.testing.assert_array_equal(a.hr_logits, b.hr_logits)
    np.testing.assert_array_equal(a.lr_logits, b.lr_logits)
    np.testing.assert_array_equal(sa, sb)
    assert written_kib(DEMO_MODEL) == 0, "segmenting wrote to the weights: their pages were copied"


@needs_proc_maps
def test_sam_and_decoder_files_are_mapped_privately_and_decoders_share_no_memory(tmp_path):
    src = make_model("vit_test", seed=4, token_aggregation="sum")
    sam_path, hr_path, lr_path = tmp_path / "sam.pth", tmp_path / "hr.pth", tmp_path / "lr.pth"
    torch.save(sam_style_state(src), sam_path)
    torch.save({"model": src.mask_decoder_hr.state_dict()}, hr_path)
    torch.save({"model": src.mask_decoder_lr.state_dict()}, lr_path)
    full = wsisam.build_wsisam("vit_test", sam_checkpoint=sam_path, hr_decoder_checkpoint=hr_path,
                               lr_decoder_checkpoint=lr_path)
    assert_same_tensors(full, src)
    assert mapped_file(full.image_encoder.patch_embed.proj.weight) == str(sam_path)
    assert mapped_file(full.mask_decoder_lr.hf_mlp.layers[0].weight) == str(lr_path)
    # SAM's one decoder fills both WSI decoders: training one must leave the other (and the file) alone.
    sam_only = wsisam.build_wsisam("vit_test", sam_checkpoint=sam_path)
    hr, lr = sam_only.mask_decoder_hr.iou_token.weight, sam_only.mask_decoder_lr.iou_token.weight
    before = wsisam.checkpoint.file_sha256(sam_path)
    with torch.no_grad():
        hr.add_(1.0)
        sam_only.image_encoder.patch_embed.proj.weight.zero_()
    assert written_kib(sam_path) > 0  # the pages changed are this process's copies
    assert torch.equal(lr, src.mask_decoder_lr.iou_token.weight)
    assert wsisam.checkpoint.file_sha256(sam_path) == before
    assert torch.equal(wsisam.build_wsisam("vit_test", sam_checkpoint=sam_path).image_encoder.patch_embed.proj.weight,
                       src.image_encoder.patch_embed.proj.weight)


def test_model_spec_imports_without_torch():
    """Ray's readers and writers import the actors module (and ModelSpec) but never torch."""
    code = ("import sys\nfrom engine.distributed.model_spec import ModelSpec\n"
            "assert ModelSpec.demo().is_demo\nprint('TORCH', 'torch' in sys.modules)\n")
    assert_python_prints(code, "TORCH False")


def test_a_model_process_never_imports_torchvision_yet_segment_anything_works_whole():
    """A model actor builds its segmenter from ``wsisam`` and SAM's model classes only: no
    torchvision (1.3 s of its start), which segment_anything's package ``__init__`` imports for
    SAM's predictor. In the same process, segment_anything's whole API still imports and works,
    and its model classes are the ones WSI-SAM was built from."""
    code = ("import sys\nfrom engine.distributed.model_spec import ModelSpec\n"
            "seg = ModelSpec.demo().segmenter('cpu')\n"
            "print('TORCHVISION', 'torchvision' in sys.modules)\n"
            "from segment_anything import SamPredictor, sam_model_registry\n"
            "import segment_anything.modeling as m, wsisam\n"
            "sam = sam_model_registry['vit_b']()\n"
            "p = SamPredictor(sam)\n"
            "print('WHOLE', type(sam.image_encoder) is m.ImageEncoderViT, 'torchvision' in sys.modules,\n"
            "      isinstance(wsisam.build_wsisam('vit_test').mask_decoder_hr, m.MaskDecoder))\n")
    assert_python_prints(code, "TORCHVISION False", "WHOLE True True True", timeout=300)


@pytest.mark.slow
def test_actors_module_imports_without_torch():
    """Ray's reader and model processes import the actors module first: without torch, and without
    the stitching stack (ome-zarr, geopandas), which only writer processes load. A writer process
    never loads the slide reader's stack (tiatoolbox, torch): readers send it the QC thumbnail."""
    code = ("import sys, engine.distributed.actors as actors\n"
            "print('HEAVY', sorted(m for m in ('torch', 'ome_zarr', 'geopandas') if m in sys.modules))\n"
            "actors.SlideWriterActor()\n"
            "print('WRITER', sorted(m for m in ('torch', 'tiatoolbox', 'geopandas') if m in sys.modules))\n")
    assert_python_prints(code, "HEAVY []", "WRITER ['geopandas']")


def test_saved_model_file_has_the_usual_permissions(tmp_path):
    """Others on the machine may read a saved model as they may read any new file (the umask)."""
    import os
    import stat

    umask = os.umask(0o022)
    try:
        path = wsisam.save_wsisam(make_model("vit_test", seed=0), tmp_path / "m.safetensors")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary left
