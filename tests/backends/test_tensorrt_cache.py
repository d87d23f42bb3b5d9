"""TensorRT plan cache decisions (no GPU needed): selection, rejection messages, builds, lock."""
from __future__ import annotations

import json
import multiprocessing
import os
import stat
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from admlops_ros.backends import gpu_info
from admlops_ros.backends import tensorrt_cache as ec

SHA_A = "a" * 64
SHA_B = "b" * 64
PROFILE = (2000, 5000, 9000)


def key(cc="8.6", trt="8.6.1", precision="fp16", sha=SHA_A, profile=PROFILE,
        gpu="NVIDIA GeForce RTX 3090"):
    return ec.PlanKey(cc, trt, precision, sha, profile, gpu)


def put_plan(cache: Path, k: ec.PlanKey, sidecar: bool = True) -> Path:
    """A fake plan as the cache writes it."""
    cache.mkdir(parents=True, exist_ok=True)
    plan = cache / k.plan_name()
    plan.write_bytes(b"plan")
    if sidecar:
        ec.sidecar_path(plan).write_text(json.dumps({"format": 1, "key": k.to_json()}))
    return plan


def fake_build(calls=None, delay_s=0.0, log=None):
    def build(onnx_path, plan_path, min_v, opt_v, max_v, fp16=False, workspace=None, **int8):
        assert not int8, "fp32/fp16 builds get no int8 arguments"
        if calls is not None:
            calls.append((onnx_path, plan_path, min_v, opt_v, max_v, fp16))
        if log is not None:
            with open(log, "a") as handle:
                handle.write("%d\n" % os.getpid())
        if delay_s:
            time.sleep(delay_s)
        Path(plan_path).write_bytes(("built %d %d %d %s" % (min_v, opt_v, max_v, fp16)).encode())
    return build


def test_plan_name_and_key_normalization():
    k = key(trt="8.6.1.post1")
    assert k.plan_name() == "end2end.sm86.trt8.6.1.fp16.plan"
    assert k.trt_version == "8.6.1"
    assert ec.PlanKey.from_json(json.loads(json.dumps(k.to_json()))) == k
    with pytest.raises(ec.EngineCacheError, match="precision 'int4'"):
        key(precision="int4")
    with pytest.raises(ec.EngineCacheError, match="min <= opt <= max"):
        key(profile=(9000, 5000, 2000))
    with pytest.raises(gpu_info.GpuInfoError, match="compute capability"):
        key(cc="86")


def test_picks_exact_match_among_others(tmp_path):
    put_plan(tmp_path, key(cc="7.5", gpu="Tesla T4"))
    put_plan(tmp_path, key(precision="fp32"))
    exact = put_plan(tmp_path, key())
    decision = ec.inspect_cache(tmp_path, key())
    assert decision.plan == exact
    assert ec.select_plan(tmp_path, key()) == exact
    reasons = dict(decision.rejected)
    assert "compute capability 7.5 (Tesla T4)" in reasons["end2end.sm75.trt8.6.1.fp16.plan"]
    assert "precision fp32" in reasons["end2end.sm86.trt8.6.1.fp32.plan"]


def test_empty_or_missing_cache(tmp_path):
    assert ec.select_plan(tmp_path / "nope", key()) is None
    assert ec.select_plan(tmp_path, key()) is None


def test_rejects_other_tensorrt_version_with_message(tmp_path):
    put_plan(tmp_path, key(trt="8.5.2"))
    decision = ec.inspect_cache(tmp_path, key())
    assert decision.plan is None
    (name, reason), = decision.rejected
    assert name == "end2end.sm86.trt8.5.2.fp16.plan"
    assert "TensorRT 8.5.2" in reason and "TensorRT 8.6.1" in reason
    # a patch release is a different release
    put_plan(tmp_path, key(trt="8.6.0"))
    assert ec.select_plan(tmp_path, key()) is None
    # the build / .postN number is not
    assert ec.select_plan(tmp_path, key(trt="8.5.2.2")) is not None


def test_rejects_other_compute_capability(tmp_path):
    put_plan(tmp_path, key(cc="6.1", gpu="GeForce GTX 1080"))
    decision = ec.inspect_cache(tmp_path, key(cc="8.6"))
    assert decision.plan is None
    reason = decision.rejected[0][1]
    assert "compute capability 6.1 (GeForce GTX 1080)" in reason
    assert "'NVIDIA GeForce RTX 3090' is 8.6" in reason


