# Entry points; see README.md.
SWIFT_TEST_FLAGS = -c release -Xswiftc -enable-testing

.PHONY: setup build test quick bench
setup:
	bash scripts/setup.sh

build: setup
	swift build -c release

test: setup
	swift test $(SWIFT_TEST_FLAGS)

bench: build
	.build/release/backdoor bench
