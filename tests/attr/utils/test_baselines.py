"""ProductBaselines (Captum's utility)."""

import random

from attribuo.attr import ProductBaselines


def test_product_baselines_draw_from_the_product_with_python_random():
    pb = ProductBaselines({"a": [1, 2], ("b", "c"): [(3, 4), (5, 6)]})
    random.seed(0)
    draws = [pb() for _ in range(40)]
    assert all(set(d) == {"a", "b", "c"} for d in draws)
    assert {(d["b"], d["c"]) for d in draws} == {(3, 4), (5, 6)}
    assert {d["a"] for d in draws} == {1, 2}
    random.seed(0)
    assert [pb() for _ in range(40)] == draws
    assert ProductBaselines([[7], [8, 8]])() == [7, 8]