def test_rejects_stale_onnx_and_other_profile(tmp_path):
    put_plan(tmp_path, key(sha=SHA_B))
    decision = ec.inspect_cache(tmp_path, key(sha=SHA_A))
    assert decision.plan is None
    assert "stale" in decision.rejected[0][1] and SHA_B[:12] in decision.rejected[0][1]
    put_plan(tmp_path, key(profile=(1000, 5000, 40000)))
    decision = ec.inspect_cache(tmp_path, key())
    assert "profile 1000/5000/40000 voxels, spec.yaml wants 2000/5000/9000" in \
        decision.rejected[0][1]


def test_plan_without_sidecar_is_never_used(tmp_path):
    put_plan(tmp_path, key(), sidecar=False)
    decision = ec.inspect_cache(tmp_path, key())
    assert decision.plan is None
    assert "cannot tell what it was built for" in decision.rejected[0][1]


def test_same_capability_other_gpu_model_warns_or_strict_rejects(tmp_path):
    plan = put_plan(tmp_path, key(gpu="NVIDIA A40"))
    decision = ec.inspect_cache(tmp_path, key(gpu="NVIDIA GeForce RTX 3090"))
    assert decision.plan == plan
    assert "NVIDIA A40" in decision.warnings[0]
    strict = ec.inspect_cache(tmp_path, key(), strict_gpu_model=True)
    assert strict.plan is None and "strict_gpu_model" in strict.rejected[0][1]


def test_mismatch_without_build_is_error_naming_gpu_versions_and_command(tmp_path):
    cache = tmp_path / "bundle" / "tensorrt"
    put_plan(cache, key(trt="8.5.2", cc="7.5", gpu="Tesla T4"))
    with pytest.raises(ec.EngineCacheError) as info:
        ec.ensure_plan(cache, key(), tmp_path / "bundle" / "end2end.onnx", allow_build=False)
    msg = str(info.value)
    assert "NVIDIA GeForce RTX 3090" in msg and "sm86" in msg
    assert "TensorRT 8.5.2" in msg and "TensorRT 8.6.1" in msg
    assert "admlops build-engine %s --target tensorrt --fp16" % (tmp_path / "bundle") in msg
    assert "allow_build" in msg


def test_build_when_allowed_then_reuse(tmp_path):
    onnx = tmp_path / "end2end.onnx"
    onnx.write_bytes(b"onnx")
    cache = tmp_path / "tensorrt"
    calls = []
    plan = ec.ensure_plan(cache, key(), onnx, allow_build=True, build_fn=fake_build(calls))
    assert plan == cache / "end2end.sm86.trt8.6.1.fp16.plan"
    assert calls == [(str(onnx), calls[0][1], 2000, 5000, 9000, True)]
    side = json.loads(ec.sidecar_path(plan).read_text())
    assert side["key"]["onnx_sha256"] == SHA_A and side["key"]["gpu_name"]
    assert side["plan_sha256"] == ec.sha256_file(plan)
    assert sorted(p.name for p in cache.iterdir()) == [
        ".build.lock", "end2end.sm86.trt8.6.1.fp16.json", "end2end.sm86.trt8.6.1.fp16.plan"]
    assert ec.ensure_plan(cache, key(), onnx, allow_build=True, build_fn=fake_build(calls)) \
        == plan
    assert len(calls) == 1
    ec.ensure_plan(cache, key(), onnx, allow_build=True, build_fn=fake_build(calls), force=True)
    assert len(calls) == 2


def test_failed_build_leaves_nothing_selectable(tmp_path):
    def broken(onnx_path, plan_path, *a, **kw):
        Path(plan_path).write_bytes(b"half")
        raise RuntimeError("out of GPU memory")

    with pytest.raises(ec.EngineCacheError, match="out of GPU memory"):
        ec.ensure_plan(tmp_path, key(), tmp_path / "x.onnx", allow_build=True, build_fn=broken)
    assert [p.name for p in tmp_path.iterdir()] == [".build.lock"]


