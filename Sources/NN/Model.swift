import Backend
import Formats

/// A network ready to use: the root layer of a module tree on a backend, with the buffers its
/// passes reuse and the host-facing calls (normalised NCHW images in, logits out). What models
/// differ in is only the tree; everything here works for any of them.
public final class Model {
    public let backend: Backend
    public let root: Layer
    /// The checkpoint's `architecture` metadata (e.g. "resnet18-cifar") and the settings that
    /// rebuild the same tree (e.g. "width": "64").
    public let architecture: String
    public let settings: [String: String]
    public let numClasses: Int
    /// C x H x W of one input image.
    public let inputShape: [Int]

    private let gradients: TensorPool
    private let transients: TensorPool
    private var lastLogits: Tensor?
    private var lastPass: ForwardPass?
    private var lastBatch = 0
    public private(set) var parameters: [Parameter] = []

    public init(root: Layer, architecture: String, settings: [String: String] = [:], numClasses: Int,
                inputShape: [Int] = [3, 32, 32], on backend: Backend) {
        (self.root, self.architecture, self.settings, self.numClasses, self.inputShape, self.backend) =
            (root, architecture, settings, numClasses, inputShape, backend)
        gradients = TensorPool(backend: backend)
        transients = TensorPool(backend: backend)
        treeChanged()
    }

    /// The base width of models that have one (the ResNet family).
    public var width: Int? { settings["width"].flatMap(Int.init) }

    /// "resnet18-cifar width 16" and the like, for messages.
    public var description: String {
        ([architecture] + settings.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }).joined(separator: " ")
    }

    private func treeChanged() {
        root.assignNames()
        parameters = root.parameters
    }

    public func namedModules() -> [(name: String, module: Module)] { root.namedModules() }

    /// Every BatchNorm layer in state_dict order, named as in PyTorch (e.g. `layer1.0.bn1`).
    public var batchNorms: [BatchNorm2d] { root.modules(of: BatchNorm2d.self) }

    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.count } }

    /// Replaces modules of the tree (see `Module.transformModules`).
    @discardableResult
    public func transformModules(_ transform: (String, Module) throws -> Module?) rethrows -> Int {
        defer { treeChanged() }
        return try root.transformModules(transform)
    }

    // MARK: Passes

    /// Logits (N x classes, row-major) for normalised NCHW images.
    public func forward(images: [Float], count: Int, mode: Mode) throws -> [Float] {
        try forward(images: images, count: count, mode: mode, taps: []).logits
    }

    /// Logits and the named modules' outputs (plain, row-major), e.g. taps ["layer4", "avgpool"]
    /// for the last stage and the penultimate features of a ResNet.
    public func forward(images: [Float], count: Int, mode: Mode, taps: [String])
        throws -> (logits: [Float], features: [String: [Float]]) {
        let tapped = try modules(named: taps)
        let x = try backend.upload(images, shape: [count] + inputShape)
        let pass = ForwardPass(mode: mode, transients: transients, taps: tapped)
        PassLedger.forward(mode: mode, batch: count)
        lastBatch = count
        let logits = try root.forward(x, pass)
        transients.removeAll()
        lastLogits = logits
        lastPass = pass
        var features: [String: [Float]] = [:]
        for (name, module) in zip(taps, tapped) {
            guard let t = pass.captured(module) else { throw ShapeError("tap \(name): not a direct child of a Sequential") }
            features[name] = try t.plainValues()
        }
        return (try logits.plainValues(), features)
    }

    /// Backpropagates a logits gradient (N x classes) and gradients into tapped outputs of the
    /// last forward. With `weightGradients`, every parameter's gradient is written; without,
    /// only activation gradients and BatchNorm scale/shift gradients are (no backward-weights
    /// convolutions). Returns the input gradient (plain NCHW) when `wantInputGradient`.
    @discardableResult
    public func backward(logitsGradient: [Float], tapGradients: [String: [Float]] = [:], weightGradients: Bool,
                         wantInputGradient: Bool) throws -> [Float]? {
        guard let lastLogits, let lastPass else { throw ShapeError("backward before forward") }
        let g = try gradients.take(lastLogits.layout)
        try g.setPlainValues(logitsGradient)
        var extras: [(Module, Tensor)] = []
        for (name, values) in tapGradients.sorted(by: { $0.key < $1.key }) {
            let module = try modules(named: [name])[0]
            guard let output = lastPass.captured(module) else {
                throw ShapeError("tap gradient \(name): the last forward did not tap it")
            }
            let t = try backend.makeTensor(output.layout)
            try t.setPlainValues(values)
            extras.append((module, t))
        }
        let pass = BackwardPass(weightGradients: weightGradients, pool: gradients, tapGradients: extras)
        PassLedger.backward(mode: lastPass.mode, batch: lastBatch, weightGradients: weightGradients, inputGradient: wantInputGradient)
        guard let gx = try root.backward(g, pass, needsInputGradient: wantInputGradient) else { return nil }
        defer { gradients.give(gx) }
        return wantInputGradient ? try gx.plainValues() : nil
    }

    private func modules(named names: [String]) throws -> [Module] {
        guard !names.isEmpty else { return [] }
        let all = Dictionary(namedModules().map { ($0.name, $0.module) }, uniquingKeysWith: { a, _ in a })
        return try names.map { name in
            guard let m = all[name], !name.isEmpty else {
                throw ShapeError("no module named \"\(name)\" in \(description); modules are "
                    + root.namedChildren.map(\.name).joined(separator: ", ") + ", ...")
            }
            return m
        }
    }

    // MARK: ANP's module transform

    /// Swaps every BatchNorm2d for a NoisyBatchNorm2d sharing its state; returns them in model order.
    @discardableResult
    public func insertNoisyBatchNorms() throws -> [NoisyBatchNorm2d] {
        try transformModules { _, module in
            guard let bn = module as? BatchNorm2d, !(bn is NoisyBatchNorm2d) else { return nil }
            return try NoisyBatchNorm2d(wrapping: bn)
        }
        return root.modules(of: NoisyBatchNorm2d.self)
    }

    /// Puts the original BatchNorm2d layers back.
    public func removeNoisyBatchNorms() {
        transformModules { _, module in (module as? NoisyBatchNorm2d)?.original }
    }
}

extension Model: ImageClassifier {
    public func logits(images: [Float], count: Int) throws -> [Float] {
        try forward(images: images, count: count, mode: .evaluation)
    }

    public func lossAndInputGradient(images: [Float], labels: [Int32]) throws
        -> (losses: [Float], logits: [Float], inputGradient: [Float]) {
        let logits = try forward(images: images, count: labels.count, mode: .evaluation)
        let ce = CrossEntropy.evaluate(logits: logits, labels: labels, classes: numClasses)
        // Gradient of the summed loss: the mean's gradient times N.
        let scale = Float(labels.count)
        let gradient = try backward(logitsGradient: ce.logitsGradient.map { $0 * scale }, weightGradients: false,
                                    wantInputGradient: true)!
        return (ce.losses, logits, gradient)
    }
}
