import COpenSlide
import Foundation

/// Times the tiler against a raw OpenSlide `read_region` loop over the same regions, in the same
/// process, alternating the two so that cache and frequency effects hit both alike.
public enum SlideBenchmark {
  public struct Result: Sendable {
    public var tiles: Int
    /// Per-repeat tiles/s for the tiler (read, un-premultiply, resample when needed).
    public var tilerRates: [Double]
    /// Per-repeat tiles/s for the raw loop (ARGB into one reused buffer, nothing else).
    public var rawRates: [Double]
    public var resampled: Bool
  }

  /// Runs `repeats` rounds of each loop over every tile of `tiler`'s grid.
  public static func run(_ tiler: Tiler, repeats: Int) throws -> Result {
    let tiles = tiler.grid.tiles
    guard !tiles.isEmpty else { throw SlideError.invalidArgument(path: tiler.slide.path, message: "no tiles to benchmark") }
    guard let osr = openslide_open(tiler.slide.path) else { throw SlideError.unrecognized(path: tiler.slide.path) }
    defer { openslide_close(osr) }
    let regions = tiles.map { tiler.region(for: $0) }
    let level = Int32(tiler.grid.level)
    var buf = [UInt32](repeating: 0, count: regions.map { $0.width * $0.height }.max()!)
    var scratch: [UInt32] = []
    var tilerRates: [Double] = [], rawRates: [Double] = []
    var sink = 0
    // One warm-up pass of each, untimed.
    for round in -1..<repeats {
      let t0 = DispatchTime.now().uptimeNanoseconds
      for r in regions {
        buf.withUnsafeMutableBufferPointer {
          openslide_read_region(osr, $0.baseAddress, Int64(r.x), Int64(r.y), level, Int64(r.width), Int64(r.height))
        }
        sink &+= Int(buf[0] & 1)
      }
      let t1 = DispatchTime.now().uptimeNanoseconds
      for t in tiles {
        let img = try tiler.read(t, scratch: &scratch)
        sink &+= Int(img.pixels[0] & 1)
      }
      let t2 = DispatchTime.now().uptimeNanoseconds
      if round >= 0 {
        rawRates.append(Double(tiles.count) / (Double(t1 - t0) / 1e9))
        tilerRates.append(Double(tiles.count) / (Double(t2 - t1) / 1e9))
      }
    }
    if let e = openslide_get_error(osr) { throw SlideError.openSlide(path: tiler.slide.path, message: String(cString: e)) }
    _ = sink
    return Result(tiles: tiles.count, tilerRates: tilerRates, rawRates: rawRates, resampled: regions.first!.resampled)
  }
}

/// The median of a non-empty list.
public func median(_ xs: [Double]) -> Double {
  let s = xs.sorted()
  return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}
