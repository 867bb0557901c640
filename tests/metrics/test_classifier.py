"""The shipped Fashion-MNIST classifier: its recorded test accuracy, its input form, and the training function.

Images come from tests/fixtures/fashion-mnist-head (the first 2048 training and 1000 test images of the dataset)."""
import json
from pathlib import Path

import pytest
import torch

from pgdm.classifier import CLASSIFIER_PATH, FashionClassifier, classifier_info, load_classifier
from pgdm.data import load_fashion_mnist, load_fashion_mnist_labels, to_model_range

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "fashion-mnist-head"


def test_the_asset_is_small_and_records_its_test_accuracy():
    info = classifier_info()
    net = load_classifier()
    assert sum(p.numel() for p in net.parameters()) == info["parameters"] < 100_000
    assert info["test_images"] == 10_000 and 0.8 < info["test_accuracy"] <= 1.0
    assert "train split" in info["training"]["dataset"] and CLASSIFIER_PATH.stat().st_size < 200_000
    with pytest.raises(ValueError, match=r"takes \(B, 1, 32, 32\) images, got \(2, 3, 32, 32\)"):
        net(torch.zeros(2, 3, 32, 32))


def test_the_recorded_accuracy_is_that_of_the_shipped_weights_on_test_images():
    net = load_classifier()
    x = to_model_range(load_fashion_mnist(DATA, split="test"))  # the default model's form: (N, 1, 32, 32) in [-1, 1]
    labels = load_fashion_mnist_labels(DATA, split="test")
    with torch.no_grad():
        accuracy = float((net(x).argmax(1) == labels).double().mean())
    assert abs(accuracy - classifier_info()["test_accuracy"]) < 0.03  # 1000 of the 10 000 test images
    assert labels.dtype == torch.int64 and set(labels.tolist()) == set(range(10))


def test_train_classifier_writes_weights_and_a_record_that_load(tmp_path):
    from pgdm.entrypoints.train import train_classifier

    dst = tmp_path / "c.safetensors"
    record = train_classifier(dst, data=DATA, epochs=1, batch_size=64, limit=2048, progress=False)
    assert json.loads(dst.with_suffix(".json").read_text()) == record
    assert record["test_images"] == 1000 and record["test_accuracy"] > 0.3  # far above chance (0.1) after 32 steps
    net = load_classifier(dst)
    assert isinstance(net, FashionClassifier) and not any(p.requires_grad for p in net.parameters())
    x = to_model_range(load_fashion_mnist(DATA, split="train"))
    assert float(net.features(x).square().mean().sqrt()) == pytest.approx(1.0, rel=1e-4)  # features scaled to RMS 1
    with pytest.raises(FileNotFoundError, match="pgdm train-classifier --export"):
        load_classifier(tmp_path / "missing.safetensors")
