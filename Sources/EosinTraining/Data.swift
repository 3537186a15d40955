import EosinModels
import EosinSlide
import EosinTokenizer
import Foundation

/// One labelled tile from a dataset folder.
public struct TileItem: Sendable {
  public var path: String
  public var label: String
  public var group: String
  public var dataset: String
}

/// Which split an item belongs to.
public enum Split: String, Codable, Sendable { case train, val, test }

/// Loads `manifest.csv` (`path,label,group` or `path,label,case_id`) from a dataset folder.
public enum TileManifest {
  /// - Returns: items whose files exist, and the rows that were skipped (missing file), each
  ///   with its line number.
  /// - Throws: ``TrainingError/data`` when the manifest is missing, malformed or empty.
  public static func load(_ root: String, dataset: String) throws -> (items: [TileItem], skipped: [String]) {
    let path = (root as NSString).appendingPathComponent("manifest.csv")
    guard FileManager.default.fileExists(atPath: path) else { throw TrainingError.data("\(path): no manifest.csv in \(root)") }
    let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    let rows: [[String]]
    do { rows = try CSV.parse(text, path: path) } catch { throw TrainingError.data(error.localizedDescription) }
    guard let header = rows.first, let pi = header.firstIndex(of: "path"), let li = header.firstIndex(of: "label") else {
      throw TrainingError.data("\(path): header must have path and label columns")
    }
    let gi = header.firstIndex(of: "group") ?? header.firstIndex(of: "case_id")
    var items: [TileItem] = [], skipped: [String] = []
    for (n, r) in rows.dropFirst().enumerated() {
      guard r.count > max(pi, li) else {
        skipped.append("\(path):\(n + 2): too few columns")
        continue
      }
      let p = (root as NSString).appendingPathComponent(r[pi])
      guard FileManager.default.fileExists(atPath: p) else {
        skipped.append("\(path):\(n + 2): \(r[pi]): file missing")
        continue
      }
      items.append(TileItem(path: p, label: r[li], group: gi.map { r.count > $0 ? r[$0] : r[pi] } ?? r[pi], dataset: dataset))
    }
    if items.isEmpty { throw TrainingError.data("\(path): no usable rows: the dataset is empty") }
    return (items, skipped)
  }

  /// The split of a text or an unlabelled group: FNV-1a of "dataset/group" mod 100; below 70
  /// train, below 80 val, else test.
  public static func split(dataset: String, group: String) -> Split {
    let r = hash(dataset, group) % 100
    return r < 70 ? .train : (r < 80 ? .val : .test)
  }

  /// FNV-1a of "dataset/group".
  static func hash(_ dataset: String, _ group: String) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in "\(dataset)/\(group)".utf8 {
      h ^= UInt64(b)
      h = h &* 0x100_0000_01b3
    }
    return h
  }

  /// The split of every group of a labelled dataset, stratified by label: each group counts
  /// under its most frequent label (ties: the first by name); a label's groups, ordered by
  /// FNV-1a of "dataset/group", go 70% to train, 10% to val and 20% to test by rank (the group
  /// at rank i of n sits at (i + 0.5) / n). Every tile of a group (slide, case, patient,
  /// near-duplicate set) lands in one split, so nothing straddles train and test, and a label
  /// with only a few groups (PANDA has 7 slides of Gleason pattern 4) still reaches val and test.
  /// - Parameter stratified: false gives every group its plain hash split
  ///   (``split(dataset:group:)``), the rule eosin-small-v1 was trained with.
  public static func splits(dataset: String, groups: [String], labels: [String], stratified: Bool = true) -> [String: Split] {
    if !stratified {
      var out: [String: Split] = [:]
      for g in groups where out[g] == nil { out[g] = split(dataset: dataset, group: g) }
      return out
    }
    var counts: [String: [String: Int]] = [:]
    for (g, l) in zip(groups, labels) { counts[g, default: [:]][l, default: 0] += 1 }
    var byLabel: [String: [String]] = [:]
    for (g, c) in counts {
      let top = c.max { a, b in a.value < b.value || (a.value == b.value && a.key > b.key) }!.key
      byLabel[top, default: []].append(g)
    }
    var out: [String: Split] = [:]
    for (_, gs) in byLabel {
      let ordered = gs.sorted { (hash(dataset, $0), $0) < (hash(dataset, $1), $1) }
      for (i, g) in ordered.enumerated() {
        let f = (Double(i) + 0.5) / Double(ordered.count)
        out[g] = f < 0.7 ? .train : (f < 0.8 ? .val : .test)
      }
    }
    return out
  }
}

/// A small deterministic generator (xorshift64*), for shuffles and augmentation.
public struct SeededRNG: RandomNumberGenerator, Sendable {
  var s: UInt64
  public init(seed: UInt64) { s = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }
  public mutating func next() -> UInt64 {
    s ^= s >> 12
    s ^= s << 25
    s ^= s >> 27
    return s &* 2_685_821_657_736_338_717
  }
  public mutating func uniform() -> Float { Float(next() >> 40) / Float(1 << 24) }
}

