import Backend
import OneDNNBackend

/// The backend the tests compute on: oneDNN with the defaults of evaluation (auto convolutions).
public let testBackend: Backend = try! OneDNN()
