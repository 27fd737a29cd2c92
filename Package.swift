// swift-tools-version:5.10
import PackageDescription

let package = Package(
    name: "BackdoorLab",
    products: [
        .executable(name: "backdoor", targets: ["BackdoorCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
    ],
    targets: [
        // C libraries from Debian packages (libdnnl-dev, libpng-dev, zlib1g-dev).
        .systemLibrary(name: "CDNNL", path: "Sources/CDNNL"),
        .systemLibrary(name: "CPNG", path: "Sources/CPNG"),
        .systemLibrary(name: "CZLibSystem", path: "Sources/CZLibSystem"),

        // Small shared pieces: atomic writes, progress, seeded RNG, JSON lines.
        .target(name: "Support"),
        // The compute seam: device tensors, layouts and the kernels layers need. No oneDNN here.
        .target(name: "Backend"),
        // The oneDNN implementation of the seam; the only module that imports CDNNL.
        // Winograd transforms in C (AVX2 vectors, oneDNN's OpenMP threads); only OneDNNBackend uses them.
        .target(name: "CWinograd"),
        .target(name: "OneDNNBackend", dependencies: ["Backend", "CDNNL", "CWinograd"]),
        // File formats: restricted pickle, npy, png, safetensors, tar.gz, PyTorch checkpoints.
        .target(name: "Formats", dependencies: ["Support", "CPNG", "CZLibSystem"]),
        // The module tree: Layer protocol, layers, NoisyBatchNorm2d (ANP), Model, state_dict, SGD, loss.
        .target(name: "NN", dependencies: ["Backend", "Formats", "Support"]),
        // Architectures (ResNet-18) and checkpoints that name them.
        .target(name: "Models", dependencies: ["Backend", "Formats", "NN", "Support"]),
        // CIFAR-10 loading, verification, download, split, augmentation, batching.
        .target(name: "Datasets", dependencies: ["Support", "Formats"], resources: [.copy("ReferenceData")]),
        // Training loop, evaluation, run logs.
        .target(name: "Training", dependencies: ["Backend", "Datasets", "Formats", "Models", "NN", "Support"]),
        // Experiment reports: HTML with inline SVG plots, Markdown.
        .target(name: "Reports", dependencies: ["Support"]),
        // Triggers, poisoning, clean-label PGD.
        .target(name: "Attacks", dependencies: ["Backend", "Support", "Datasets", "NN", "Formats"], resources: [.copy("ReferenceData")]),
        // Adversarial Neuron Pruning.
        .target(name: "Defenses", dependencies: ["Backend", "Datasets", "Formats", "Models", "NN", "Support", "Training"]),
        // The experiment runner: typed, YAML-configurable experiments, stages, the attack x defense matrix.
        .target(name: "Experiments",
                dependencies: ["Attacks", "Backend", "Datasets", "Defenses", "Formats", "Models", "NN", "Reports", "Support",
                               "Training", .product(name: "Yams", package: "Yams")],
                resources: [.copy("Presets")]),
        .executableTarget(
            name: "BackdoorCLI",
            dependencies: [
                "Attacks", "Backend", "Datasets", "Defenses", "Experiments", "Formats", "Models", "NN", "OneDNNBackend", "Reports",
                "Support", "Training",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),

        // Test-only helpers: the shared data folder, the backend tests compute on.
        .target(name: "TestSupport", dependencies: ["Backend", "OneDNNBackend"], path: "Tests/TestSupport"),
        .testTarget(name: "SupportTests", dependencies: ["Support"]),
        .testTarget(name: "ArchitectureTests"),
        .testTarget(name: "NNTests", dependencies: ["TestSupport", "Backend", "Formats", "Models", "NN", "OneDNNBackend", "Support"]),
        .testTarget(name: "FormatsTests", dependencies: ["TestSupport", "Formats"]),
        .testTarget(name: "DatasetsTests", dependencies: ["TestSupport", "Datasets", "Formats"]),
        .testTarget(name: "TrainingTests", dependencies: ["TestSupport", "Backend", "Datasets", "Models", "NN", "OneDNNBackend", "Training"]),
        .testTarget(name: "ReportsTests", dependencies: ["Reports"]),
        .testTarget(name: "AttacksTests", dependencies: ["TestSupport", "Attacks", "Backend", "Datasets", "Models", "NN", "OneDNNBackend", "Training"]),
        .testTarget(name: "DefensesTests",
                    dependencies: ["TestSupport", "Attacks", "Backend", "Datasets", "Defenses", "Models", "NN", "OneDNNBackend", "Training"]),
        .testTarget(name: "CLITests", dependencies: ["TestSupport", "Backend", "BackdoorCLI", "Experiments", "Models", "NN", "OneDNNBackend", "Training"]),
        .testTarget(name: "ExperimentsTests", dependencies: ["TestSupport", "Attacks", "Defenses", "Experiments", "OneDNNBackend", "Reports", "Training"]),
    ]
)
