import EosinTensor
import Foundation

/// Fixed stain and texture statistics of one H&E image, the hand-made half of Eosin's image
/// tower (``TissueBranch``).
///
/// A small ViT trained from scratch on a few thousand tiles learns colour and coarse layout but
/// little texture; these 123 numbers carry what it misses:
/// - haematoxylin, eosin and DAB optical density (Ruifrok and Johnston's colour deconvolution,
///   skimage's `rgb2hed`): the 5th, 25th, 50th, 75th and 95th percentiles, mean and standard
///   deviation of each (21);
/// - an 8-bin histogram of each RGB channel (24);
/// - on the grey image and on the haematoxylin channel, each at full, half and quarter size (2x2
///   means): the 10-bin histogram of rotation-invariant uniform local binary patterns over the
///   3x3 ring (a neighbour counts when it is at least the centre), and the mean, standard
///   deviation and 90th percentile of the gradient magnitude (central differences, one-sided at
///   the edges) (78).
///
/// `Scripts/reference/make_tissue_features_fixture.py` defines the same numbers in NumPy; the
/// parity test compares them. Measured before building this (`Scripts/experiments/tissue_features.py`):
/// a linear probe on these numbers alone beats a probe on the trained v2 candidate's ViT on
/// EBHI-Seg (0.68 against 0.40) and endometrium (0.54 against 0.35).
public enum TissueFeatures {
  /// Numbers per image.
  public static let count = 123

  /// Ruifrok and Johnston's H&E-DAB stain vectors (rows), as skimage's `rgb_from_hed`.
  static let rgbFromHED: [[Double]] = [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]]
  /// Their inverse: optical density (row vector) times this gives stain amounts.
  static let hedFromRGB: [[Double]] = {
    let m = rgbFromHED
    let det =
      m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
      + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    var inv = [[Double]](repeating: [0, 0, 0], count: 3)
    for i in 0..<3 {
      for j in 0..<3 {
        let r = [0, 1, 2].filter { $0 != j }, c = [0, 1, 2].filter { $0 != i }
        let minor = m[r[0]][c[0]] * m[r[1]][c[1]] - m[r[0]][c[1]] * m[r[1]][c[0]]
        inv[i][j] = ((i + j) % 2 == 0 ? 1 : -1) * minor / det
      }
    }
    return inv
  }()

  /// The statistics of one image given as RGB values in [0, 1], channel-planar (3,S,S).
  public static func compute(rgb: [Double], size S: Int) -> [Float] {
    precondition(rgb.count == 3 * S * S && S >= 8)
    let N = S * S
    var f: [Double] = []
    f.reserveCapacity(count)
    // Stain amounts: log(rgb)/log(1e-6) is the optical density skimage uses.
    let logAdjust = log(1e-6)
    var hed = [[Double]](repeating: [Double](repeating: 0, count: N), count: 3)
    let M = hedFromRGB
    for p in 0..<N {
      let r = log(max(rgb[p], 1e-6)) / logAdjust, g = log(max(rgb[N + p], 1e-6)) / logAdjust
      let b = log(max(rgb[2 * N + p], 1e-6)) / logAdjust
      for s in 0..<3 { hed[s][p] = max(r * M[0][s] + g * M[1][s] + b * M[2][s], 0) }
    }
    for s in 0..<3 {
      let sorted = hed[s].sorted()
      for q in [5.0, 25, 50, 75, 95] { f.append(percentile(sorted, q)) }
      let (m, sd) = meanStd(hed[s])
      f += [m, sd]
    }
    for c in 0..<3 {
      var h = [Double](repeating: 0, count: 8)
      for p in 0..<N {
        let v = rgb[c * N + p]
        if v >= 0 && v <= 1 { h[min(Int(v * 8), 7)] += 1 }
      }
      f += h.map { $0 / Double(N) }
    }
    var grey = [Double](repeating: 0, count: N)
    for p in 0..<N { grey[p] = (rgb[p] + rgb[N + p] + rgb[2 * N + p]) / 3 }
    for image in [grey, hed[0]] {
      var x = image, side = S
      for scale in 0..<3 {
        f += localBinaryPatterns(x, side)
        f += gradientStatistics(x, side)
        if scale < 2 { (x, side) = halved(x, side) }
      }
    }
    return f.map { Float($0) }
  }

  /// The statistics of one preprocessed image (3,S,S), normalised by `mean` and `std` per channel
  /// as ``ImagePreprocessor`` gives it.
  public static func compute(pixels px: UnsafePointer<Float>, size S: Int, mean: [Float], std: [Float]) -> [Float] {
    let N = S * S
    var rgb = [Double](repeating: 0, count: 3 * N)
    for c in 0..<3 { for p in 0..<N { rgb[c * N + p] = Double(px[c * N + p] * std[c] + mean[c]) } }
    return compute(rgb: rgb, size: S)
  }

  /// NumPy's default (linear) percentile of sorted values.
  static func percentile(_ sorted: [Double], _ q: Double) -> Double {
    let pos = q / 100 * Double(sorted.count - 1)
    let lo = Int(pos.rounded(.down)), hi = min(lo + 1, sorted.count - 1)
    return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - Double(lo))
  }

  static func meanStd(_ v: [Double]) -> (Double, Double) {
    let m = v.reduce(0, +) / Double(v.count)
    let variance = v.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(v.count)
    return (m, variance.squareRoot())
  }

  /// 2x2 means (an odd last row or column is dropped).
  static func halved(_ x: [Double], _ S: Int) -> ([Double], Int) {
    let H = S / 2
    var out = [Double](repeating: 0, count: H * H)
    for y in 0..<H {
      for xx in 0..<H {
        let a = x[2 * y * S + 2 * xx], b = x[2 * y * S + 2 * xx + 1]
        let c = x[(2 * y + 1) * S + 2 * xx], d = x[(2 * y + 1) * S + 2 * xx + 1]
        out[y * H + xx] = (a + b + c + d) / 4
      }
    }
    return (out, H)
  }

  /// Shares of the 10 rotation-invariant uniform patterns (0–8 neighbours set with at most two
  /// transitions round the ring; 9 for the rest) over the interior pixels.
  static func localBinaryPatterns(_ x: [Double], _ S: Int) -> [Double] {
    // Ring order: top-left, top, top-right, right, bottom-right, bottom, bottom-left, left.
    let ring = [-S - 1, -S, -S + 1, 1, S + 1, S, S - 1, -1]
    var h = [Double](repeating: 0, count: 10)
    for y in 1..<(S - 1) {
      for xx in 1..<(S - 1) {
        let at = y * S + xx, c = x[at]
        var bits: UInt8 = 0
        for k in 0..<8 where x[at + ring[k]] >= c { bits |= 1 << k }
        // Transitions round the ring: bits that differ from their neighbour one step back.
        let transitions = (bits ^ (bits << 1 | bits >> 7)).nonzeroBitCount
        h[transitions <= 2 ? bits.nonzeroBitCount : 9] += 1
      }
    }
    let n = Double((S - 2) * (S - 2))
    return h.map { $0 / n }
  }

  /// Mean, standard deviation and 90th percentile of the gradient magnitude (NumPy's
  /// `np.gradient`: central differences inside, one-sided at the edges).
  static func gradientStatistics(_ x: [Double], _ S: Int) -> [Double] {
    // One-sided at the first and last index, central (halved) inside.
    func diff(_ k: Int, _ step: Int, _ at: Int) -> Double {
      if k == 0 { return x[at + step] - x[at] }
      if k == S - 1 { return x[at] - x[at - step] }
      return (x[at + step] - x[at - step]) / 2
    }
    var m = [Double](repeating: 0, count: S * S)
    for i in 0..<S {
      for j in 0..<S {
        let gy = diff(i, S, i * S + j), gx = diff(j, 1, i * S + j)
        m[i * S + j] = (gx * gx + gy * gy).squareRoot()
      }
    }
    let (mean, sd) = meanStd(m)
    return [mean, sd, percentile(m.sorted(), 90)]
  }
}

