import Foundation

/// One tile of a grid, in level-0 coordinates.
public struct TileRef: Codable, Equatable, Sendable {
  /// Position in the grid's kept-tile order (row-major over the full grid).
  public var index: Int
  public var col: Int
  public var row: Int
  /// Top-left corner in level-0 pixels.
  public var x: Int
  public var y: Int
  /// Side length of the tile's footprint in level-0 pixels (rounded; the exact value is
  /// ``TileGrid/extent0``).
  public var size0: Int
  /// Tissue fraction inside the footprint, from the thumbnail mask.
  public var tissue: Double

  public init(index: Int, col: Int, row: Int, x: Int, y: Int, size0: Int, tissue: Double) {
    self.index = index
    self.col = col
    self.row = row
    self.x = x
    self.y = y
    self.size0 = size0
    self.tissue = tissue
  }
}

/// A deterministic grid of square tiles at a target resolution, holding only coordinates.
public struct TileGrid: Sendable {
  /// Output tile side in pixels.
  public var tileSize: Int
  /// Output resolution in microns per pixel: the target, or a level's own mpp within tolerance.
  public var mpp: Double
  /// Exact footprint side in level-0 pixels: `tileSize * mpp / slideMPP`.
  public var extent0: Double
  public var cols: Int
  public var rows: Int
  /// Kept tiles (tissue fraction at or above the threshold), row-major.
  public var tiles: [TileRef]
  /// The pyramid level tiles are read from, and its downsample.
  public var level: Int
  public var levelDownsample: Double
}

/// Makes tile grids and reads tiles at an exact mpp from the best pyramid level.
///
/// Reading is lazy: ``tiles(of:)`` reads one tile at a time, so iterating a grid never holds the
/// slide in memory. `read` is thread-safe; one `Tiler` may serve several workers.
public struct Tiler: Sendable {
  public let slide: Slide
  public let grid: TileGrid

  /// Builds the grid.
  /// - Parameters:
  ///   - slide: an open slide.
  ///   - mpp: target microns per pixel, such as 0.5.
  ///   - tileSize: output tile side in pixels, such as 224.
  ///   - overrideMPP: the slide's level-0 mpp when the file does not record it (`--mpp`).
  ///   - tissue: a tissue mask; nil keeps every tile (fraction reported as 1).
  ///   - minTissue: the tissue fraction a tile needs to be kept.
  ///   - tolerance: when a pyramid level is within this relative distance of the target mpp
  ///     (default 1%), tiles are read 1:1 from it instead of resampled; ``TileGrid/mpp`` then
  ///     records the true mpp. Pass 0 to always resample to the exact target.
  ///   - mppOption: the option named in the "no mpp" error message.
  /// - Throws: ``SlideError/noMPP`` when neither the slide nor `overrideMPP` gives the mpp.
  public init(
    slide: Slide, mpp: Double, tileSize: Int, overrideMPP: Double? = nil, tissue: TissueMask?, minTissue: Double = 0.25,
    tolerance: Double = 0.01, mppOption: String = "--mpp"
  ) throws {
    guard let slideMPP = overrideMPP ?? slide.mppX else { throw SlideError.noMPP(path: slide.path, option: mppOption) }
    guard mpp > 0, tileSize > 0, slideMPP > 0 else {
      throw SlideError.invalidArgument(path: slide.path, message: "mpp and tile size must be positive")
    }
    self.slide = slide
    var ds = mpp / slideMPP
    let level = slide.bestLevel(forDownsample: ds * (1 + tolerance))
    let lds = slide.levels[level].downsample
    if abs(ds / lds - 1) <= tolerance { ds = lds }
    let extent0 = Double(tileSize) * ds
    let (W, H) = slide.dimensions
    let cols = Int((Double(W) / extent0).rounded(.down)), rows = Int((Double(H) / extent0).rounded(.down))
    var kept: [TileRef] = []
    for r in 0..<max(rows, 0) {
      for c in 0..<max(cols, 0) {
        let x0 = Double(c) * extent0, y0 = Double(r) * extent0
        let f = tissue?.fraction(x0: x0, y0: y0, width: extent0, height: extent0) ?? 1
        if f >= minTissue {
          kept.append(
            TileRef(
              index: kept.count, col: c, row: r, x: Int(x0.rounded()), y: Int(y0.rounded()), size0: Int(extent0.rounded()),
              tissue: f))
        }
      }
    }
    grid = TileGrid(
      tileSize: tileSize, mpp: ds * slideMPP, extent0: extent0, cols: cols, rows: rows, tiles: kept, level: level,
      levelDownsample: lds)
  }

  /// The level-region a tile is read from: origin in level-0 pixels, size in level pixels, and
  /// the exact sub-pixel footprint within that region.
  public func region(for t: TileRef) -> (x: Int, y: Int, width: Int, height: Int, exact: Double, resampled: Bool) {
    let lds = grid.levelDownsample
    let e = grid.extent0 / lds
    let x0 = Double(t.col) * grid.extent0, y0 = Double(t.row) * grid.extent0
    // Exact when the footprint maps to whole level pixels equal to the tile size.
    if abs(e - Double(grid.tileSize)) < 1e-6 {
      return (Int(x0.rounded()), Int(y0.rounded()), grid.tileSize, grid.tileSize, e, false)
    }
    let n = Int(e.rounded(.up)) + 1
    return (Int(x0.rounded(.down)), Int(y0.rounded(.down)), n, n, e, true)
  }

  /// Reads one tile at exactly the grid's mpp and size. Thread-safe. Allocates one tile.
  public func read(_ t: TileRef) throws -> RGBImage {
    var scratch: [UInt32] = []
    return try read(t, scratch: &scratch)
  }

  /// As ``read(_:)``, reusing a caller-owned ARGB buffer.
  public func read(_ t: TileRef, scratch: inout [UInt32]) throws -> RGBImage {
    let r = region(for: t)
    let img = try slide.readRegion(x: r.x, y: r.y, level: grid.level, width: r.width, height: r.height, scratch: &scratch)
    if !r.resampled { return img }
    let lds = grid.levelDownsample
    let offX = (Double(t.col) * grid.extent0 - Double(r.x)) / lds
    let offY = (Double(t.row) * grid.extent0 - Double(r.y)) / lds
    return resample(img, x: offX, y: offY, width: r.exact, height: r.exact, outWidth: grid.tileSize, outHeight: grid.tileSize)
  }

  /// A lazy sequence of (tile, pixels). Each element is read when the iterator reaches it.
  public func tiles() -> TileSequence { TileSequence(tiler: self) }
}

/// A lazy sequence over a grid's kept tiles; reading errors end the sequence and are kept in
/// ``TileSequence/Iterator/error``.
public struct TileSequence: Sequence {
  let tiler: Tiler
  public struct Iterator: IteratorProtocol {
    let tiler: Tiler
    var i = 0
    var scratch: [UInt32] = []
    public var error: Error?
    public mutating func next() -> (TileRef, RGBImage)? {
      guard error == nil, i < tiler.grid.tiles.count else { return nil }
      let t = tiler.grid.tiles[i]
      i += 1
      do { return (t, try tiler.read(t, scratch: &scratch)) } catch {
        self.error = error
        return nil
      }
    }
  }
  public func makeIterator() -> Iterator { Iterator(tiler: tiler) }
}
