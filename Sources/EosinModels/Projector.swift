import EosinTensor
import EosinWeights
import Foundation

/// The slide-token projector: a 2-layer MLP, Linear -> GELU -> Linear, from image-feature width
/// to decoder width. Tensor names follow LLaVA: `mm_projector.0.*` and `mm_projector.2.*`.
public struct Projector: Sendable {
  public let fc1: Linear
  public let fc2: Linear

  public init(fc1: Linear, fc2: Linear) {
    self.fc1 = fc1
    self.fc2 = fc2
  }

  /// Loads the projector's four tensors from a file, checking shapes (inDim, hidden, outDim).
  public init(file: SafeTensorsFile, inDim: Int, hidden: Int, outDim: Int) throws {
    var t = TensorTable(file)
    fc1 = try Linear.load(&t, "mm_projector.0", inDim, hidden)
    fc2 = try Linear.load(&t, "mm_projector.2", hidden, outDim)
  }

  /// x (N,inDim) -> (N,outDim).
  public func forward(_ x: [Float], _ N: Int) -> [Float] {
    var h = fc1.forward(x, N)
    h.withUnsafeMutableBufferPointer { activationForward($0.baseAddress!, $0.baseAddress!, $0.count, .gelu) }
    return fc2.forward(h, N)
  }
}
