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
  /// the thumbnail covers the slide at `downsample` level-0 pixels per pixel. Tiles marked in
  /// `flagged` (review flags) are hatched with dark diagonals.
  public static func render(
    thumbnail: RGBImage, downsampleX: Double, downsampleY: Double, tiles: [(x: Int, y: Int, size: Int)], values: [Float],
    flagged: [Bool] = [], alpha: Float = 0.55
  ) -> RGBImage {
    var out = thumbnail
    for (n, (t, v)) in zip(tiles, values).enumerated() {
      let c = color(v)
      let hatch = n < flagged.count && flagged[n]
      let x0 = Int(Double(t.x) / downsampleX), y0 = Int(Double(t.y) / downsampleY)
      let x1 = min(out.width, Int((Double(t.x + t.size) / downsampleX).rounded(.up))),
        y1 = min(out.height, Int((Double(t.y + t.size) / downsampleY).rounded(.up)))
      if x1 <= max(0, x0) || y1 <= max(0, y0) { continue }
      for y in max(0, y0)..<y1 {
        for x in max(0, x0)..<x1 {
          let i = (y * out.width + x) * 3
          if hatch && (x + y) % 6 == 0 {
            out.pixels[i] = 30
            out.pixels[i + 1] = 30
            out.pixels[i + 2] = 30
            continue
          }
          out.pixels[i] = UInt8(Float(out.pixels[i]) * (1 - alpha) + Float(c.0) * alpha)
          out.pixels[i + 1] = UInt8(Float(out.pixels[i + 1]) * (1 - alpha) + Float(c.1) * alpha)
          out.pixels[i + 2] = UInt8(Float(out.pixels[i + 2]) * (1 - alpha) + Float(c.2) * alpha)
        }
      }
    }
    return out
  }

  /// Adds a legend panel under a heatmap: the title (the class), a colour bar from 0 to 1 with
  /// ticks, a note (tile and flag counts), and a scale bar when the microns per thumbnail
  /// pixel are known.
  public static func legend(_ img: RGBImage, title: String, note: String, micronsPerPixel: Double?) -> RGBImage {
    let W = max(img.width, 320)
    let lh = BitmapFont.lineHeight
    let panel = 3 * lh + 28
    var out = RGBImage(width: W, height: img.height + panel)
    for y in 0..<img.height {
      let s = y * img.width * 3, d = y * W * 3
      out.pixels.replaceSubrange(d..<(d + img.width * 3), with: img.pixels[s..<(s + img.width * 3)])
    }
    var y = img.height + 4
    BitmapFont.draw(title, into: &out, x: 6, y: y)
    y += lh + 2
    // Colour bar, 0 to 1.
    let barW = min(256, W - 12), barH = 10
    for x in 0..<barW {
      let c = color(Float(x) / Float(max(1, barW - 1)))
      for yy in y..<(y + barH) {
        let i = (yy * W + 6 + x) * 3
        out.pixels[i] = c.0
        out.pixels[i + 1] = c.1
        out.pixels[i + 2] = c.2
      }
    }
    y += barH + 2
    for (v, label) in [(0.0, "0"), (0.5, "0.5"), (1.0, "1")] {
      let x = 6 + Int(v * Double(barW - 1)) - (v == 1 ? BitmapFont.width(label) : v == 0.5 ? BitmapFont.width(label) / 2 : 0)
      BitmapFont.draw(label, into: &out, x: x, y: y)
    }
    // Scale bar: the largest round length (in µm) that fits in 120 px.
    if let m = micronsPerPixel, m > 0, m.isFinite {
      let um = [10.0, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000].last { $0 / m <= 120 } ?? 10
      let px = max(1, Int(um / m))
      let x0 = W - px - 8
      if x0 > barW + 16 {
        for x in x0..<(x0 + px) {
          for yy in (y - barH - 2)..<(y - barH + 1) {
            let i = (yy * W + x) * 3
            out.pixels[i] = 0
            out.pixels[i + 1] = 0
            out.pixels[i + 2] = 0
          }
        }
        let label = um >= 1000 ? "\(Int(um / 1000)) mm" : "\(Int(um)) um"
        BitmapFont.draw(label, into: &out, x: x0, y: y)
      }
    }
    y += lh + 2
    BitmapFont.draw(note, into: &out, x: 6, y: y)
    return out
  }
}
