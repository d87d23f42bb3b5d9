"""Trains the default camera detector (`camera_net.CameraNet`) on rendered frames, on the CPU.

TTFNet-style targets at stride 4: an elliptical gaussian heatmap per object (sigma = 0.54 * size
/ 6, CenterNet focal loss) and ltrb distances regressed with GIoU at the cells of the object's
central gaussian, weighted by the gaussian and log(area). Van boxes and too small or too occluded
boxes are ignore regions of the heatmap. Augmentation: scale 0.7..1.4 with a random crop,
horizontal flip, colour/contrast/brightness jitter, blur and pixel noise.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from .camera_data import CAMERA_CLASSES, CameraCache, split_targets
from .camera_net import STRIDE, CameraNet, CameraNetConfig, cell_centres

LOG = logging.getLogger(__name__)
MEAN_RGB = (123.675, 116.28, 103.53)   # mmdet's ImageNet normalisation, RGB order
STD_RGB = (58.395, 57.12, 57.375)
INPUT_SIZE = (192, 640)                # (H, W) network input: 1242x375 resized, no keep-ratio
GAUSS_ALPHA = 0.54                     # TTFNet heatmap gaussian size factor
GAUSS_BETA = 0.54                      # TTFNet regression region factor


@dataclass
class TrainConfig:
    """Camera training schedule.

    Attributes:
        iterations: optimiser steps.
        batch_size: crops per step.
        crop: (H, W) training crop of the (scaled) network-size image.
        lr: AdamW peak learning rate (one-cycle cosine).
        weight_decay: AdamW weight decay.
        min_height: scored ground truth is at least this tall (network-input pixels).
        scale: (min, max) random zoom.
        threads: torch threads.
        seed: augmentation / init seed.
        box_weight: weight of the GIoU loss.
    """

    iterations: int = 3000
    batch_size: int = 16
    crop: Tuple[int, int] = (192, 320)
    lr: float = 3e-3
    weight_decay: float = 1e-4
    min_height: float = 6.0
    scale: Tuple[float, float] = (0.7, 1.4)
    threads: int = 2
    seed: int = 0
    box_weight: float = 5.0
    net: CameraNetConfig = field(default_factory=CameraNetConfig)


# ----------------------------------------------------------------------------- augmentation
def augment(image: np.ndarray, boxes: np.ndarray, crop: Tuple[int, int],
            scale: Tuple[float, float], rng: np.random.Generator
            ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random zoom + crop to ``crop``, flip, photometric jitter.

    Args:
        image: [H, W, 3] uint8 BGR.
        boxes: [N, 4] x1, y1, x2, y2 pixels.

    Returns:
        (image [crop_h, crop_w, 3] uint8 BGR, boxes [N, 4] transformed and clipped,
        kept_fraction [N] area after clipping / area before).
    """
    h, w = image.shape[:2]
    ch, cw = crop
    s = float(np.exp(rng.uniform(np.log(scale[0]), np.log(scale[1]))))
    sw, sh = w * s, h * s
    tx = -rng.uniform(0.0, max(sw - cw, 0.0)) if sw > cw else rng.uniform(0.0, cw - sw)
    ty = -rng.uniform(0.0, max(sh - ch, 0.0)) if sh > ch else rng.uniform(0.0, ch - sh)
    m = np.array([[s, 0.0, tx], [0.0, s, ty]], np.float32)
    fill = tuple(float(v) for v in rng.uniform(60, 180, 3))
    out = cv2.warpAffine(image, m, (cw, ch), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
    b = boxes.astype(np.float32).reshape(-1, 4) * s
    b[:, [0, 2]] += tx
    b[:, [1, 3]] += ty
    area0 = np.maximum((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 1e-6)
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, cw)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, ch)
    kept = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0) / area0
    if rng.random() < 0.5:
        out = out[:, ::-1]
        b = np.stack([cw - b[:, 2], b[:, 1], cw - b[:, 0], b[:, 3]], 1)
    img = out.astype(np.float32)
    if rng.random() < 0.3:
        k = int(rng.choice([3, 5]))
        img = cv2.GaussianBlur(img, (k, k), 0)
    gain = rng.uniform(0.75, 1.3) * rng.uniform(0.9, 1.1, 3)
    mean = img.mean()
    contrast = rng.uniform(0.7, 1.3)
    img = (img - mean) * contrast + mean
    grey = img.mean(axis=2, keepdims=True)
    sat = rng.uniform(0.5, 1.4)
    img = (grey + (img - grey) * sat) * gain + rng.uniform(-20, 20)
    img += rng.standard_normal(img.shape).astype(np.float32) * rng.uniform(0.0, 6.0)
    return np.clip(img, 0, 255).astype(np.uint8), b.astype(np.float32), kept


