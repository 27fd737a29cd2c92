/// The compute seam: device memory and the operations layers need. A backend is a value passed
/// to the models built on it (as mlx-swift passes a device); nothing above this module knows
/// which library computes. Kernels are obtained once per shape and layout (backends cache
/// them) and then run many times.
///
/// Elementwise operations take operands of one layout (any layout: blocked padding holds zeros
/// in every operand and stays zero).
public protocol Backend: AnyObject {
    /// What computes, in words, for run headers and checkpoint metadata ("oneDNN 2.6.0, 2 threads, ...").
    var summary: String { get }
    /// Compute threads in use.
    var threads: Int { get }

    // MARK: Memory
    func plainLayout(_ shape: [Int]) throws -> TensorLayout
    /// A zero-filled tensor.
    func makeTensor(_ layout: TensorLayout) throws -> Tensor
    /// A plain tensor holding `values` (row-major in `shape`).
    func upload(_ values: [Float], shape: [Int]) throws -> Tensor
    func upload(_ values: [Float], into tensor: Tensor) throws
    func download(_ tensor: Tensor) throws -> [Float]
    /// `tensor` converted to `layout` (a new tensor).
    func copy(_ tensor: Tensor, to layout: TensorLayout) throws -> Tensor
    /// Copies values, converting layouts.
    func copy(_ source: Tensor, into destination: Tensor) throws
    func fill(_ tensor: Tensor, with value: Float) throws

    // MARK: Kernels
    func convolution(_ geometry: ConvolutionGeometry) throws -> ConvolutionKernel
    func batchNormalization(_ layout: TensorLayout, fuseReLU: Bool, globalStatistics: Bool) throws
        -> BatchNormalizationKernel
    /// out = a + b, optionally followed by ReLU, in `layout`.
    func addition(_ layout: TensorLayout, relu: Bool) throws -> AdditionKernel
    func pooling(_ geometry: PoolingGeometry, input: TensorLayout) throws -> PoolingKernel
    /// Fully connected with bias on an N x C (x 1 x 1) input; the output is plain N x outputs.
    func linear(input: TensorLayout, outputs: Int) throws -> LinearKernel

    // MARK: Elementwise
    /// PyTorch's SGD step: d = g + wd w; buffer = d (first step) or mu buffer + d; w -= lr buffer
    /// (Nesterov: w -= lr (d + mu buffer)).
    func sgdStep(value: Tensor, gradient: Tensor, momentum: Tensor, learningRate: Float, momentumFactor: Float,
                 weightDecay: Float, nesterov: Bool, firstStep: Bool) throws
    /// running = (1 - m) running + m batch (the variance's batch value times `varianceCorrection`).
    func updateRunningStatistics(mean: Tensor, variance: Tensor, batchMean: Tensor, batchVariance: Tensor,
                                 momentum: Float, varianceCorrection: Float) throws
    /// out = a * b.
    func multiply(_ a: Tensor, _ b: Tensor, into out: Tensor) throws
    /// out = a + b (same layout, no ReLU).
    func add(_ a: Tensor, _ b: Tensor, into out: Tensor) throws
    /// x += step * sign(direction) (sign 0 at 0, as torch.sign).
    func addSignStep(_ x: Tensor, direction: Tensor, step: Float) throws
    /// x = min(max(x, low), high).
    func clamp(_ x: Tensor, low: Float, high: Float) throws
}

/// A 2-D convolution's shape: N x C x H x W input, O filters of k x k, stride, zero padding,
/// groups (C and O divisible by it; groups == C is depthwise), optional bias.
public struct ConvolutionGeometry: Hashable, CustomStringConvertible {
    public var batch, inChannels, outChannels, height, width, kernel, stride, padding, groups: Int
    public var bias: Bool

