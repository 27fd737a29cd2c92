# Entry points; see README.md.
SWIFT_TEST_FLAGS = -c release -Xswiftc -enable-testing

DATA_DIR ?= ../shared/data/cifar10
SPLIT_FILE ?= ../shared/data/anp/cifar_shuffle.txt

.PHONY: setup build test quick bench bench-zoo fuzz
setup:
	bash scripts/setup.sh

build: setup
	swift build -c release

# Passive OpenMP waiting: spinning threads would starve the test runner's other processes.
test: setup
	OMP_WAIT_POLICY=PASSIVE swift test $(SWIFT_TEST_FLAGS)

# Coverage-guided fuzzing of every parser (libFuzzer + ASan): FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 60
fuzz: setup
	bash scripts/fuzz/run.sh all $(FUZZ_SECONDS)

# BackdoorLab and PyTorch side by side (PyTorch half needs `pip install torch`).
bench: setup
	bash scripts/bench/compare.sh 64 128 3

# Every --model beside PyTorch's: train and eval img/s at batch 128 (about 25 minutes on 2 cores).
bench-zoo: setup
	bash scripts/bench/zoo.sh 2 1 1

# The main job: one attack from poisoning to the repaired model, with report.html.
quick: build
	.build/release/backdoor run --preset quick --attacks badnets --data-dir $(DATA_DIR) \
		--split-file $(SPLIT_FILE) --output-dir runs/quick --resume
