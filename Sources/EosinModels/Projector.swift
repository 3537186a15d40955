import EosinTensor
import EosinWeights
import Foundation

/// The slide-token projector: a 2-layer MLP, Linear -> GELU -> Linear, from image-feature width
/// to decoder width. Tensor names follow LLaVA: `mm_projector.0.*` and `mm_projector.2.*`.
public struct Projector: Sendable {
  public var fc1: Linear
  public var fc2: Linear

  public init(fc1: Linear, fc2: Linear) {
    self.fc1 = fc1
    self.fc2 = fc2
  }

  /// Reads the projector's four tensors from `source` (a file's table, or fresh weights),
  /// checking shapes (inDim, hidden, outDim).
  public init<S: TensorSource>(source t: inout S, inDim: Int, hidden: Int, outDim: Int) throws {
    fc1 = .placeholder(inDim, hidden)
    fc2 = .placeholder(hidden, outDim)
    var loader = SourceLoader(t)
    try visitParameters(&loader)
    t = loader.source
  }

  /// Loads the projector's four tensors from a file, checking shapes (inDim, hidden, outDim).
  public init(file: SafeTensorsFile, inDim: Int, hidden: Int, outDim: Int) throws {
    var t = TensorTable(file)
    try self.init(source: &t, inDim: inDim, hidden: hidden, outDim: outDim)
  }

  /// The projector's names: LLaVA's `mm_projector.0.*` and `mm_projector.2.*`.
  public mutating func visitParameters<V: ParameterVisitor>(_ v: inout V) throws {
    try v.visit("mm_projector.0", &fc1)
    try v.visit("mm_projector.2", &fc2)
  }

  /// x (N,inDim) -> (N,outDim): the training forward with its activations dropped.
  public func forward(_ x: [Float], _ N: Int) -> [Float] {
    var tape = ProjectorTape()
    return forward(x, N, tape: &tape)
  }
}
