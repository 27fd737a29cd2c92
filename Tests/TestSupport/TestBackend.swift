import Backend
import OneDNNBackend

/// The backend the tests compute on: oneDNN with the defaults of evaluation (auto convolutions).
public let testBackend: Backend = try! OneDNN()

/// oneDNN with direct convolutions, for comparisons with PyTorch's golden values: on AVX2 `auto`
/// is Winograd, whose rounding (about 1e-6 per layer) random-init networks in training mode
/// amplify past the goldens' tolerances (WinogradConvolutionTests bound it on its own).
public let directBackend: Backend = try! OneDNN(.init(convolutionAlgorithm: .direct))