    public init(batch: Int, inChannels: Int, outChannels: Int, height: Int, width: Int, kernel: Int, stride: Int,
                padding: Int, groups: Int = 1, bias: Bool = false) {
        (self.batch, self.inChannels, self.outChannels) = (batch, inChannels, outChannels)
        (self.height, self.width, self.kernel, self.stride, self.padding) = (height, width, kernel, stride, padding)
        (self.groups, self.bias) = (groups, bias)
    }
    public var outHeight: Int { (height + 2 * padding - kernel) / stride + 1 }
    public var outWidth: Int { (width + 2 * padding - kernel) / stride + 1 }
    public var inputShape: [Int] { [batch, inChannels, height, width] }
    /// PyTorch's weight shape: O x C/groups x k x k.
    public var weightShape: [Int] { [outChannels, inChannels / groups, kernel, kernel] }
    public var outputShape: [Int] { [batch, outChannels, outHeight, outWidth] }
    public var description: String {
        "conv \(inputShape) -> \(outputShape) k\(kernel) s\(stride) p\(padding)"
            + (groups > 1 ? " g\(groups)" : "") + (bias ? " +bias" : "")
    }
}

public protocol ConvolutionKernel: AnyObject {
    var geometry: ConvolutionGeometry { get }
    /// Layouts the kernel computes in (inputs in other layouts are converted per call).
    var inputLayout: TensorLayout { get }
    var weightLayout: TensorLayout { get }
    var outputLayout: TensorLayout { get }
    /// The layout backward-data writes the input gradient in.
    func inputGradientLayout() throws -> TensorLayout
    func forward(input: Tensor, weight: Tensor, bias: Tensor?, output: Tensor) throws
    func backwardData(outputGradient: Tensor, weight: Tensor, inputGradient: Tensor) throws
    /// Writes (does not accumulate) the weight and bias gradients.
    func backwardWeights(input: Tensor, outputGradient: Tensor, weightGradient: Tensor, biasGradient: Tensor?) throws
    /// The backend's names of the forward, backward-data and backward-weights implementations.
    func implementations() throws -> [String]
}

/// BatchNorm over N x C x H x W (eps 1e-5) with separate per-channel scale and shift, optionally
/// fused with the following ReLU. With batch statistics `mean`/`variance` (biased) are written;
/// with global statistics they are read.
public protocol BatchNormalizationKernel: AnyObject {
    /// Extra memory the fused ReLU's backward needs (nil when none).
    var workspaceLayout: TensorLayout? { get }
    func forward(input: Tensor, scale: Tensor, shift: Tensor, mean: Tensor, variance: Tensor, output: Tensor,
                 workspace: Tensor?) throws
    /// Input, scale and shift gradients; `inputGradient` may be `outputGradient` itself.
    func backward(input: Tensor, outputGradient: Tensor, scale: Tensor, shift: Tensor, mean: Tensor,
                  variance: Tensor, workspace: Tensor?, inputGradient: Tensor, scaleGradient: Tensor,
                  shiftGradient: Tensor) throws
}

public protocol AdditionKernel: AnyObject {
    var layout: TensorLayout { get }
    func forward(_ a: Tensor, _ b: Tensor, into output: Tensor) throws
    /// The ReLU's backward from its output `output`; `inputGradient` may be `outputGradient`.
    func reluBackward(output: Tensor, outputGradient: Tensor, inputGradient: Tensor) throws
}

public struct PoolingGeometry: Hashable {
    public enum Kind: String, Hashable { case average, max }
    public var kind: Kind
    public var kernel, stride, padding: Int
    public init(_ kind: Kind, kernel: Int, stride: Int? = nil, padding: Int = 0) {
        self.kind = kind
        self.kernel = kernel
        self.stride = stride ?? kernel
        self.padding = padding
    }
}

public protocol PoolingKernel: AnyObject {
    var inputLayout: TensorLayout { get }
    var outputLayout: TensorLayout { get }
    /// Where max pooling remembers the winners for backward (nil for average pooling).
    var workspaceLayout: TensorLayout? { get }
    func forward(input: Tensor, output: Tensor, workspace: Tensor?) throws
    func backward(outputGradient: Tensor, inputGradient: Tensor, workspace: Tensor?) throws
}

public protocol LinearKernel: AnyObject {
    var inputLayout: TensorLayout { get }
    var weightLayout: TensorLayout { get }
    var outputLayout: TensorLayout { get }
    func forward(input: Tensor, weight: Tensor, bias: Tensor, output: Tensor) throws
    func backwardData(outputGradient: Tensor, weight: Tensor, inputGradient: Tensor) throws
    func backwardWeights(input: Tensor, outputGradient: Tensor, weightGradient: Tensor, biasGradient: Tensor) throws
}
