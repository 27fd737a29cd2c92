// swift-tools-version:5.10
import PackageDescription

let package = Package(
    name: "BackdoorLab",
    products: [
        .executable(name: "backdoor", targets: ["BackdoorCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // C libraries from Debian packages (libdnnl-dev, libpng-dev, zlib1g-dev).
        .systemLibrary(name: "CDNNL", path: "Sources/CDNNL"),
        .systemLibrary(name: "CPNG", path: "Sources/CPNG"),
        .systemLibrary(name: "CZLibSystem", path: "Sources/CZLibSystem"),

        // Small shared pieces: atomic writes, progress, seeded RNG, JSON lines.
        .target(name: "Support"),
        // The only module that calls oneDNN: the compute backend boundary.
        .target(name: "DNNL", dependencies: ["CDNNL"]),
        // Tensors, layers, ResNet-18, loss, SGD, checkpoints.
        .target(name: "NN", dependencies: ["Support", "DNNL", "Formats"]),
        // File formats: restricted pickle, npy, png, safetensors, tar.gz, PyTorch checkpoints.
        .target(name: "Formats", dependencies: ["Support", "CPNG", "CZLibSystem"]),
        // CIFAR-10 loading, verification, download, split, augmentation, batching.
        .target(name: "Datasets", dependencies: ["Support", "Formats", "CZLibSystem"]),
        // Training loop, evaluation, run logs.
        .target(name: "Training", dependencies: ["Support", "NN", "Datasets"]),
        // Experiment reports: HTML with inline SVG plots, Markdown.
        .target(name: "Reports", dependencies: ["Support", "Formats"]),
        // Triggers, poisoning, clean-label PGD.
        .target(name: "Attacks", dependencies: ["Support", "Datasets", "NN", "Formats"]),
        // Adversarial Neuron Pruning.
        .target(name: "Defenses", dependencies: ["Support", "Training", "Attacks", "NN", "Datasets"]),
        .executableTarget(
            name: "BackdoorCLI",
            dependencies: [
                "Support", "NN", "Formats", "Datasets", "Training", "Attacks", "Defenses", "Reports",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),

        .testTarget(name: "SupportTests", dependencies: ["Support"]),
        .testTarget(name: "NNTests", dependencies: ["NN", "DNNL", "Formats"]),
        .testTarget(name: "FormatsTests", dependencies: ["Formats"]),
        .testTarget(name: "DatasetsTests", dependencies: ["Datasets", "Formats"]),
        .testTarget(name: "TrainingTests", dependencies: ["Training", "NN", "Datasets"]),
        .testTarget(name: "ReportsTests", dependencies: ["Reports"]),
        .testTarget(name: "AttacksTests", dependencies: ["Attacks", "Datasets", "NN"]),
        .testTarget(name: "DefensesTests", dependencies: ["Defenses", "Attacks", "NN", "Training", "Datasets"]),
        .testTarget(name: "CLITests", dependencies: ["BackdoorCLI"]),
    ]
)
