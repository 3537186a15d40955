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

/// Heatmaps: tile values drawn over a slide thumbnail.
public enum Heatmap {
  /// A perceptual blue-to-yellow-to-red ramp for v in 0...1.
  public static func color(_ v: Float) -> (UInt8, UInt8, UInt8) {
    let stops: [(Float, Float, Float)] = [(0.19, 0.07, 0.56), (0.13, 0.57, 0.55), (0.99, 0.91, 0.14), (0.85, 0.13, 0.13)]
    let x = max(0, min(1, v)) * Float(stops.count - 1)
    let i = min(stops.count - 2, Int(x)), f = x - Float(i)
    let a = stops[i], b = stops[i + 1]
    return (UInt8((a.0 + (b.0 - a.0) * f) * 255), UInt8((a.1 + (b.1 - a.1) * f) * 255), UInt8((a.2 + (b.2 - a.2) * f) * 255))
  }

  /// Blends each tile's colour over the thumbnail. Tiles are level-0 squares (x, y, size);
  /// the thumbnail covers the slide at `downsample` level-0 pixels per pixel.
  public static func render(
    thumbnail: RGBImage, downsampleX: Double, downsampleY: Double, tiles: [(x: Int, y: Int, size: Int)], values: [Float],
    alpha: Float = 0.55
  ) -> RGBImage {
    var out = thumbnail
    for (t, v) in zip(tiles, values) {
      let c = color(v)
      let x0 = Int(Double(t.x) / downsampleX), y0 = Int(Double(t.y) / downsampleY)
      let x1 = min(out.width, Int((Double(t.x + t.size) / downsampleX).rounded(.up))),
        y1 = min(out.height, Int((Double(t.y + t.size) / downsampleY).rounded(.up)))
      if x1 <= max(0, x0) || y1 <= max(0, y0) { continue }
      for y in max(0, y0)..<y1 {
        for x in max(0, x0)..<x1 {
          let i = (y * out.width + x) * 3
          out.pixels[i] = UInt8(Float(out.pixels[i]) * (1 - alpha) + Float(c.0) * alpha)
          out.pixels[i + 1] = UInt8(Float(out.pixels[i + 1]) * (1 - alpha) + Float(c.1) * alpha)
          out.pixels[i + 2] = UInt8(Float(out.pixels[i + 2]) * (1 - alpha) + Float(c.2) * alpha)
        }
      }
    }
    return out
  }
}
