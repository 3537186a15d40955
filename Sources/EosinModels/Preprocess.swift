import Foundation

/// CLIP image preprocessing: resize the shorter side to `size`, centre-crop to `crop`, scale to
/// [0,1], normalise by mean and std. Values come from an HF `preprocessor_config.json` when one
/// is given, else CLIP's defaults at the model's image size.
public struct ImagePreprocessor: Sendable {
  public var size: Int
  public var crop: Int
  public var mean: [Float] = [0.48145466, 0.4578275, 0.40821073]
  public var std: [Float] = [0.26862954, 0.26130258, 0.27577711]

  public init(imageSize: Int) {
    size = imageSize
    crop = imageSize
  }

  /// Reads `image_mean`, `image_std`, `size` (int or {shortest_edge}) and `crop_size` (int or
  /// {height}) from an HF preprocessor config.
  public init(configData: Data, imageSize: Int) throws {
    self.init(imageSize: imageSize)
    guard let o = try JSONSerialization.jsonObject(with: configData) as? [String: Any] else {
      throw ModelError.config("preprocessor config is not a JSON object")
    }
    if let m = o["image_mean"] as? [Double], m.count == 3 { mean = m.map(Float.init) }
    if let s = o["image_std"] as? [Double], s.count == 3 { std = s.map(Float.init) }
    if let s = o["size"] as? Int { size = s } else if let s = (o["size"] as? [String: Int])?["shortest_edge"] { size = s }
    if let c = o["crop_size"] as? Int { crop = c } else if let c = (o["crop_size"] as? [String: Int])?["height"] { crop = c }
  }

  /// rgb (H,W,3) bytes -> (3,crop,crop) floats. Area-averages when shrinking, bilinear when
  /// enlarging. Allocates the output.
  public func callAsFunction(_ rgb: [UInt8], width W: Int, height H: Int) -> [Float] {
    precondition(rgb.count == W * H * 3 && W > 0 && H > 0)
    let scale = Double(size) / Double(min(W, H))
    let rw = max(crop, Int((Double(W) * scale).rounded())), rh = max(crop, Int((Double(H) * scale).rounded()))
    let ox = (rw - crop) / 2, oy = (rh - crop) / 2
    var out = [Float](repeating: 0, count: 3 * crop * crop)
    let sx = Double(W) / Double(rw), sy = Double(H) / Double(rh)
    for y in 0..<crop {
      let (y0, y1, wy) = span(Double(y + oy), sy, H)
      for x in 0..<crop {
        let (x0, x1, wx) = span(Double(x + ox), sx, W)
        var acc: (Double, Double, Double) = (0, 0, 0)
        var wsum = 0.0
        for yy in y0...y1 {
          let a = wy(yy)
          if a <= 0 { continue }
          for xx in x0...x1 {
            let w = a * wx(xx)
            if w <= 0 { continue }
            let i = (yy * W + xx) * 3
            acc.0 += w * Double(rgb[i]); acc.1 += w * Double(rgb[i + 1]); acc.2 += w * Double(rgb[i + 2])
            wsum += w
          }
        }
        let vals = [acc.0, acc.1, acc.2]
        for c in 0..<3 { out[c * crop * crop + y * crop + x] = (Float(vals[c] / wsum / 255) - mean[c]) / std[c] }
      }
    }
    return out
  }

  /// Source taps for output pixel `o` at scale `s` (source pixels per output pixel): a box of
  /// width s when shrinking, a tent of width 1 when enlarging. Returns range and weight function.
  private func span(_ o: Double, _ s: Double, _ n: Int) -> (Int, Int, (Int) -> Double) {
    if s > 1 {
      let a = o * s, b = a + s
      let lo = max(0, Int(a.rounded(.down))), hi = min(n - 1, Int(b.rounded(.up)) - 1)
      return (lo, max(lo, hi), { i in max(0, min(b, Double(i + 1)) - max(a, Double(i))) })
    }
    let c = (o + 0.5) * s - 0.5
    let lo = max(0, min(n - 1, Int(c.rounded(.down)))), hi = min(n - 1, lo + 1)
    return (lo, hi, { i in max(0, 1 - abs(Double(i) - min(max(c, 0), Double(n - 1)))) })
  }
}
