import EosinTensor
import EosinWeights
import Foundation

/// How far image embeddings lie from the training tiles: the Mahalanobis distance to the nearest
/// class mean under one shared covariance (Lee et al. 2018), fitted on the training split's
/// embeddings by `eosin train finalize` and stored as `clip/outlier.safetensors`.
///
/// The text-side domain score (cosine to the class prompts) cannot see tissue the model never
/// learned: the encoder maps it close to some class anyway. Distance to the *image*
/// distribution, measured along the directions where training tiles vary little, can.
public struct OutlierModel: Sendable {
  /// Which image features the model measures.
  public enum Features: String, Sendable {
    /// The projected, normalised CLIP embedding (the model eosin-small-v1 shipped with first).
    case embedding
    /// The vision tower's backbone row: the pooled class token before the projection and the
    /// patch-token mean (``CLIPModel/imageEmbeddingsAndBackbone(_:batch:)``). The projection
    /// is trained to match text, and keeps little of what tells an unseen tissue apart; the
    /// backbone keeps it (at the val 95th percentile on v1 it caught 0.58 of PANDA prostate tiles
    /// against 0.31, `Scripts/experiments/ood_features.py`).
    case backbone
    /// The backbone row followed by the tile's ``TissueFeatures`` (stain, histogram, texture and
    /// gradient statistics of the image as the tower sees it). An unseen organ or laboratory
    /// often shows in its stain and texture before it shows in a small backbone trained on a
    /// few organs; the statistics are fixed, so they measure the same way for any weights.
    case backboneAndTissue = "backbone+tissue"

    /// Whether rows of this kind start with the backbone row.
    public var usesBackbone: Bool { self != .embedding }
    /// Whether rows of this kind end with the tissue statistics.
    public var usesTissueStatistics: Bool { self == .backboneAndTissue }
  }
  public let features: Features
  public let dim: Int
  /// (K, dim) class means of the training embeddings.
  public let means: [Float]
  /// (dim, dim) inverse of the shared within-class covariance (plus a small ridge).
  public let precision: [Float]

  /// (dim, dim) whitening W with W^T W = precision (the transposed Cholesky factor), so the
  /// distance is a Euclidean one after z = W x: one GEMM for a whole slide.
  let whitening: [Float]
  /// (K, dim) whitened class means.
  let whitenedMeans: [Float]
  /// (K) factor applied to the distance of a row whose nearest class is k (all 1 unless
  /// ``withScales(_:)`` set them). Training sets differ in how tightly their tiles cluster: one
  /// pooled limit flags many in-domain tiles of a loose set (photographs of glass slides, say)
  /// and lets unseen tissue near a tight set pass. Scaling each class's distances by its
  /// dataset's own validation spread puts every set on one scale, so one limit fits them all.
  public let scales: [Float]

  public var classes: Int { means.count / dim }

  /// - Parameter scales: one factor per class (K), or nil for all 1.
  /// - Returns: nil when `precision` is not positive definite or `scales` has the wrong length
  ///   or a factor that is not positive and finite.
  public init?(dim: Int, means: [Float], precision: [Float], features: Features = .embedding, scales: [Float]? = nil) {
    let K = means.count / dim
    if let s = scales, s.count != K || s.contains(where: { !($0 > 0 && $0.isFinite) }) { return nil }
    guard let l = cholesky(precision.map { Double($0) }, dim) else { return nil }
    self.features = features
    self.dim = dim
    self.means = means
    self.precision = precision
    self.scales = scales ?? [Float](repeating: 1, count: K)
    var w = [Float](repeating: 0, count: dim * dim)
    for i in 0..<dim { for j in 0..<dim { w[i * dim + j] = Float(l[j * dim + i]) } }
    whitening = w
    var wm = [Float](repeating: 0, count: means.count)
    wm.withUnsafeMutableBufferPointer { matmulForward($0.baseAddress!, means, w, nil, means.count / dim, dim, dim) }
    whitenedMeans = wm
  }