/// An RGB8 image held for training, (H,W,3).
public struct RawImage: Sendable {
  public var width: Int
  public var height: Int
  public var pixels: [UInt8]
  public init(width: Int, height: Int, pixels: [UInt8]) {
    self.width = width
    self.height = height
    self.pixels = pixels
  }
}

/// Training-time augmentation and conversion to the model's input.
public struct Augmenter: Sendable {
  public var size: Int
  public var mean: [Float] = [0.48145466, 0.4578275, 0.40821073]
  public var std: [Float] = [0.26862954, 0.26130258, 0.27577711]
  public var minScale: Float = 0.5
  /// Stain jitter in HED optical-density space: each stain's concentration is scaled by
  /// 1 ± `hed` and shifted by ± `hedShift` (uniform). 0.15 spans the H x0.85 / E x1.15
  /// difference between two laboratories that the robustness table applies.
  public var hed: Float = 0.15
  public var hedShift: Float = 0.03
  /// Chance of a Gaussian blur (sigma uniform in 0.3...1.5 px), like an out-of-focus scan.
  public var blurChance: Float = 0.2
  /// Chance of JPEG re-encoding at a quality uniform in 30...90.
  public var jpegChance: Float = 0.2

  public init(size: Int) { self.size = size }

  /// Random resized crop (scale jitter), flips, 90° rotations, HED stain jitter, and now and
  /// then blur or JPEG re-encoding; writes (3,S,S) floats.
  public func augment(_ source: RawImage, rng: inout SeededRNG, into out: UnsafeMutablePointer<Float>) {
    var img = source
    if rng.uniform() < blurChance {
      let sigma = 0.3 + 1.2 * rng.uniform()
      let b = ImageShift.gaussian(RGBImage(width: img.width, height: img.height, pixels: img.pixels), sigma: sigma)
      img = RawImage(width: b.width, height: b.height, pixels: b.pixels)
    }
    if rng.uniform() < jpegChance {
      let q = 30 + Int(rng.next() % 61)
      if let b = try? ImageCodec.encodeJPEG(RGBImage(width: img.width, height: img.height, pixels: img.pixels), quality: q),
        let d = try? ImageCodec.decodeJPEG(b), d.width == img.width, d.height == img.height
      {
        img = RawImage(width: d.width, height: d.height, pixels: d.pixels)
      }
    }
    let area = Float(img.width * img.height) * (minScale + (1 - minScale) * rng.uniform())
    let ratio = expf(logf(3.0 / 4) + (logf(4.0 / 3) - logf(3.0 / 4)) * rng.uniform())
    let cw = min(Float(img.width), (area * ratio).squareRoot()), ch = min(Float(img.height), (area / ratio).squareRoot())
    let x0 = (Float(img.width) - cw) * rng.uniform(), y0 = (Float(img.height) - ch) * rng.uniform()
    let flip = rng.next() & 1 == 1, rot = Int(rng.next() % 4)
    // HED jitter: per-channel scale and shift of stain concentrations (Ruifrok & Johnston).
    var alpha = [Float](repeating: 1, count: 3), beta = [Float](repeating: 0, count: 3)
    for c in 0..<3 {
      alpha[c] = 1 + hed * (2 * rng.uniform() - 1)
      beta[c] = hedShift * (2 * rng.uniform() - 1)
    }
    render(img, x0: x0, y0: y0, w: cw, h: ch, flip: flip, rot: rot, alpha: alpha, beta: beta, into: out)
  }

  /// The whole image resized to S x S with no augmentation (evaluation).
  public func plain(_ img: RawImage, into out: UnsafeMutablePointer<Float>) {
    render(
      img, x0: 0, y0: 0, w: Float(img.width), h: Float(img.height), flip: false, rot: 0, alpha: [1, 1, 1], beta: [0, 0, 0],
      into: out)
  }

