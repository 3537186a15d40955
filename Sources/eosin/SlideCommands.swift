import ArgumentParser
import EosinPipelines
import EosinSlide
import Foundation

/// Options for how a slide is tiled, shared by commands that tile.
struct TilingOptions: ParsableArguments {
  @Option(help: "Tile resolution in microns per pixel.") var tileMpp: Double = 0.5
  @Option(help: "Tile side in pixels.") var tileSize: Int = 224
  @Option(help: "Minimum tissue fraction for a tile to be kept (0...1).") var minTissue: Double = 0.25

  func validate() throws {
    guard tileMpp > 0 else { throw ValidationError("--tile-mpp must be positive") }
    guard (16...4096).contains(tileSize) else { throw ValidationError("--tile-size must be 16...4096") }
    guard (0...1).contains(minTissue) else { throw ValidationError("--min-tissue must be in 0...1") }
  }
}

struct Info: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Show a slide's vendor, size, levels, mpp, magnification, tissue fraction and tile count.")

  @Argument(help: "A whole-slide image (SVS, NDPI, MRXS, tiled TIFF, ...).") var slide: String
  @Option(help: "The slide's level-0 microns per pixel, when the file does not record it.") var mpp: Double?
  @OptionGroup var tiling: TilingOptions
  @Flag(help: "Print JSON instead of a table.") var json = false

  func run() throws {
    let s = try Slide(path: slide)
    let tissue = try TissueDetector().detect(s)
    let slideMPP = mpp ?? s.mppX
    var tileCount: Int? = nil
    if slideMPP != nil {
      tileCount = try Tiler(
        slide: s, mpp: tiling.tileMpp, tileSize: tiling.tileSize, overrideMPP: mpp, tissue: tissue, minTissue: tiling.minTissue
      ).grid.tiles.count
    }
    let (W, H) = s.dimensions
    if json {
      var o: [String: Any] = [
        "file": (slide as NSString).lastPathComponent, "vendor": s.vendor, "width": W, "height": H,
        "levels": s.levels.map { ["width": $0.width, "height": $0.height, "downsample": $0.downsample] },
        "modality": tissue.modality.rawValue, "tissue_fraction": tissue.tissueFraction,
        "associated_images": s.associatedImageNames,
      ]
      if let m = slideMPP { o["mpp"] = m }
      if let p = s.objectivePower { o["objective_power"] = p }
      if let c = tileCount {
        o["tiles"] = ["count": c, "mpp": tiling.tileMpp, "size": tiling.tileSize, "min_tissue": tiling.minTissue]
      }
      let d = try JSONSerialization.data(withJSONObject: o, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
      print(String(decoding: d, as: UTF8.self))
      return
    }
    func row(_ k: String, _ v: String) { print(k.padding(toLength: 12, withPad: " ", startingAt: 0) + v) }
    row("file", (slide as NSString).lastPathComponent)
    row("vendor", s.vendor)
    if let m = slideMPP {
      row("size", "\(W) x \(H) px (\(fmt(Double(W) * m / 1000, 2)) x \(fmt(Double(H) * m / 1000, 2)) mm)")
    } else {
      row("size", "\(W) x \(H) px")
    }
    row(
      "levels",
      "\(s.levels.count): "
        + s.levels.map { "\($0.width)x\($0.height) (\(fmt($0.downsample, $0.downsample < 10 ? 2 : 1))x)" }.joined(separator: ", ")
    )
    if let m = slideMPP {
      row("mpp", "\(fmt(m, 4)) x \(fmt(mpp ?? s.mppY ?? m, 4)) µm/px" + (mpp != nil ? " (from --mpp)" : ""))
    } else {
      row("mpp", "unknown: the file does not record it; pass --mpp VALUE if you know it")
    }
    row("objective", s.objectivePower.map { "\(fmt($0, 0))x" } ?? "unknown")
    row("modality", tissue.modality.rawValue + (tissue.modalityReason.map { " (WARNING: \($0))" } ?? ""))
    row(
      "tissue", "\(fmt(tissue.tissueFraction * 100, 1))% of the slide (Otsu on saturation, \(tissue.width)x\(tissue.height) mask)"
    )
    if let c = tileCount {
      row("tiles", "\(c) at \(fmt(tiling.tileMpp, 3)) µm/px, \(tiling.tileSize) px, tissue >= \(fmt(tiling.minTissue * 100, 0))%")
    } else {
      row("tiles", "n/a without mpp")
    }
    let assoc = s.associatedImageNames
    if !assoc.isEmpty { row("associated", assoc.joined(separator: ", ") + " (not shown: may identify a patient)") }
  }
}

struct Thumbnail: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Write a thumbnail of a slide, optionally with the tissue mask drawn over it.")

  @Argument(help: "A whole-slide image.") var slide: String
  @Option(help: "Output image (.png or .jpg).") var out: String
  @Option(help: "Longer side of the thumbnail in pixels.") var size: Int = 1024
  @Flag(help: "Tint detected tissue green and outline it.") var overlayTissue = false

  func validate() throws {
    guard (16...16384).contains(size) else { throw ValidationError("--size must be 16...16384") }
    guard ImageFormat.forWriting(out) != nil else { throw ValidationError("--out must end in .png or .jpg") }
  }

  func run() throws {
    let s = try Slide(path: slide)
    var img = try s.thumbnail(maxSize: size).image
    if overlayTissue { img = try TissueDetector().detect(s).overlay(on: img) }
    try ImageCodec.write(img, to: out)
    print("wrote \(out) (\(img.width)x\(img.height))")
  }
}