def test_resolve_from_bundle_uses_spec_profile_and_onnx_hash(tmp_path):
    (tmp_path / "end2end.onnx").write_bytes(b"the onnx")
    sha = ec.sha256_file(tmp_path / "end2end.onnx")
    bundle = SimpleNamespace(root=tmp_path, spec={"engine": {"tensorrt_profile": {
        "min": 100, "opt": 200, "max": 300}}}, files={})
    assert ec.spec_profile(bundle.spec) == (100, 200, 300)
    calls = []
    wanted = key(sha=sha, profile=(100, 200, 300), precision="fp32")
    plan = ec.resolve_tensorrt_plan(bundle, "fp32", allow_build=True, key=wanted,
                                    build_fn=fake_build(calls))
    assert plan.parent == tmp_path / "tensorrt" and calls[0][2:] == (100, 200, 300, False)
    with pytest.raises(ec.EngineCacheError, match="tensorrt_profile"):
        ec.spec_profile({"engine": {}})


def test_machine_key_without_gpu_says_so(monkeypatch):
    monkeypatch.setattr(gpu_info, "query_gpu", lambda index=0: None)
    monkeypatch.setattr(gpu_info, "tensorrt_version", lambda: None)
    with pytest.raises(ec.EngineCacheError, match="NVIDIA GPU .* and the tensorrt Python"):
        ec.machine_key(SHA_A, PROFILE, "fp16")


def _hold_lock(cache, ready, release):
    with ec.build_lock(cache, timeout_s=5, what="test holder"):
        ready.set()
        release.wait(10)


def _ensure_in_child(cache, onnx, out_queue):
    plan = ec.ensure_plan(cache, key(), onnx, allow_build=True,
                          build_fn=fake_build(delay_s=0.5, log=cache.parent / "builds.log"),
                          lock_timeout_s=10)
    out_queue.put((os.getpid(), str(plan), Path(plan).read_bytes()))


def test_lock_contention_names_the_holder(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(tmp_path, ready, release))
    holder.start()
    try:
        assert ready.wait(10)
        with pytest.raises(ec.EngineCacheError) as info:
            with ec.build_lock(tmp_path, timeout_s=0.5):
                pass
        msg = str(info.value)
        assert "pid %d" % holder.pid in msg and "test holder" in msg
    finally:
        release.set()
        holder.join(10)
    with ec.build_lock(tmp_path, timeout_s=2):  # free again once the holder let go
        pass


def test_two_processes_build_once(tmp_path):
    onnx = tmp_path / "end2end.onnx"
    onnx.write_bytes(b"onnx")
    cache = tmp_path / "tensorrt"
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_ensure_in_child, args=(cache, onnx, out)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=20) for _ in procs]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    assert results[0][1] == results[1][1]
    plans = [p for p in cache.iterdir() if p.suffix == ".plan"]
    assert len(plans) == 1
    # one process built, the other waited on the lock and reused the plan
    assert len((tmp_path / "builds.log").read_text().split()) == 1
    assert ec.read_sidecar(plans[0]) == key()
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]


def test_nvidia_smi_parsing_and_fake_tool(tmp_path, monkeypatch):
    text = "0, NVIDIA GeForce RTX 3090, 8.6, 535.104.05\n1, Tesla T4, 7.5, 535.104.05\n"
    gpus = gpu_info.parse_nvidia_smi(text)
    assert [(g.index, g.name, g.sm_tag) for g in gpus] == [
        (0, "NVIDIA GeForce RTX 3090", "sm86"), (1, "Tesla T4", "sm75")]
    tool = tmp_path / "nvidia-smi"
    tool.write_text("#!/bin/sh\nprintf '%s'\n" % text.replace("\n", "\\n"))
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", "%s:%s" % (tmp_path, os.environ["PATH"]))
    monkeypatch.setattr(gpu_info, "_query_cuda_python", lambda: [])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    gpu = gpu_info.query_gpu(0)
    assert gpu is not None and gpu.name == "Tesla T4" and gpu.compute_capability == "7.5"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gpu_info.query_gpu(0).name == "NVIDIA GeForce RTX 3090"
    assert gpu_info.query_gpu(5) is None


def test_no_gpu_here_gives_none():
    if os.path.exists("/dev/nvidia0"):
        pytest.skip("this machine has an NVIDIA GPU")
    assert gpu_info.query_gpu() is None