  func render(
    _ img: RawImage, x0: Float, y0: Float, w: Float, h: Float, flip: Bool, rot: Int, alpha: [Float], beta: [Float],
    into out: UnsafeMutablePointer<Float>
  ) {
    let S = size
    let jitter = alpha != [1, 1, 1] || beta != [0, 0, 0]
    for oy in 0..<S {
      for ox in 0..<S {
        // Output (ox, oy) -> crop coordinates after rotation and flip.
        var u = ox, v = oy
        for _ in 0..<rot { (u, v) = (S - 1 - v, u) }
        if flip { u = S - 1 - u }
        let sx = x0 + (Float(u) + 0.5) * w / Float(S) - 0.5, sy = y0 + (Float(v) + 0.5) * h / Float(S) - 0.5
        let ix = max(0, min(img.width - 2, Int(sx.rounded(.down)))), iy = max(0, min(img.height - 2, Int(sy.rounded(.down))))
        let fx = max(0, min(1, sx - Float(ix))), fy = max(0, min(1, sy - Float(iy)))
        var rgb: [Float] = [0, 0, 0]
        for c in 0..<3 {
          let p00 = Float(img.pixels[(iy * img.width + ix) * 3 + c]), p01 = Float(img.pixels[(iy * img.width + ix + 1) * 3 + c])
          let p10 = Float(img.pixels[((iy + 1) * img.width + ix) * 3 + c]),
            p11 = Float(img.pixels[((iy + 1) * img.width + ix + 1) * 3 + c])
          rgb[c] = (p00 * (1 - fx) + p01 * fx) * (1 - fy) + (p10 * (1 - fx) + p11 * fx) * fy
        }
        if jitter { rgb = hedJitter(rgb, alpha, beta) }
        for c in 0..<3 { out[c * S * S + oy * S + ox] = (rgb[c] / 255 - mean[c]) / std[c] }
      }
    }
  }
}

/// Ruifrok-Johnston H&E-DAB stain vectors (rows: H, E, D) and their inverse.
let stainRGB: [[Float]] = [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]]
let stainInv: [[Float]] = invert3(stainRGB)

func invert3(_ m: [[Float]]) -> [[Float]] {
  let a = m[0][0], b = m[0][1], c = m[0][2], d = m[1][0], e = m[1][1], f = m[1][2], g = m[2][0], h = m[2][1], i = m[2][2]
  let det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)
  return [
    [(e * i - f * h) / det, (c * h - b * i) / det, (b * f - c * e) / det],
    [(f * g - d * i) / det, (a * i - c * g) / det, (c * d - a * f) / det],
    [(d * h - e * g) / det, (b * g - a * h) / det, (a * e - b * d) / det],
  ]
}

/// RGB (0...255) -> optical density -> stain concentrations, scaled and shifted, and back.
func hedJitter(_ rgb: [Float], _ alpha: [Float], _ beta: [Float]) -> [Float] {
  var od = [Float](repeating: 0, count: 3)
  for c in 0..<3 { od[c] = -logf(max(rgb[c], 1) / 255) }
  var conc = [Float](repeating: 0, count: 3)
  for s in 0..<3 { conc[s] = (od[0] * stainInv[0][s] + od[1] * stainInv[1][s] + od[2] * stainInv[2][s]) * alpha[s] + beta[s] }
  var out = [Float](repeating: 0, count: 3)
  for c in 0..<3 {
    let o = conc[0] * stainRGB[0][c] + conc[1] * stainRGB[1][c] + conc[2] * stainRGB[2][c]
    out[c] = max(0, min(255, 255 * expf(-o)))
  }
  return out
}

/// Synthetic non-tissue images: blank glass, noise, pen marks and heavy blur of a real tile.
public enum NonTissue {
  public static func make(kind: Int, size: Int, rng: inout SeededRNG, blurSource: RawImage?) -> RawImage {
    var px = [UInt8](repeating: 0, count: size * size * 3)
    switch kind % 4 {
    case 0:  // blank glass, slightly tinted, faint gradient
      let base = 200 + Int(rng.next() % 55)
      for y in 0..<size {
        for x in 0..<size {
          for c in 0..<3 { px[(y * size + x) * 3 + c] = UInt8(min(255, base - c * Int(rng.next() % 3) + (x + y) / 64)) }
        }
      }
    case 1:  // noise
      for i in 0..<px.count { px[i] = UInt8(truncatingIfNeeded: rng.next()) }
    case 2:  // pen mark on glass
      let col: [UInt8] = [[30, 60, 200], [20, 140, 60], [20, 20, 20], [180, 30, 160]][Int(rng.next() % 4)]
      for i in 0..<px.count { px[i] = 235 }
      let y0 = Float(rng.next() % UInt64(size)), slope = 2 * rng.uniform() - 1, width = 8 + Float(rng.next() % 24)
      for y in 0..<size {
        for x in 0..<size where abs(Float(y) - (y0 + slope * Float(x - size / 2))) < width {
          for c in 0..<3 { px[(y * size + x) * 3 + c] = col[c] }
        }
      }
    default:  // out-of-focus smear: a real tile box-blurred to a featureless wash
      guard let src = blurSource else { return make(kind: 0, size: size, rng: &rng, blurSource: nil) }
      var mean: [Int] = [0, 0, 0]
      for i in 0..<(src.width * src.height) { for c in 0..<3 { mean[c] += Int(src.pixels[i * 3 + c]) } }
      for c in 0..<3 { mean[c] /= src.width * src.height }
      for y in 0..<size {
        for x in 0..<size {
          let wave = Int(6 * sinf(Float(x + y) / Float(size) * 3))
          for c in 0..<3 { px[(y * size + x) * 3 + c] = UInt8(max(0, min(255, mean[c] + wave))) }
        }
      }
    }
    return RawImage(width: size, height: size, pixels: px)
  }
}