def to_input(images_bgr: np.ndarray) -> torch.Tensor:
    """[B, H, W, 3] uint8 BGR -> [B, 3, H, W] float32 normalised RGB."""
    x = torch.from_numpy(np.ascontiguousarray(images_bgr[..., ::-1])).float()
    x = (x - torch.tensor(MEAN_RGB)) / torch.tensor(STD_RGB)
    return x.permute(0, 3, 1, 2).contiguous()


# ----------------------------------------------------------------------------- targets
def build_targets(gt_boxes: np.ndarray, gt_labels: np.ndarray, ign_boxes: np.ndarray,
                  ign_labels: np.ndarray, size: Tuple[int, int], num_classes: int
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """TTFNet targets of one image.

    Args:
        gt_boxes, gt_labels: scored objects, network-input pixels.
        ign_boxes, ign_labels: ignore regions.
        size: (H, W) of the input.

    Returns:
        (heat [C, h, w] float32, heat_mask [C, h, w] float32 (0 in ignore regions),
        box_target [4, h, w] float32 x1y1x2y2, box_weight [h, w] float32).
    """
    h, w = size[0] // STRIDE, size[1] // STRIDE
    heat = np.zeros((num_classes, h, w), np.float32)
    mask = np.ones((num_classes, h, w), np.float32)
    box_t = np.zeros((4, h, w), np.float32)
    box_w = np.zeros((h, w), np.float32)
    for b, c in zip(ign_boxes, ign_labels):
        x0, y0 = int(b[0] // STRIDE), int(b[1] // STRIDE)
        x1, y1 = int(math.ceil(b[2] / STRIDE)), int(math.ceil(b[3] / STRIDE))
        mask[c, y0:y1, x0:x1] = 0.0
    if len(gt_boxes) == 0:
        return heat, mask, box_t, box_w
    areas = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    for k in np.argsort(-areas):
        b = gt_boxes[k]
        c = int(gt_labels[k])
        bw, bh = (b[2] - b[0]) / STRIDE, (b[3] - b[1]) / STRIDE
        cx, cy = 0.5 * (b[0] + b[2]) / STRIDE, 0.5 * (b[1] + b[3]) / STRIDE
        ix = min(max(int(cx), 0), w - 1)
        iy = min(max(int(cy), 0), h - 1)
        sx = max(GAUSS_ALPHA * bw / 6.0, 0.3)
        sy = max(GAUSS_ALPHA * bh / 6.0, 0.3)
        g = np.exp(-((xs - ix) ** 2) / (2 * sx * sx) - ((ys - iy) ** 2) / (2 * sy * sy))
        g[g < 1e-3] = 0.0
        heat[c] = np.maximum(heat[c], g)
        mask[c] = np.maximum(mask[c], (g > 0.05).astype(np.float32))
        # regression region: gaussian with beta, normalised, times log(area)
        sxr = max(GAUSS_BETA * bw / 6.0, 0.3)
        syr = max(GAUSS_BETA * bh / 6.0, 0.3)
        gr = np.exp(-((xs - ix) ** 2) / (2 * sxr * sxr) - ((ys - iy) ** 2) / (2 * syr * syr))
        region = gr > 0.05
        region[iy, ix] = True
        wgt = gr * region
        wgt = wgt / wgt.sum() * math.log(max(areas[k], 2.0))
        box_t[:, region] = b[:, None]
        box_w[region] = wgt[region]
    return heat, mask, box_t, box_w


def focal_loss(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """CenterNet penalty-reduced focal loss, normalised by the number of peaks."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = (target >= 1.0 - 1e-4).float()
    neg = (1.0 - pos) * mask
    lp = -torch.log(p) * (1 - p) ** 2 * pos
    ln = -torch.log(1 - p) * p ** 2 * (1 - target) ** 4 * neg
    return (lp.sum() + ln.sum()) / pos.sum().clamp(min=1.0)


def giou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - GIoU of [N, 4] x1y1x2y2 boxes."""
    ix1 = torch.max(pred[:, 0], target[:, 0])
    iy1 = torch.max(pred[:, 1], target[:, 1])
    ix2 = torch.min(pred[:, 2], target[:, 2])
    iy2 = torch.min(pred[:, 3], target[:, 3])
    inter = (ix2 - ix1).clamp(min=0) * (iy2 - iy1).clamp(min=0)
    ap = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    at = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    union = ap + at - inter + 1e-6
    ex1 = torch.min(pred[:, 0], target[:, 0])
    ey1 = torch.min(pred[:, 1], target[:, 1])
    ex2 = torch.max(pred[:, 2], target[:, 2])
    ey2 = torch.max(pred[:, 3], target[:, 3])
    enc = (ex2 - ex1) * (ey2 - ey1) + 1e-6
    return 1.0 - (inter / union - (enc - union) / enc)


def loss_terms(model: CameraNet, x: torch.Tensor, heat: torch.Tensor, mask: torch.Tensor,
               box_t: torch.Tensor, box_w: torch.Tensor, box_weight: float
               ) -> Dict[str, torch.Tensor]:
    """{"heat", "box", "total"} losses of a batch."""
    logits, ltrb = model.raw(x)
    lh = focal_loss(logits, heat, mask)
    h, w = logits.shape[2:]
    cx, cy = cell_centres(h, w)
    pred = torch.stack([cx - ltrb[:, 0], cy - ltrb[:, 1], cx + ltrb[:, 2], cy + ltrb[:, 3]], 1)
    sel = box_w > 0
    if sel.any():
        pb = pred.permute(0, 2, 3, 1)[sel]
        tb = box_t.permute(0, 2, 3, 1)[sel]
        wt = box_w[sel]
        lb = (giou_loss(pb, tb) * wt).sum() / wt.sum().clamp(min=1e-6)
    else:
        lb = pred.sum() * 0.0
    return {"heat": lh, "box": lb, "total": lh + box_weight * lb}


class Sampler:
    """Random augmented batches from a cache."""

    def __init__(self, cache: CameraCache, cfg: TrainConfig) -> None:
        self.cache = cache
        self.cfg = cfg
        self.images = np.asarray(cache.images)
        self.labels = [cache.labels(i) for i in range(len(cache))]
        self.rng = np.random.default_rng(cfg.seed)

    def batch(self) -> Tuple[torch.Tensor, ...]:
        cfg = self.cfg
        idx = self.rng.integers(0, len(self.images), cfg.batch_size)
        imgs, hs, ms, bts, bws = [], [], [], [], []
        for i in idx:
            lab = self.labels[i]
            names = lab.names
            img, boxes, kept = augment(self.images[i], lab.boxes, cfg.crop, cfg.scale, self.rng)
            lab2 = type(lab)(boxes=boxes, names=names, occlusion_level=lab.occlusion_level.copy(),
                             truncation=lab.truncation)
            # boxes mostly cropped away are ignore regions
            lab2.occlusion_level[kept < 0.5] = 3
            gb, gl, ib, il = split_targets(lab2, cfg.min_height)
            heat, mask, bt, bw = build_targets(gb, gl, ib, il, cfg.crop, cfg.net.num_classes)
            imgs.append(img)
            hs.append(heat)
            ms.append(mask)
            bts.append(bt)
            bws.append(bw)
        return (to_input(np.stack(imgs)), torch.from_numpy(np.stack(hs)),
                torch.from_numpy(np.stack(ms)), torch.from_numpy(np.stack(bts)),
                torch.from_numpy(np.stack(bws)))


# ----------------------------------------------------------------------------- inference
def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS; returns kept indices in decreasing score order."""
    order = np.argsort(-scores, kind="stable")
    keep: List[int] = []
    while len(order):
        i = order[0]
        keep.append(int(i))
        if len(order) == 1:
            break
        rest = order[1:]
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        a = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
        b = (boxes[rest, 2] - boxes[rest, 0]) * (boxes[rest, 3] - boxes[rest, 1])
        order = rest[inter / np.maximum(a + b - inter, 1e-9) <= iou]
    return np.asarray(keep, np.int64)


def detect_torch(model: CameraNet, images_bgr: Sequence[np.ndarray], score_thr: float = 0.05,
                 iou_thr: float = 0.5, max_det: int = 100
                 ) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Runs the PyTorch model on original images (resized to INPUT_SIZE, boxes rescaled back).

    Returns:
        Per image (boxes [N, 4] original pixels, scores [N], labels [N]).
    """
    out = []
    model.eval()
    ih, iw = INPUT_SIZE
    for img in images_bgr:
        h, w = img.shape[:2]
        x = to_input(cv2.resize(img, (iw, ih), interpolation=cv2.INTER_LINEAR)[None])
        with torch.no_grad():
            boxes, scores = model(x)
        boxes = boxes[0].numpy()
        scores = scores[0].numpy()
        bb, ss, ll = [], [], []
        for c in range(scores.shape[1]):
            sel = np.nonzero(scores[:, c] > score_thr)[0]
            if not len(sel):
                continue
            k = sel[nms(boxes[sel], scores[sel, c], iou_thr)]
            bb.append(boxes[k])
            ss.append(scores[k, c])
            ll.append(np.full(len(k), c, np.int64))
        if bb:
            b = np.concatenate(bb)
            s = np.concatenate(ss)
            lab = np.concatenate(ll)
            o = np.argsort(-s)[:max_det]
            b, s, lab = b[o], s[o], lab[o]
        else:
            b, s, lab = np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
        b = b * np.array([w / iw, h / ih, w / iw, h / ih], np.float32)
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
        out.append((b.astype(np.float32), s.astype(np.float32), lab))
    return out


# ----------------------------------------------------------------------------- loop
def train(cache_dir: Path, out_dir: Path, cfg: TrainConfig, log_every: int = 50,
          deadline: Optional[float] = None, init: Optional[Path] = None) -> CameraNet:
    """Trains on ``cache_dir``; writes ``out_dir``/latest.pth and train_log.jsonl.

    Args:
        cache_dir: a `camera_data.render_cache` directory at the network input size.
        out_dir: output directory.
        cfg: schedule.
        log_every: iterations between log lines / checkpoints.
        deadline: wall-clock time (time.time()) after which training stops early, or None.
        init: start from these weights.

    Returns:
        The trained model (eval mode).
    """
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sampler = Sampler(CameraCache(cache_dir), cfg)
    model = CameraNet(cfg.net)
    if init is not None:
        model.load_state_dict(torch.load(init, map_location="cpu")["model"])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = min(100, cfg.iterations // 10)

    t0 = time.time()
    budget = None if deadline is None else max(deadline - t0, 1.0)

    def lr_at(it: int) -> float:
        if it < warm:
            return cfg.lr * (0.1 + 0.9 * it / max(warm, 1))
        t = (it - warm) / max(cfg.iterations - warm, 1)
        if budget is not None:   # anneal by the deadline when it comes first
            t = max(t, (time.time() - t0) / budget)
        t = min(t, 1.0)
        return cfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))

    log = (out_dir / "train_log.jsonl").open("a")
    model.train()
    for it in range(cfg.iterations):
        for g in opt.param_groups:
            g["lr"] = lr_at(it)
        x, heat, mask, bt, bw = sampler.batch()
        terms = loss_terms(model, x, heat, mask, bt, bw, cfg.box_weight)
        opt.zero_grad()
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        last = it + 1 == cfg.iterations or (deadline is not None and time.time() > deadline)
        if (it + 1) % log_every == 0 or last:
            rec = {"it": it + 1, "lr": lr_at(it), "s": round(time.time() - t0, 1)}
            rec.update({k: round(float(v.detach()), 4) for k, v in terms.items()})
            log.write(json.dumps(rec) + "\n")
            log.flush()
            LOG.info("camera train %s", rec)
            torch.save({"model": model.state_dict(), "net": asdict(cfg.net), "it": it + 1},
                       out_dir / "latest.pth")
        if last:
            break
    log.close()
    model.eval()
    return model


def load_model(path: Path) -> CameraNet:
    """A `CameraNet` from a `train` checkpoint (eval mode)."""
    ck = torch.load(path, map_location="cpu")
    net = ck.get("net", {})
    cfg = CameraNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in net.items()})
    model = CameraNet(cfg)
    model.load_state_dict(ck["model"])
    return model.eval()