  /// Fits class means and the shared covariance of `embeddings` (N, dim) with `labels` (N);
  /// `ridge` is added to the covariance's diagonal before inverting. For
  /// ``Features/backboneAndTissue`` rows, whose columns differ in scale by orders of magnitude
  /// (histogram shares beside optical densities), the ridge is relative instead: each diagonal
  /// entry grows by `relativeRidge` of itself (at least 1e-9 of the mean diagonal), so no column's
  /// precision depends on its units.
  /// - Returns: nil when there are fewer rows than dimensions or the covariance is singular.
  public static func fit(
    embeddings: [Float], labels: [Int], dim D: Int, features: Features = .embedding, ridge: Double = 1e-4,
    relativeRidge: Double = 1e-3
  ) -> OutlierModel? {
    let N = labels.count
    guard N > D, embeddings.count == N * D else { return nil }
    let ks = Array(Set(labels)).sorted()
    var means = [Double](repeating: 0, count: ks.count * D)
    var counts = [Int](repeating: 0, count: ks.count)
    let slot = Dictionary(uniqueKeysWithValues: ks.enumerated().map { ($1, $0) })
    for n in 0..<N {
      let k = slot[labels[n]]!
      counts[k] += 1
      for d in 0..<D { means[k * D + d] += Double(embeddings[n * D + d]) }
    }
    for k in 0..<ks.count { for d in 0..<D { means[k * D + d] /= Double(counts[k]) } }
    var cov = [Double](repeating: 0, count: D * D)
    var r = [Double](repeating: 0, count: D)
    for n in 0..<N {
      let k = slot[labels[n]]!
      for d in 0..<D { r[d] = Double(embeddings[n * D + d]) - means[k * D + d] }
      for i in 0..<D where r[i] != 0 { for j in i..<D { cov[i * D + j] += r[i] * r[j] } }
    }
    for i in 0..<D {
      for j in i..<D {
        cov[i * D + j] /= Double(N)
        cov[j * D + i] = cov[i * D + j]
      }
    }
    let meanDiag = (0..<D).reduce(0.0) { $0 + cov[$1 * D + $1] } / Double(D)
    for i in 0..<D {
      cov[i * D + i] +=
        features.usesTissueStatistics ? max(relativeRidge * cov[i * D + i], 1e-9 * meanDiag) : ridge
    }
    guard let inv = invertSymmetric(cov, D) else { return nil }
    return OutlierModel(dim: D, means: means.map { Float($0) }, precision: inv.map { Float($0) }, features: features)
  }

  /// Distance of each row of `embeddings` (N, dim) to its nearest class mean, times that
  /// class's ``scales`` factor.
  public func distances(_ embeddings: [Float]) -> [Float] {
    nearest(embeddings).map { $0.distance * scales[$0.class] }
  }

  /// For each row of `embeddings` (N, dim): its nearest class mean and the (unscaled)
  /// Mahalanobis distance to it.
  public func nearest(_ embeddings: [Float]) -> [(class: Int, distance: Float)] {
    let D = dim, N = embeddings.count / D, K = classes
    var z = [Float](repeating: 0, count: N * D)
    z.withUnsafeMutableBufferPointer { matmulForward($0.baseAddress!, embeddings, whitening, nil, N, D, D) }
    return (0..<N).map { n in
      var best = Float.infinity, arg = 0
      for k in 0..<K {
        var s: Float = 0
        for d in 0..<D {
          let e = z[n * D + d] - whitenedMeans[k * D + d]
          s += e * e
        }
        if s < best {
          best = s
          arg = k
        }
      }
      return (arg, best.squareRoot())
    }
  }

  /// The same model with per-class distance factors fitted on validation rows: the classes are
  /// grouped (a class's training dataset, `groupOf[k]`); each group's limit is the `quantile` of
  /// the unscaled distances of the validation rows nearest to one of its classes, and its classes
  /// get the factor `reference / limit`, where `reference` is the same quantile over every row.
  /// A group with fewer than `minimumRows` such rows keeps the factor 1.
  public func withScales(
    validation rows: [Float], groupOf: [Int], quantile: Double = 0.95, minimumRows: Int = 20
  ) -> OutlierModel {
    precondition(groupOf.count == classes, "groupOf needs one group per class")
    let near = nearest(rows)
    guard !near.isEmpty else { return self }
    let q = { (xs: [Float]) in Self.quantile(xs, quantile) }
    let reference = q(near.map(\.distance))
    var byGroup: [Int: [Float]] = [:]
    for r in near { byGroup[groupOf[r.class], default: []].append(r.distance) }
    let factor = byGroup.mapValues { xs -> Float in
      guard xs.count >= minimumRows else { return 1 }
      let l = q(xs)
      return l > 0 ? reference / l : 1
    }
    let s = (0..<classes).map { factor[groupOf[$0]] ?? 1 }
    return OutlierModel(dim: dim, means: means, precision: precision, features: features, scales: s)!
  }

  /// Review limits from validation distances: the `quantile` of the tile distances, and of the
  /// mean distance over the first `tilesPerGroup` tiles of each group (a slide verdict averages
  /// its evidence tiles, so its limit is fitted on averages too).
  public static func limits(
    distances: [Float], groups: [String], quantile: Double = 0.99, tilesPerGroup: Int = 10
  ) -> (tile: Float, slide: Float) {
    var byGroup: [String: [Float]] = [:]
    for (g, x) in zip(groups, distances) { byGroup[g, default: []].append(x) }
    let means = byGroup.values.map { $0.prefix(tilesPerGroup).reduce(0, +) / Float(min(tilesPerGroup, $0.count)) }
    return (Self.quantile(distances, quantile), Self.quantile(means, quantile))
  }

