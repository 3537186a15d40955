import EosinPipelines
import EosinSlide
import Foundation

/// Fixed image shifts for robustness evaluation: what a tile looks like from another laboratory
/// (stain), another scanner's focus (blur) or heavier compression (JPEG). Each is deterministic,
/// so the drop in balanced accuracy it causes can be compared between models.
public enum ImageShift: String, CaseIterable, Sendable {
  case none
  /// Haematoxylin 15% weaker and eosin 15% stronger in optical-density space, with small
  /// offsets (Ruifrok–Johnston HED), about the difference between two laboratories' H&E.
  case stain
  /// A Gaussian blur of sigma 1.5 px, like a slightly out-of-focus scan.
  case blur
  /// Re-encoding at JPEG quality 30.
  case jpeg

  /// A short description for reports.
  public var summary: String {
    switch self {
    case .none: return "no shift"
    case .stain: return "H&E stain shift (H x0.85, E x1.15 in optical density)"
    case .blur: return "Gaussian blur, sigma 1.5 px"
    case .jpeg: return "JPEG re-encoding at quality 30"
    }
  }

  /// The shifted image.
  public func apply(_ img: RGBImage) -> RGBImage {
    switch self {
    case .none: return img
    case .stain:
      var out = img
      let alpha: [Float] = [0.85, 1.15, 1], beta: [Float] = [0.02, -0.02, 0]
      for i in stride(from: 0, to: img.pixels.count, by: 3) {
        let p = hedJitter([Float(img.pixels[i]), Float(img.pixels[i + 1]), Float(img.pixels[i + 2])], alpha, beta)
        out.pixels[i] = UInt8(p[0].rounded())
        out.pixels[i + 1] = UInt8(p[1].rounded())
        out.pixels[i + 2] = UInt8(p[2].rounded())
      }
      return out
    case .blur: return Self.gaussian(img, sigma: 1.5)
    case .jpeg:
      guard let b = try? ImageCodec.encodeJPEG(img, quality: 30), let d = try? ImageCodec.decodeJPEG(b) else { return img }
      return d
    }
  }

  /// Separable Gaussian blur, edges clamped: the same 1-D pass along x, then along y.
  static func gaussian(_ img: RGBImage, sigma: Float) -> RGBImage {
    let r = Int((3 * sigma).rounded(.up))
    var k = (-r...r).map { expf(-Float($0 * $0) / (2 * sigma * sigma)) }
    let sum = k.reduce(0, +)
    k = k.map { $0 / sum }
    let W = img.width, H = img.height
    /// One pass along x or y: each pixel from its neighbours on that axis, weighted by `k`.
    func pass(_ src: [Float], alongX: Bool) -> [Float] {
      var dst = [Float](repeating: 0, count: src.count)
      for y in 0..<H {
        for x in 0..<W {
          for c in 0..<3 {
            var a: Float = 0
            for (j, w) in k.enumerated() {
              let xx = alongX ? min(W - 1, max(0, x + j - r)) : x
              let yy = alongX ? y : min(H - 1, max(0, y + j - r))
              a += w * src[(yy * W + xx) * 3 + c]
            }
            dst[(y * W + x) * 3 + c] = a
          }
        }
      }
      return dst
    }
    let blurred = pass(pass(img.pixels.map(Float.init), alongX: true), alongX: false)
    return RGBImage(width: W, height: H, pixels: blurred.map { UInt8(max(0, min(255, $0.rounded()))) })
  }
}