def test_import_plan_built_elsewhere(tmp_path):
    src = tmp_path / "end2end.engine"
    src.write_bytes(b"mmdeploy engine")
    plan = ec.import_plan(tmp_path / "tensorrt", key(precision="fp32"), src,
                          source="mmdeploy tools/deploy.py")
    assert plan.name == "end2end.sm86.trt8.6.1.fp32.plan" and plan.read_bytes() == src.read_bytes()
    assert json.loads(ec.sidecar_path(plan).read_text())["source"] == "mmdeploy tools/deploy.py"
    assert ec.select_plan(tmp_path / "tensorrt", key(precision="fp32")) == plan
    with pytest.raises(ec.EngineCacheError, match="no TensorRT plan"):
        ec.import_plan(tmp_path, key(), tmp_path / "missing.engine")



# ----------------------------------------------------------------------------- int8
SHA_CAL = "c" * 64
KEEP = ("voxel_encoder", "bbox_head")


def int8_key(calibration=SHA_CAL, keep=KEEP, sha=SHA_A):
    """A build request (calibration data given); calibration="" is a running node's key."""
    return ec.PlanKey("8.6", "8.6.1", "int8", sha, PROFILE, "NVIDIA GeForce RTX 3090",
                      calibration, keep if calibration else ())


def fake_int8_build(calls, cache_bytes=b"TRT-8601-EntropyCalibration2\n"):
    """Writes the plan, and the calibration cache unless one is there (as TensorRT does)."""
    def build(onnx_path, plan_path, min_v, opt_v, max_v, fp16=False, workspace=None,
              int8=False, calib_dir=None, calib_cache=None, keep_fp32=None):
        cache = Path(calib_cache)
        calls.append({"int8": int8, "fp16": fp16, "calib_dir": calib_dir, "cache": cache.name,
                      "keep_fp32": keep_fp32, "cache_there": cache.is_file()})
        if not cache.is_file():
            cache.write_bytes(cache_bytes)
        Path(plan_path).write_bytes(b"int8 plan")
    return build


def test_int8_key_names_and_sidecar_fields():
    k = int8_key()
    assert k.plan_name() == "end2end.sm86.trt8.6.1.int8.plan"
    assert ec.calibration_cache_path(Path("c") / k.plan_name()).name == \
        "end2end.sm86.trt8.6.1.int8.calib"
    data = json.loads(json.dumps(k.to_json()))
    assert data["calibration_sha256"] == SHA_CAL and data["keep_fp32"] == list(KEEP)
    assert ec.PlanKey.from_json(data) == k
    assert "calibration data cccccccccccc..., fp32 layers voxel_encoder, bbox_head" in \
        k.describe()
    old = key(precision="fp16").to_json()  # a sidecar written before int8 existed
    del old["calibration_sha256"], old["keep_fp32"]
    assert ec.PlanKey.from_json(old) == key(precision="fp16")
    with pytest.raises(ec.EngineCacheError, match="belong to int8 plans, not fp16"):
        ec.PlanKey("8.6", "8.6.1", "fp16", SHA_A, PROFILE, "", SHA_CAL)


def test_int8_build_writes_calibration_cache_beside_plan_and_records_it(tmp_path):
    calls = []
    cache = tmp_path / "tensorrt"
    plan = ec.ensure_plan(cache, int8_key(), tmp_path / "end2end.onnx", allow_build=True,
                          build_fn=fake_int8_build(calls), calib_dir=tmp_path / "calib")
    assert plan.name == "end2end.sm86.trt8.6.1.int8.plan"
    assert calls == [{"int8": True, "fp16": False, "calib_dir": str(tmp_path / "calib"),
                      "cache": "end2end.sm86.trt8.6.1.int8.calib", "keep_fp32": list(KEEP),
                      "cache_there": False}]
    side = json.loads(ec.sidecar_path(plan).read_text())
    calib_cache = cache / "end2end.sm86.trt8.6.1.int8.calib"
    assert side["key"]["calibration_sha256"] == SHA_CAL
    assert side["calibration"] == {"dir": str(tmp_path / "calib"), "sha256": SHA_CAL,
                                   "cache": calib_cache.name,
                                   "cache_sha256": ec.sha256_file(calib_cache),
                                   "cache_reused": False}
    # a running node has no calibration data: it takes the int8 plan as it is
    assert ec.select_plan(cache, int8_key(calibration="")) == plan


