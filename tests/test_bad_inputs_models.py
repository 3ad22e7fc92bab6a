"""Bad-input catalogue, model options and detector options: each refused before Ray starts, with
exit 2, a message naming the input and the problem, and a finished output folder left untouched.

CASES: (case_id, argv suffix (a callable of the files of tests/test_model_inputs.write_model_files),
expected exit code, message fragments).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import record_case, tree_hashes
from engine.cli import main
from test_model_inputs import write_model_files


def _p(f):  # prompts
    return ["--prompts", f["prompts"]]


def _ref(f, name="vit_test"):  # SAM file plus both reference decoders
    return ["--sam-checkpoint", f[f"sam_{name}"], "--hr-decoder", f[f"hr_{name}"], "--lr-decoder", f[f"lr_{name}"]]


CASES = [
    ("sam-file-of-another-backbone", lambda f: [*_p(f), "--backbone", "vit_tiny_test", *_ref(f)], 2,
     ["sam_vit_test.pth", "holds a 'vit_test' model", "backbone 'vit_tiny_test'"]),
    ("hr-decoder-without-lr-decoder",
     lambda f: [*_p(f), "--sam-checkpoint", f["sam_vit_test"], "--hr-decoder", f["hr_vit_test"]], 2,
     ["--hr-decoder", "hr_vit_test.pth", "needs lr_decoder_checkpoint (--lr-decoder)"]),
    ("lr-decoder-without-hr-decoder",
     lambda f: [*_p(f), "--sam-checkpoint", f["sam_vit_test"], "--lr-decoder", f["lr_vit_test"]], 2,
     ["--lr-decoder", "lr_vit_test.pth", "needs hr_decoder_checkpoint (--hr-decoder)"]),
    ("decoders-without-sam-checkpoint",
     lambda f: [*_p(f), "--hr-decoder", f["hr_vit_test"], "--lr-decoder", f["lr_vit_test"]], 2,
     ["hr_vit_test.pth", "lr_vit_test.pth", "add sam_checkpoint (--sam-checkpoint)"]),
    ("checkpoint-plus-sam-checkpoint",
     lambda f: [*_p(f), "--checkpoint", f["model"], "--sam-checkpoint", f["sam_vit_test"]], 2,
     ["model.safetensors", "carries its own configuration", "--sam-checkpoint"]),
    ("checkpoint-plus-backbone", lambda f: [*_p(f), "--checkpoint", f["model"], "--backbone", "vit_test"], 2,
     ["model.safetensors", "without backbone (--backbone)"]),
    ("pickle-that-runs-code", lambda f: [*_p(f), "--sam-checkpoint", f["evil"], "--mode", "sam"], 2,
     ["evil.pth", "weights-only"]),
    ("truncated-safetensors", lambda f: [*_p(f), "--checkpoint", f["model_trunc"]], 2,
     ["model_trunc.safetensors", "not a readable safetensors file"]),
    ("torch-file-as-checkpoint", lambda f: [*_p(f), "--checkpoint", f["sam_vit_test"]], 2,
     ["sam_vit_test.pth", "not a readable safetensors file"]),
    ("safetensors-of-another-program", lambda f: [*_p(f), "--checkpoint", f["foreign"]], 2,
     ["foreign.safetensors", "not a wsisam-engine model"]),
    ("decoder-file-with-wrong-keys",
     lambda f: [*_p(f), "--sam-checkpoint", f["sam_vit_test"], "--hr-decoder", f["bad_hr"], "--lr-decoder",
                f["lr_vit_test"]], 2,
     ["bad_hr.pth", "missing keys: hf_token.weight", "unexpected keys: hq_token.weight"]),
    ("decoder-file-without-model-dict",
     lambda f: [*_p(f), "--sam-checkpoint", f["sam_vit_test"], "--hr-decoder", f["plain_hr"], "--lr-decoder",
                f["lr_vit_test"]], 2,
     ["plain_hr.pth", "no 'model' state dict"]),
    ("decoders-of-another-backbone",
     lambda f: [*_p(f), "--sam-checkpoint", f["sam_vit_test"], "--hr-decoder", f["hr_vit_tiny_test"],
                "--lr-decoder", f["lr_vit_tiny_test"]], 2,
     ["hr_vit_tiny_test.pth", "a decoder of a 'vit_test' model", "shape mismatches"]),
    ("sam-file-of-no-known-backbone", lambda f: [*_p(f), "--sam-checkpoint", f["sam_odd"], "--mode", "sam"], 2,
     ["sam_odd.pth", "fits none of the known backbones"]),
    ("sam-weights-alone-in-wsi-mode", lambda f: [*_p(f), "--sam-checkpoint", f["sam_vit_test"]], 2,
     ["sam_vit_test.pth", "random", "--hr-decoder", "--mode sam"]),
    ("backbone-alone", lambda f: [*_p(f), "--backbone", "vit_b"], 2,
     ["'vit_b'", "--backbone", "randomly initialised", "--sam-checkpoint"]),
    ("unknown-backbone", lambda f: [*_p(f), "--backbone", "vit_x", *_ref(f)], 2,
     ["unknown WSI-SAM backbone 'vit_x'", "vit_tiny"]),
    ("missing-model-file", lambda f: [*_p(f), "--checkpoint", str(Path(f["model"]).with_name("nope.safetensors"))],
     2, ["nope.safetensors", "not found"]),
    ("detector-options-not-json", lambda f: ["--detector", "tissue", "--detector-options", "{min_area_um2: 5}"], 2,
     ["--detector-options", "{min_area_um2: 5}", "not valid JSON"]),
    ("detector-options-not-an-object", lambda f: ["--detector", "tissue", "--detector-options", "[5]"], 2,
     ["--detector-options", "JSON object", "[5]"]),
    ("unknown-detector-option",
     lambda f: ["--detector", "tissue", "--detector-options", '{"min_area": 5}'], 2,
     ["detector 'tissue'", "no option 'min_area'", "min_area_um2"]),
    ("detector-option-of-wrong-type",
     lambda f: ["--detector", "tissue", "--detector-options", '{"min_area_um2": null}'], 2,
     ["detector 'tissue'", "bad option value"]),
    ("detector-missing-required-option", lambda f: ["--detector", "mask-to-boxes"], 2,
     ["detector 'mask-to-boxes'", "'mask'"]),
    ("unknown-detector", lambda f: ["--detector", "nuclei"], 2,
     ["unknown detector 'nuclei'", "tissue", "grid-points"]),
    ("detector-options-with-prompts", lambda f: [*_p(f), "--detector-options", '{"min_area_um2": 5}'], 2,
     ["--detector-options needs --detector"]),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_model_files(tmp_path_factory.mktemp("bad_models"))


@pytest.mark.parametrize("case_id, argv, code, fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_model_input(files, capsys, case_id, argv, code, fragments):
    import ray

    out = Path(files["out"])
    before = tree_hashes(out)
    got = main(["segment", files["slide"], "--output", str(out), *argv(files)])
    err = capsys.readouterr().err
    record_case(case_id, got, err)
    assert got == code, err
    line = [x for x in err.splitlines() if x.startswith("wsisam-engine segment: error: ")]
    assert len(line) == 1, err
    for fragment in fragments:
        assert fragment in line[0], (fragment, line[0])
    assert not ray.is_initialized()  # refused before Ray started
    assert tree_hashes(out) == before
    assert not Path(files["code_marker"]).exists()  # no pickled code ran
