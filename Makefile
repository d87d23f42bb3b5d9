# admlops_ros: the two README commands are `make demo` (main job) and `make test` (all tests).
PY := .venv/bin/python
ENGINE ?= engines/pointpillars_sim_3class

.PHONY: setup build demo test bench bench-ros fuzz soak train train-camera loop engine student clean

setup:            ## apt ROS packages, .venv, pip packages (idempotent)
	bash scripts/setup_env.sh

build: setup      ## catkin workspace under build/catkin_ws (messages, node wrappers)
	bash scripts/build_catkin.sh

demo: build       ## roscore + node + a simulated bag played through it, summary printed
	bash scripts/with_ros_env.sh $(PY) scripts/demo.py

test: build       ## every test: unit, backends, rostest with a real master
	bash scripts/run_tests.sh

bench: setup      ## benchmark tables (medians, ratios vs in-process baselines) + build/bench*.json
	$(PY) scripts/bench.py
	$(PY) scripts/bench_preprocess.py --json build/bench_preprocess.json
	$(PY) scripts/bench_sweeps.py --json build/bench_sweeps.json
	$(PY) scripts/bench_camera.py --json build/bench_camera.json
	$(PY) scripts/bench_postprocess.py
	$(PY) scripts/bench_centerpoint.py --json build/bench_centerpoint.json
	$(PY) scripts/bench_nus_pointpillars.py
	NUMBA_NUM_THREADS=1 $(PY) scripts/bench_simulation.py --json build/bench_simulation.json
	$(PY) scripts/bench_eval.py
	$(PY) scripts/bench_data.py --json build/bench_data.json

bench-ros: build  ## ROS overhead through a real roscore and a 10 Hz x 60 s soak (drops)
	bash scripts/with_ros_env.sh $(PY) scripts/bench_ros.py --json build/bench_ros.json
	bash scripts/with_ros_env.sh $(PY) scripts/bench_ros_camera.py --roscore --json build/bench_ros_camera.json

fuzz: build       ## fuzz clouds, voxelizer, spec and bag readers (FUZZ_INPUTS per target); findings in build/fuzz
	bash scripts/with_ros_env.sh $(PY) scripts/fuzz.py --jobs 2 --inputs $(or $(FUZZ_INPUTS),10000)

soak: build       ## the node at 10 Hz for SOAK_S seconds (3600) with malformed clouds mixed in: drops, RSS
	bash scripts/with_ros_env.sh $(PY) scripts/soak.py --duration $(or $(SOAK_S),3600) --json build/soak.json

train: setup      ## retrain the shipped default model (fixed seeds, ~200 min on 2 cores)
	$(PY) scripts/train.py --config sim_small --scan-order --iterations 14000 \
		--out build/train_sim_small
	$(PY) scripts/train.py --config sim_small --scan-order --iterations 7000 --lr 3e-4 \
		--frame-seed-base 100000 --init build/train_sim_small/latest.pth \
		--out build/finetune_sim_small
	$(PY) scripts/train.py --config sim_small --iterations 7000 --lr 3e-4 \
		--frame-seed-base 200000 --init build/finetune_sim_small/latest.pth \
		--out build/shuffle_sim_small
	$(PY) scripts/train.py --config sim_small --iterations 7000 --lr 3e-4 \
		--frame-seed-base 300000 --init build/shuffle_sim_small/latest.pth \
		--out build/shuffle2_sim_small
	$(PY) scripts/train.py --config sim_small --iterations 6000 --lr 3e-4 --freeze-bn \
		--frame-seed-base 600000 --init build/shuffle2_sim_small/latest.pth \
		--sim-sensor hdl64e_s2_kitti,hdl64e_s2_kitti,hdl64 \
		--sim-scene kitti_streets,kitti_streets,default --out build/kitti_sim_small
	$(PY) -m admlops_ros average-weights build/shuffle2_sim_small/latest.pth \
		build/kitti_sim_small/latest.pth --weight 0.7 -o build/kitti_sim_small/average.pth

train-camera: setup  ## retrain engines/camera_sim_3class (renders build/camera once; ~40 min on 2 cores: two time-based phases, then 3000 iterations)
	$(PY) scripts/train_camera.py --minutes 14 --iterations 100000 --batch-size 8 --lr 4e-3 --out build/camera/run
	$(PY) scripts/train_camera.py --minutes 6 --iterations 100000 --batch-size 8 --lr 2e-3 \
		--init build/camera/run/latest.pth --out build/camera/run2
	$(PY) scripts/train_camera.py --iterations 3000 --batch-size 8 --lr 2e-3 --threads 1 \
		--init build/camera/run2/latest.pth --out build/camera/run3 --export engines/camera_sim_3class

loop: build       ## one measured data-loop iteration: B pool, mine, label, fine-tune, A/B eval -> build/loop/loop.json (~20 min on 2 cores)
	bash scripts/with_ros_env.sh $(PY) scripts/loop.py --out build/loop

engine: setup     ## export the trained checkpoint and pack engines/pointpillars_sim_3class
	$(PY) scripts/export_onnx.py --config sim_small --checkpoint build/kitti_sim_small/average.pth --bundle $(ENGINE)

student: setup    ## prune the default to 0.75 width and distil it from the default -> build/distill75_bundle (~25 min on 2 cores)
	$(PY) -m admlops_ros prune $(ENGINE) --keep 0.75 -o build/pruned75
	$(PY) scripts/train.py --config build/pruned75/model_config.json --init build/pruned75/pruned.pth \
		--distill-from $(ENGINE) --iterations 2000 --lr 5e-4 --frame-seed-base 800000 \
		--sim-sensor hdl64e_s2_kitti,hdl64e_s2_kitti,hdl64 \
		--sim-scene kitti_streets,kitti_streets,default --out build/distill75
	$(PY) scripts/export_onnx.py --config build/distill75/model_config.json \
		--checkpoint build/distill75/latest.pth --bundle build/distill75_bundle

clean:
	rm -rf build