def test_int8_rebuild_reuses_the_calibration_cache_of_the_same_data(tmp_path):
    calls = []
    cache = tmp_path / "tensorrt"
    args = (cache, int8_key(), tmp_path / "end2end.onnx")
    ec.ensure_plan(*args, allow_build=True, build_fn=fake_int8_build(calls), calib_dir="calib")
    plan = ec.ensure_plan(*args, allow_build=True, build_fn=fake_int8_build(calls),
                          calib_dir="calib", force=True)
    assert [c["cache_there"] for c in calls] == [False, True]  # calibrated once
    assert json.loads(ec.sidecar_path(plan).read_text())["calibration"]["cache_reused"]
    # other fp32 layers: another plan, same calibration cache
    ec.ensure_plan(cache, int8_key(keep=()), tmp_path / "end2end.onnx", allow_build=True,
                   build_fn=fake_int8_build(calls), calib_dir="calib")
    assert calls[-1]["cache_there"] and calls[-1]["keep_fp32"] == []


def test_int8_plan_of_other_calibration_data_is_rebuilt_and_recalibrated(tmp_path):
    calls = []
    cache = tmp_path / "tensorrt"
    onnx = tmp_path / "end2end.onnx"
    ec.ensure_plan(cache, int8_key(), onnx, allow_build=True, build_fn=fake_int8_build(calls),
                   calib_dir="calib")
    decision = ec.inspect_cache(cache, int8_key(calibration="d" * 64))
    assert decision.plan is None
    assert "calibrated with other data (sha256 cccccccccccc..., the calibration directory's " \
        "is dddddddddddd...)" in decision.rejected[0][1]
    assert "fp32 layers voxel_encoder, bbox_head, wanted none" in \
        ec.inspect_cache(cache, int8_key(keep=())).rejected[0][1]
    ec.ensure_plan(cache, int8_key(calibration="d" * 64), onnx, allow_build=True,
                   build_fn=fake_int8_build(calls, b"new scales"), calib_dir="calib2")
    assert calls[-1]["cache_there"] is False  # the old data's cache was deleted first
    assert (cache / "end2end.sm86.trt8.6.1.int8.calib").read_bytes() == b"new scales"


def test_calibration_cache_nobody_vouches_for_is_not_reused(tmp_path):
    calls = []
    cache = tmp_path / "tensorrt"
    cache.mkdir()
    stray = cache / "end2end.sm86.trt8.6.1.int8.calib"
    stray.write_bytes(b"left by a crashed build")
    ec.ensure_plan(cache, int8_key(), tmp_path / "x.onnx", allow_build=True,
                   build_fn=fake_int8_build(calls), calib_dir="calib")
    assert calls[-1]["cache_there"] is False
    stray.write_bytes(b"edited after the build")
    ec.ensure_plan(cache, int8_key(), tmp_path / "x.onnx", allow_build=True,
                   build_fn=fake_int8_build(calls), calib_dir="calib", force=True)
    assert calls[-1]["cache_there"] is False


def test_int8_without_calibration_data_names_the_command(tmp_path):
    root = tmp_path / "bundle"
    with pytest.raises(ec.EngineCacheError) as info:
        ec.ensure_plan(root / "tensorrt", int8_key(calibration=""), root / "end2end.onnx",
                       allow_build=True, build_fn=fake_int8_build([]))
    msg = str(info.value)
    assert "built only with calibration data" in msg
    assert "admlops build-engine %s --target tensorrt --int8 --calib-dir CALIB_DIR" % root in msg


def test_int8_build_that_writes_no_calibration_cache_fails(tmp_path):
    def no_cache(onnx_path, plan_path, *args, **kwargs):
        Path(plan_path).write_bytes(b"plan")

    with pytest.raises(ec.EngineCacheError, match="wrote no calibration cache"):
        ec.build_plan(tmp_path, int8_key(), tmp_path / "end2end.onnx", no_cache,
                      calib_dir="calib")
    assert [p.name for p in tmp_path.iterdir()] == []


def test_int8_plans_are_not_imported(tmp_path):
    src = tmp_path / "end2end.engine"
    src.write_bytes(b"mmdeploy int8 engine")
    with pytest.raises(ec.EngineCacheError, match="int8 plans are not imported"):
        ec.import_plan(tmp_path / "tensorrt", int8_key(), src)