  /// The `q` quantile of `xs` (nearest rank); infinity when `xs` is empty.
  static func quantile(_ xs: [Float], _ q: Double) -> Float {
    let s = xs.sorted()
    return s.isEmpty ? .infinity : s[min(s.count - 1, Int((Double(s.count - 1) * q).rounded()))]
  }

  /// The tensors as stored in `outlier.safetensors`.
  public var tensors: [String: Tensor] {
    [
      "means": Tensor(shape: [classes, dim], data: means), "precision": Tensor(shape: [dim, dim], data: precision),
      "scales": Tensor(shape: [classes], data: scales),
    ]
  }

  /// The metadata stored beside ``tensors``.
  public var metadata: [String: String] { ["features": features.rawValue] }

  /// Loads `outlier.safetensors` (features from its `features` metadata; `embedding` when absent;
  /// per-class `scales` all 1 when absent, as files written before them have it).
  /// - Throws: ``PipelineError/file(path:message:)`` when a tensor is missing or misshapen, or
  ///   the features are of an unknown kind.
  public init(file path: String) throws {
    let f = try SafeTensorsFile(path: path)
    guard let kind = Features(rawValue: f.metadata["features"] ?? "embedding") else {
      throw PipelineError.file(
        path: path, message: "unknown features '\(f.metadata["features"] ?? "")' (embedding, backbone or backbone+tissue)")
    }
    guard let m = f.tensors["means"], let p = f.tensors["precision"], m.shape.count == 2, p.shape == [m.shape[1], m.shape[1]]
    else { throw PipelineError.file(path: path, message: "needs 'means' (K, D) and 'precision' (D, D)") }
    var scales: [Float]? = nil
    if let s = f.tensors["scales"] {
      let sd = try f.tensor("scales").data
      guard s.shape == [m.shape[0]], sd.allSatisfy({ $0 > 0 && $0.isFinite }) else {
        throw PipelineError.file(path: path, message: "'scales' must hold one positive factor per class (\(m.shape[0]))")
      }
      scales = sd
    }
    guard
      let model = OutlierModel(
        dim: m.shape[1], means: try f.tensor("means").data, precision: try f.tensor("precision").data, features: kind,
        scales: scales)
    else { throw PipelineError.file(path: path, message: "'precision' is not positive definite") }
    self = model
  }
}

/// Lower Cholesky factor L (L L^T = a) of a symmetric positive-definite matrix (n, n); nil if
/// it is not positive definite.
func cholesky(_ a: [Double], _ n: Int) -> [Double]? {
  var l = [Double](repeating: 0, count: n * n)
  let ok = l.withUnsafeMutableBufferPointer { lb -> Bool in
    a.withUnsafeBufferPointer { ab -> Bool in
      let l = lb.baseAddress!, a = ab.baseAddress!
      for i in 0..<n {
        let li = l + i * n
        for j in 0...i {
          // s = a[i][j] - <l[i][0..<j], l[j][0..<j]>, four partial sums (rows are contiguous).
          let lj = l + j * n
          var p = SIMD4<Double>()
          var k = 0
          while k + 4 <= j {
            p += SIMD4(li[k], li[k + 1], li[k + 2], li[k + 3]) * SIMD4(lj[k], lj[k + 1], lj[k + 2], lj[k + 3])
            k += 4
          }
          var s = a[i * n + j] - p.sum()
          while k < j {
            s -= li[k] * lj[k]
            k += 1
          }
          if i == j {
            guard s > 0 else { return false }
            li[i] = s.squareRoot()
          } else {
            li[j] = s / lj[j]
          }
        }
      }
      return true
    }
  }
  return ok ? l : nil
}

/// Inverse of a symmetric positive-definite matrix (n, n) through its Cholesky factor; nil if
/// it is not positive definite.
func invertSymmetric(_ a: [Double], _ n: Int) -> [Double]? {
  guard let l = cholesky(a, n) else { return nil }
  // inv = L^-T L^-1: solve column by column.
  var inv = [Double](repeating: 0, count: n * n)
  var y = [Double](repeating: 0, count: n)
  for c in 0..<n {
    for i in 0..<n {
      var s = i == c ? 1.0 : 0.0
      for k in 0..<i { s -= l[i * n + k] * y[k] }
      y[i] = s / l[i * n + i]
    }
    for i in stride(from: n - 1, through: 0, by: -1) {
      var s = y[i]
      for k in (i + 1)..<n { s -= l[k * n + i] * inv[k * n + c] }
      inv[i * n + c] = s / l[i * n + i]
    }
  }
  return inv
}
