import EosinTensor
import EosinWeights
import Foundation

/// Walks a model's tensors under their checkpoint names. Each model has one
/// `visitParameters(_:)`: the only table of its checkpoint names, used to load a checkpoint, to
/// initialise weights for training, to copy weights and gradients to and from an optimizer's
/// flat buffers, and to export. A visitor may read the tensor, replace it, or both; a tensor
/// being loaded arrives as a placeholder (its shape, no data).
public protocol ParameterVisitor {
  /// One tensor stored in the checkpoint as it is in the model.
  mutating func visit(_ name: String, _ t: inout Tensor) throws
}

extension ParameterVisitor {
  /// A tensor the model keeps fused along its first axis (Q, K and V in one projection) and the
  /// checkpoint keeps as `names.count` equal parts. The parts are visited in order, then joined.
  public mutating func visitFused(_ names: [String], _ t: inout Tensor) throws {
    let n = names.count, rows = t.shape[0] / n, inner = t.shape.dropFirst().reduce(1, *)
    let partShape = [rows] + Array(t.shape.dropFirst())
    var joined: [Float] = []
    joined.reserveCapacity(t.shape.reduce(1, *))
    for (i, name) in names.enumerated() {
      var part =
        t.data.isEmpty
        ? Tensor.placeholder(partShape)
        : Tensor(shape: partShape, data: Array(t.data[(i * rows * inner)..<((i + 1) * rows * inner)]))
      try visit(name, &part)
      joined += part.data
    }
    t.data = joined.count == t.shape.reduce(1, *) ? joined : []
  }

  /// A matrix the model keeps as (OC, C) and the checkpoint as (C, OC) (GPT-2's `Conv1D`).
  public mutating func visitTransposed(_ name: String, _ t: inout Tensor) throws {
    precondition(t.shape.count == 2)
    var c = t.data.isEmpty ? Tensor.placeholder([t.shape[1], t.shape[0]]) : t.transposed()
    try visit(name, &c)
    t = c.data.isEmpty ? Tensor.placeholder(t.shape) : c.transposed()
  }

  /// A tensor the model keeps flattened and the checkpoint keeps with `shape` (a patch
  /// embedding's (C, 3, P, P) seen as (C, 3*P*P)).
  public mutating func visitReshaped(_ name: String, _ shape: [Int], _ t: inout Tensor) throws {
    let own = t.shape
    t.shape = shape
    try visit(name, &t)
    t.shape = own
  }

  /// A scalar kept as a Float in the model and as a 0-d tensor in the checkpoint.
  public mutating func visitScalar(_ name: String, _ x: inout Float) throws {
    var t = Tensor(shape: [], data: [x])
    try visit(name, &t)
    x = t.data.first ?? 0
  }

  /// A Linear's `prefix.weight` and, when it has one, `prefix.bias`.
  public mutating func visit(_ prefix: String, _ l: inout Linear) throws {
    try visit(prefix + ".weight", &l.weight)
    if l.bias != nil { try visit(prefix + ".bias", &l.bias!) }
  }

  /// A LayerNorm's `prefix.weight` and `prefix.bias`.
  public mutating func visit(_ prefix: String, _ n: inout LayerNorm) throws {
    try visit(prefix + ".weight", &n.weight)
    try visit(prefix + ".bias", &n.bias)
  }
}

extension Tensor {
  /// A tensor with a shape and no data yet: what a model is built from before loading.
  public static func placeholder(_ shape: [Int]) -> Tensor {
    var t = Tensor(zeros: [0])
    t.shape = shape
    return t
  }

  /// The transpose of a matrix.
  public func transposed() -> Tensor {
    precondition(shape.count == 2)
    let R = shape[0], C = shape[1]
    var o = [Float](repeating: 0, count: R * C)
    data.withUnsafeBufferPointer { s in
      o.withUnsafeMutableBufferPointer { d in
        for r in 0..<R { for c in 0..<C { d[c * R + r] = s[r * C + c] } }
      }
    }
    return Tensor(shape: [C, R], data: o)
  }
}

/// Fills every visited tensor from a ``TensorSource`` (a checkpoint's table, or fresh random
/// weights), which checks the shape.
public struct SourceLoader<S: TensorSource>: ParameterVisitor {
  public var source: S
  public init(_ source: S) { self.source = source }
  public mutating func visit(_ name: String, _ t: inout Tensor) throws { t = try source.take(name, t.shape) }
}

/// Records every visited tensor under its checkpoint name, in visiting order.
public struct TensorRecorder: ParameterVisitor {
  /// Every visited tensor by its checkpoint name.
  public private(set) var tensors: [String: Tensor] = [:]
  /// The names in visiting order.
  public private(set) var order: [String] = []
  public init() {}
  public mutating func visit(_ name: String, _ t: inout Tensor) throws {
    precondition(tensors[name] == nil, "\(name) visited twice")
    tensors[name] = t
    order.append(name)
  }
}

/// Sets every visited tensor to zeros of its shape (a gradient accumulator of the model's shape).
public struct Zeroer: ParameterVisitor {
  public init() {}
  public mutating func visit(_ name: String, _ t: inout Tensor) throws { t = Tensor(zeros: t.shape) }
}
