/// A small monospaced bitmap font (printable ASCII), for labels on heatmaps and crops. Other
/// characters draw as `?`.
public enum BitmapFont {
  /// Pixels from one line's top to the next.
  public static var lineHeight: Int { glyphHeight }

  /// The width of `text` in pixels.
  public static func width(_ text: String) -> Int { text.unicodeScalars.count * glyphWidth }

  /// Draws `text` with its top-left corner at (x, y), clipped to the image.
  public static func draw(_ text: String, into img: inout RGBImage, x: Int, y: Int, color: (UInt8, UInt8, UInt8) = (0, 0, 0)) {
    var cx = x
    for u in text.unicodeScalars {
      let code = (32...126).contains(u.value) ? Int(u.value) : 63
      let base = (code - 32) * glyphHeight
      for row in 0..<glyphHeight {
        let bits = glyphRows[base + row]
        let py = y + row
        guard py >= 0 && py < img.height, bits != 0 else { continue }
        for col in 0..<glyphWidth where bits & (1 << col) != 0 {
          let px = cx + col
          guard px >= 0 && px < img.width else { continue }
          let i = (py * img.width + px) * 3
          img.pixels[i] = color.0
          img.pixels[i + 1] = color.1
          img.pixels[i + 2] = color.2
        }
      }
      cx += glyphWidth
    }
  }
}
