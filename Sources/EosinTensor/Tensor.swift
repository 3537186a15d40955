import Foundation

/// A Float32 tensor: a shape and contiguous row-major storage. Value type, copy-on-write.
///
/// Kernels in this module are free functions on raw pointers with a shape contract (llm.c
/// style); `Tensor` is the owner type that models and weights pass around.
public struct Tensor: Equatable, Sendable {
  public var shape: [Int]
  public var data: [Float]

  /// A zero-filled tensor.
  public init(zeros shape: [Int]) {
    self.shape = shape
    self.data = [Float](repeating: 0, count: shape.reduce(1, *))
  }

  /// Wraps storage; `data.count` must equal the product of `shape`.
  public init(shape: [Int], data: [Float]) {
    precondition(data.count == shape.reduce(1, *), "data count \(data.count) does not match shape \(shape)")
    self.shape = shape
    self.data = data
  }

  /// Number of elements.
  public var count: Int { data.count }

  /// A copy with a new shape of the same element count (cheap: storage is shared until written).
  /// A tensor with no data (a shape placeholder, see `Tensor.placeholder`) stays one.
  public func reshaped(_ s: [Int]) -> Tensor {
    if data.isEmpty && shape.reduce(1, *) != 0 {
      var t = self
      t.shape = s
      return t
    }
    return Tensor(shape: s, data: data)
  }

  /// Rows `r` of a tensor seen as (N, rest): a copy of the slice along the first axis.
  public func rows(_ r: Range<Int>) -> Tensor {
    let inner = shape.dropFirst().reduce(1, *)
    return Tensor(shape: [r.count] + shape.dropFirst(), data: Array(data[(r.lowerBound * inner)..<(r.upperBound * inner)]))
  }

  /// Largest absolute elementwise difference to another tensor of the same count.
  public func maxAbsDiff(_ o: Tensor) -> Float {
    precondition(count == o.count)
    var m: Float = 0
    for i in 0..<count { m = max(m, abs(data[i] - o.data[i])) }
    return m
  }
}