/// The tissue-statistics branch of an image tower: ``TissueFeatures`` of the input, standardised
/// by fixed training-set statistics (`center`, `scale`), through a linear map into the shared
/// embedding space, added to the projected class token before normalisation. Checkpoint names:
/// `vision_model.tissue_features.center`, `.scale` and `visual_tissue_projection.weight`.
public struct TissueBranch: Sendable {
  /// Training-set mean of each statistic (fixed; never updated by the optimiser).
  public var center: Tensor
  /// One over the training-set standard deviation of each statistic (fixed).
  public var scale: Tensor
  /// Statistics -> embedding, no bias.
  public var projection: Linear
  /// The preprocessing's per-channel mean, to recover RGB from the tower's input.
  public var pixelMean: [Float]
  /// The preprocessing's per-channel standard deviation.
  public var pixelStd: [Float]

  /// The branch's placeholder shapes for an `outFeatures`-wide embedding.
  public static func placeholder(_ outFeatures: Int, pixelMean: [Float], pixelStd: [Float]) -> TissueBranch {
    TissueBranch(
      center: .placeholder([TissueFeatures.count]), scale: .placeholder([TissueFeatures.count]),
      projection: .placeholder(TissueFeatures.count, outFeatures, bias: false), pixelMean: pixelMean, pixelStd: pixelStd)
  }

  /// Standardised statistics of one preprocessed image (3,S,S).
  public func inputs(_ px: UnsafePointer<Float>, size S: Int) -> [Float] {
    var s = TissueFeatures.compute(pixels: px, size: S, mean: pixelMean, std: pixelStd)
    for i in s.indices { s[i] = (s[i] - center.data[i]) * scale.data[i] }
    return s
  }

  /// Standardised statistics of a batch (B,3,S,S) -> (B, count), one image per core.
  public func inputs(batch px: [Float], _ B: Int, size S: Int) -> [Float] {
    let F = TissueFeatures.count, per = 3 * S * S
    var out = [Float](repeating: 0, count: B * F)
    out.withUnsafeMutableBufferPointer { o in
      let base = o.baseAddress!
      px.withUnsafeBufferPointer { p in
        parallelFor(B) { b in
          let row = inputs(p.baseAddress! + b * per, size: S)
          for i in 0..<F { base[b * F + i] = row[i] }
        }
      }
    }
    return out
  }

  /// The fixed standardisation for statistics `rows` (each ``TissueFeatures/count`` long): their
  /// mean, and one over their standard deviation (floored at 1e-4).
  public static func standardisation(_ rows: [[Float]]) -> (center: [Float], scale: [Float]) {
    var center = [Float](repeating: 0, count: TissueFeatures.count), scale = center
    for i in center.indices {
      let (m, sd) = TissueFeatures.meanStd(rows.map { Double($0[i]) })
      center[i] = Float(m)
      scale[i] = Float(1 / max(sd, 1e-4))
    }
    return (center, scale)
  }
}
