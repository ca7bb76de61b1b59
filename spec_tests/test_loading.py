"""Checkpoint layouts fdbert reads besides a single model.safetensors: pytorch_model.bin (with torch),
sharded safetensors with an index, TF-era LayerNorm names (gamma/beta), prefixed task checkpoints.
Each loaded model must equal the one loaded from the plain safetensors file, bit for bit."""

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import fdbert
from subproc import run_python


def _outputs(model):
    ids = np.arange(2, 26).reshape(3, 8) % 50
    return model(ids)


def _copy_without_weights(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors*", "pytorch_model*"))
    return dst


def test_pytorch_model_bin_loads_like_safetensors(tiny_hf_models, tmp_path):
    import torch
    model, src = tiny_hf_models["bert"]
    d = _copy_without_weights(src, tmp_path / "bin")
    torch.save(model.state_dict(), d / "pytorch_model.bin")
    np.testing.assert_array_equal(_outputs(fdbert.from_pretrained(d)), _outputs(fdbert.from_pretrained(src)))


def test_pytorch_model_bin_without_torch_says_how_to_fix(tiny_hf_models, tmp_path):
    import torch
    model, src = tiny_hf_models["distilbert"]
    d = _copy_without_weights(src, tmp_path / "bin")
    torch.save(model.state_dict(), d / "pytorch_model.bin")
    blocker = f"""
        import sys
        sys.modules["torch"] = None          # import torch -> ImportError
        import fdbert
        try:
            fdbert.from_pretrained({str(d)!r})
        except fdbert.ModelNotFoundError as e:
            print(e)
    """
    r = run_python(blocker)
    assert r.returncode == 0, r.stderr
    assert "pytorch_model.bin" in r.stdout and "needs torch" in r.stdout and "safetensors" in r.stdout


def test_sharded_safetensors_with_an_index(tiny_hf_models, tmp_path):
    _, src = tiny_hf_models["distilbert"]
    d = _copy_without_weights(src, tmp_path / "sharded")
    tensors = load_file(str(src / "model.safetensors"))
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(d / shard))
    index = {"weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    np.testing.assert_array_equal(_outputs(fdbert.from_pretrained(d)), _outputs(fdbert.from_pretrained(src)))

    (d / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(fdbert.ModelNotFoundError, match="shard model-00002-of-00002.safetensors"):
        fdbert.from_pretrained(d)


def test_tf_era_layer_norm_names_gamma_beta(tiny_hf_models, tmp_path):
    _, src = tiny_hf_models["bert"]
    d = _copy_without_weights(src, tmp_path / "gamma")
    tensors = load_file(str(src / "model.safetensors"))
    renamed = {}
    for k, v in tensors.items():
        if "LayerNorm." in k:
            k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        renamed[k] = v
    assert any(k.endswith("gamma") for k in renamed)
    save_file(renamed, str(d / "model.safetensors"))
    np.testing.assert_array_equal(_outputs(fdbert.from_pretrained(d)), _outputs(fdbert.from_pretrained(src)))


@pytest.mark.parametrize("name", ["distilbert-qa", "bert-cls"])
def test_task_checkpoints_load_their_base_model_and_heads(tiny_hf_models, name):
    model = fdbert.from_pretrained(tiny_hf_models[name][1])
    assert model.unused_tensors == []
    heads = model.weights.heads
    assert (heads.qa_outputs is not None) == name.endswith("qa")
    assert (heads.classifier is not None) == name.endswith("cls")
