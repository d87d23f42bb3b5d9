"""mmdeploy output layouts detected from output names (every version's names)."""
from __future__ import annotations

import pytest

from admlops_ros.lidar.layout import LAYOUT_NAMES, LayoutError, detect_layout, resolve_layout
from tests.fixtures.tiny_model import OUTPUT_NAMES


def test_layout_detection_table():
    for name in ("mmdeploy-0.5", "mmdeploy-1.0", "mmdeploy-0.11"):
        assert detect_layout(list(OUTPUT_NAMES[name])[::-1]).name == name
    two = detect_layout(["cls_score1", "bbox_pred0", "cls_score0", "dir_cls_pred1",
                         "bbox_pred1", "dir_cls_pred0"])
    assert two.name == "mmdeploy-1.2" and two.num_levels == 2
    assert two.cls_names == ("cls_score0", "cls_score1")
    no_dir = detect_layout(["cls_score", "bbox_pred"])
    assert no_dir.name == "mmdeploy-1.0" and no_dir.dir_names == ()
    with pytest.raises(LayoutError) as err:
        detect_layout(["cls_score0", "bbox_pred1"])
    msg = str(err.value)
    assert "['bbox_pred1', 'cls_score0']" in msg
    assert all(name in msg for name in LAYOUT_NAMES)
    with pytest.raises(LayoutError, match="engine.output_layout is 'mmdeploy-1.0'"):
        resolve_layout(["cls_score0", "bbox_pred0", "dir_cls_pred0"], "mmdeploy-1.0")
