import Foundation

/// A packed 8-bit RGB image, row-major, shape (H, W, 3). Value type; copies on write.
public struct RGBImage: Equatable, Sendable {
  public var width: Int
  public var height: Int
  /// Pixel bytes, `height * width * 3` of them.
  public var pixels: [UInt8]

  /// Creates an image filled with one colour (white by default).
  public init(width: Int, height: Int, fill: (UInt8, UInt8, UInt8) = (255, 255, 255)) {
    precondition(width >= 0 && height >= 0)
    self.width = width
    self.height = height
    var p = [UInt8](repeating: 0, count: width * height * 3)
    for i in 0..<(width * height) {
      p[3 * i] = fill.0
      p[3 * i + 1] = fill.1
      p[3 * i + 2] = fill.2
    }
    self.pixels = p
  }

  /// Wraps existing pixel bytes. `pixels.count` must be `width * height * 3`.
  public init(width: Int, height: Int, pixels: [UInt8]) {
    precondition(pixels.count == width * height * 3, "pixel buffer does not match \(width)x\(height)x3")
    self.width = width
    self.height = height
    self.pixels = pixels
  }

  /// The pixel at (x, y).
  @inlinable public subscript(x: Int, y: Int) -> (UInt8, UInt8, UInt8) {
    let i = (y * width + x) * 3
    return (pixels[i], pixels[i + 1], pixels[i + 2])
  }

  /// Copies the rectangle starting at (x, y); parts outside the image are white.
  public func crop(x: Int, y: Int, width w: Int, height h: Int) -> RGBImage {
    var out = RGBImage(width: w, height: h)
    pixels.withUnsafeBufferPointer { src in
      out.pixels.withUnsafeMutableBufferPointer { dst in
        for r in 0..<h {
          let sy = y + r
          if sy < 0 || sy >= height { continue }
          let x0 = max(0, x), x1 = min(width, x + w)
          if x1 <= x0 { continue }
          let n = (x1 - x0) * 3
          let so = (sy * width + x0) * 3, dO = (r * w + (x0 - x)) * 3
          for k in 0..<n { dst[dO + k] = src[so + k] }
        }
      }
    }
    return out
  }
}