struct Tiles: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Cut a slide into tissue tiles at a target mpp and size, with tiles.csv giving level-0 coordinates.")

  @Argument(help: "A whole-slide image.") var slide: String
  @Option(help: "Target microns per pixel of the tiles.") var mpp: Double = 0.5
  @Option(help: "Tile side in pixels.") var size: Int = 224
  @Option(help: "Output directory (created if missing).") var out: String
  @Option(help: "Tile image format: png or jpg.") var format: String = "png"
  @Option(help: "Minimum tissue fraction for a tile to be kept (0...1).") var minTissue: Double = 0.25
  @Option(help: "The slide's level-0 microns per pixel, when the file does not record it.") var slideMpp: Double?
  @Option(help: "Relative mpp difference within which a level is read 1:1 instead of resampled.") var tolerance: Double = 0.01

  func validate() throws {
    guard mpp > 0 else { throw ValidationError("--mpp must be positive") }
    guard (16...4096).contains(size) else { throw ValidationError("--size must be 16...4096") }
    guard ["png", "jpg", "jpeg"].contains(format) else { throw ValidationError("--format must be png or jpg") }
  }

  func run() throws {
    let s = try Slide(path: slide)
    let tissue = try TissueDetector().detect(s)
    let tiler = try Tiler(
      slide: s, mpp: mpp, tileSize: size, overrideMPP: slideMpp, tissue: tissue, minTissue: minTissue, tolerance: tolerance,
      mppOption: "--slide-mpp")
    do {
      try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
    } catch {
      throw CLIError("\(out): cannot create output directory: \(error.localizedDescription)")
    }
    if let r = tissue.modalityReason { warn("eosin: warning: \(slide): \(r)") }
    var csv = "index,col,row,x,y,size0,tissue,mpp,file\n"
    let ext = format == "png" ? "png" : "jpg"
    var it = tiler.tiles().makeIterator()
    while let (t, img) = it.next() {
      let name = String(format: "tile_%05d_x%d_y%d.%@", t.index, t.x, t.y, ext)
      try ImageCodec.write(img, to: (out as NSString).appendingPathComponent(name))
      csv += "\(t.index),\(t.col),\(t.row),\(t.x),\(t.y),\(t.size0),\(fmt(t.tissue, 4)),\(fmt(tiler.grid.mpp, 4)),\(name)\n"
    }
    if let e = it.error { throw e }
    let csvPath = (out as NSString).appendingPathComponent("tiles.csv")
    do { try Data(csv.utf8).write(to: URL(fileURLWithPath: csvPath), options: .atomic) } catch {
      throw CLIError("\(csvPath): cannot write: \(error.localizedDescription)")
    }
    print(
      "wrote \(tiler.grid.tiles.count) tiles of \(size) px at \(fmt(tiler.grid.mpp, 4)) µm/px to \(out) (grid \(tiler.grid.cols)x\(tiler.grid.rows), level \(tiler.grid.level))"
    )
  }
}

/// Formats a number with a fixed number of decimals.
func fmt(_ x: Double, _ decimals: Int) -> String { String(format: "%.\(decimals)f", x) }

struct Mosaic: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract:
      "Build a pyramidal TIFF slide from tiles laid out in a grid (to run slide pipelines on labelled tile sets; opens in OpenSlide as generic-tiff)."
  )

  @Argument(help: "Images (jpg, png, tif) or folders of them, in order.") var inputs: [String]
  @Option(help: "Output TIFF.") var out: String
  @Option(help: "Tiles per row (default: the square root of the count, rounded up).") var columns: Int?
  @Option(help: "Level-0 microns per pixel to record (omit to write a slide without mpp).") var mpp: Double?
  @Option(help: "Scale every tile to this side in pixels (default: the first tile's width).") var tileSize: Int?

  func validate() throws {
    if let c = columns, c < 1 { throw ValidationError("--columns must be at least 1") }
    if let m = mpp, !(m > 0 && m < 1000) { throw ValidationError("--mpp must be a positive number of microns per pixel") }
    if let t = tileSize, !(16...4096).contains(t) { throw ValidationError("--tile-size must be 16...4096") }
  }

  func run() throws {
    let paths = try InputCollector.collect(inputs).map(\.0)
    let imgs = try paths.map { try ImageCodec.read($0) }
    let side = tileSize ?? imgs[0].width
    let cols = columns ?? Int(Double(imgs.count).squareRoot().rounded(.up))
    let rows = (imgs.count + cols - 1) / cols
    var base = RGBImage(width: cols * side, height: rows * side)
    for (k, im) in imgs.enumerated() {
      let t = resample(im, outWidth: side, outHeight: side)
      let x0 = (k % cols) * side, y0 = (k / cols) * side
      let rowBytes = side * 3
      for y in 0..<side {
        let d: Int = ((y0 + y) * base.width + x0) * 3
        let s: Int = y * rowBytes
        base.pixels.replaceSubrange(d..<(d + rowBytes), with: t.pixels[s..<(s + rowBytes)])
      }
    }
    let levels = max(1, min(4, Int(log2(Double(max(base.width, base.height)) / 512)) + 1))
    let tmp = out + ".tmp-\(getpid())"
    do {
      try TIFFWriter.writePyramid(base, to: tmp, levels: levels, tile: 256, mpp: mpp)
      guard rename(tmp, out) == 0 else { throw CLIError("\(out): cannot write: \(String(cString: strerror(errno)))") }
    } catch {
      try? FileManager.default.removeItem(atPath: tmp)
      throw error
    }
    print(
      "wrote \(out): \(imgs.count) tiles, \(cols) x \(rows), \(base.width) x \(base.height) px, \(levels) levels"
        + (mpp.map { ", \($0) µm/px" } ?? ", no mpp"))
  }
}
