from landslide.hardware import best_precision, bf16_supported


def test_precision_follows_bf16_support():
    assert best_precision("cpu") == ("bf16-mixed" if bf16_supported("cpu") else "32-true")
    assert best_precision("mps") == "32-true"
    assert not bf16_supported("meta")