# ----------------------------------------------------------------------------- quick AP
def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    aa = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    ab = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(aa[:, None] + ab[None] - inter, 1e-9)


def ap50(dets: Sequence[Tuple[np.ndarray, np.ndarray, np.ndarray]],
         gts: Sequence[Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
         num_classes: int, iou_thr: float = 0.5) -> List[float]:
    """All-point (VOC 2010+) AP per class at IoU ``iou_thr``, in percent.

    Detections matched (greedy by score, highest IoU) to an ignore box count neither as TP nor
    FP; scored ground truth is matched first.

    Args:
        dets: per image (boxes [N, 4], scores [N], labels [N]).
        gts: per image `camera_data.split_targets` output (gt boxes, labels, ignore boxes, labels).
    """
    out = []
    for c in range(num_classes):
        recs, n_gt = [], 0
        for (db, ds, dl), (gb, gl, ib, il) in zip(dets, gts):
            d = dl == c
            db_c, ds_c = db[d], ds[d]
            g = gb[gl == c]
            ig = ib[il == c]
            n_gt += len(g)
            order = np.argsort(-ds_c, kind="stable")
            used = np.zeros(len(g), bool)
            iou_g = _iou_matrix(db_c, g) if len(g) else np.zeros((len(db_c), 0))
            iou_i = _iou_matrix(db_c, ig) if len(ig) else np.zeros((len(db_c), 0))
            for k in order:
                tp = 0
                if iou_g.shape[1]:
                    cand = np.where(used, -1.0, iou_g[k])
                    j = int(np.argmax(cand))
                    if cand[j] >= iou_thr:
                        used[j] = True
                        tp = 1
                if not tp and iou_i.shape[1] and iou_i[k].max() >= iou_thr:
                    continue
                recs.append((float(ds_c[k]), tp))
        if n_gt == 0:
            out.append(float("nan"))
            continue
        recs.sort(key=lambda r: -r[0])
        tp = np.cumsum([r[1] for r in recs]) if recs else np.zeros(0)
        fp = np.cumsum([1 - r[1] for r in recs]) if recs else np.zeros(0)
        rec = tp / n_gt
        prec = tp / np.maximum(tp + fp, 1e-9)
        mrec = np.concatenate([[0.0], rec, [1.0]])
        mpre = np.concatenate([[0.0], prec, [0.0]])
        mpre = np.maximum.accumulate(mpre[::-1])[::-1]
        i = np.nonzero(mrec[1:] != mrec[:-1])[0]
        out.append(float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]) * 100.0))
    return out


EVAL_MIN_HEIGHT = 25.0   # pixels of the 1242x375 image: KITTI's moderate height threshold


def evaluate_cache(detect, cache: CameraCache, min_height: float = EVAL_MIN_HEIGHT,
                   max_occlusion: int = 2, limit: Optional[int] = None) -> Dict[str, float]:
    """AP50 per class of ``detect(list of BGR images) -> dets`` on a rendered cache.

    Scored ground truth: height >= ``min_height`` px and occlusion level <= ``max_occlusion``;
    smaller / more occluded objects and Vans are ignore regions.
    """
    n = len(cache) if limit is None else min(limit, len(cache))
    dets, gts = [], []
    for i in range(n):
        dets.extend(detect([np.asarray(cache.images[i])]))
        gts.append(split_targets(cache.labels(i), min_height, max_occlusion))
    aps = ap50(dets, gts, len(CAMERA_CLASSES))
    return {f"{c}_AP50": round(a, 2) for c, a in zip(CAMERA_CLASSES, aps)}
