import Foundation

extension TissueMask {
  /// Draws the mask over a thumbnail of the same slide: tissue tinted green with its outline
  /// drawn solid. The thumbnail may have any size; the mask is sampled nearest-neighbour.
  public func overlay(on thumb: RGBImage, alpha: Float = 0.35) -> RGBImage {
    var out = thumb
    let sx = Double(width) / Double(thumb.width), sy = Double(height) / Double(thumb.height)
    func at(_ x: Int, _ y: Int) -> Bool {
      let mx = min(width - 1, max(0, Int(Double(x) * sx))), my = min(height - 1, max(0, Int(Double(y) * sy)))
      return mask[my * width + mx] != 0
    }
    for y in 0..<thumb.height {
      for x in 0..<thumb.width where at(x, y) {
        let edge =
          x == 0 || y == 0 || x == thumb.width - 1 || y == thumb.height - 1 || !at(x - 1, y) || !at(x + 1, y) || !at(x, y - 1)
          || !at(x, y + 1)
        let i = (y * thumb.width + x) * 3
        if edge {
          out.pixels[i] = 0; out.pixels[i + 1] = 160; out.pixels[i + 2] = 0
        } else {
          out.pixels[i] = UInt8(Float(out.pixels[i]) * (1 - alpha))
          out.pixels[i + 1] = UInt8(Float(out.pixels[i + 1]) * (1 - alpha) + 200 * alpha)
          out.pixels[i + 2] = UInt8(Float(out.pixels[i + 2]) * (1 - alpha))
        }
      }
    }
    return out
  }
}
