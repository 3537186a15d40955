import COpenSlide
import Foundation

/// One pyramid level of a slide.
public struct SlideLevel: Equatable, Sendable {
  public var width: Int
  public var height: Int
  /// Level-0 pixels per pixel of this level.
  public var downsample: Double
}

/// A whole-slide image opened through OpenSlide. Owns the `openslide_t` handle and closes it in
/// `deinit`.
///
/// OpenSlide's errors are sticky: after every call this class checks `openslide_get_error` and
/// turns a set error into a thrown ``SlideError``. `readRegion` is thread-safe (OpenSlide
/// serialises what it must); metadata accessors read values cached at open.
///
/// Privacy: ``properties`` holds only a whitelist of non-identifying keys. Label and macro
/// images, and every other property, need an explicit call naming them.
public final class Slide: @unchecked Sendable {
  public let path: String
  private let osr: OpaquePointer
  /// The OpenSlide vendor string, such as `aperio` or `generic-tiff`.
  public let vendor: String
  public let levels: [SlideLevel]
  /// Microns per pixel at level 0, or nil when the file does not say.
  public let mppX: Double?
  public let mppY: Double?
  /// Scanner objective magnification, such as 20, or nil when unknown.
  public let objectivePower: Double?
  /// Non-identifying properties only (see ``Slide/safePropertyKeys``).
  public let properties: [String: String]

  /// Property keys that can never identify a patient. Everything else stays behind
  /// ``identifyingProperties()``.
  public static let safePropertyKeys: Set<String> = [
    "openslide.vendor", "openslide.mpp-x", "openslide.mpp-y", "openslide.objective-power",
    "openslide.level-count", "openslide.background-color", "openslide.bounds-x", "openslide.bounds-y",
    "openslide.bounds-width", "openslide.bounds-height", "openslide.quickhash-1",
  ]

  /// Opens a slide.
  /// - Parameter path: a whole-slide image file any OpenSlide vendor driver reads.
  /// - Throws: ``SlideError`` for a missing, unreadable, empty or unrecognised file, a plain
  ///   JPEG/PNG image (with a hint to pass it as an image), or an OpenSlide error.
  public init(path: String) throws {
    self.path = path
    _ = try checkReadableFile(path)
    let head = readHead(path, 8)
    if let fmt = ImageFormat.sniff(head), fmt != .tiff {
      throw SlideError.imageNotSlide(path: path, kind: fmt.rawValue.uppercased())
    }
    guard openslide_detect_vendor(path) != nil, let h = openslide_open(path) else {
      if ImageFormat.sniff(head) == .tiff {
        throw SlideError.invalidArgument(
          path: path,
          message:
            "is a TIFF that OpenSlide cannot open as a slide (truncated, corrupt, or a plain untiled TIFF; a plain TIFF image can be passed as an image input instead)"
        )
      }
      throw SlideError.unrecognized(path: path)
    }
    osr = h
    if let e = openslide_get_error(h) {
      let msg = String(cString: e)
      openslide_close(h)
      throw SlideError.openSlide(path: path, message: msg)
    }
    func prop(_ k: String) -> String? {
      guard let v = openslide_get_property_value(h, k) else { return nil }
      return String(cString: v)
    }
    vendor = prop("openslide.vendor") ?? String(cString: openslide_detect_vendor(path))
    let n = Int(openslide_get_level_count(h))
    var lv: [SlideLevel] = []
    for i in 0..<max(n, 0) {
      var w: Int64 = 0, hh: Int64 = 0
      openslide_get_level_dimensions(h, Int32(i), &w, &hh)
      lv.append(SlideLevel(width: Int(w), height: Int(hh), downsample: openslide_get_level_downsample(h, Int32(i))))
    }
    levels = lv
    var safe: [String: String] = [:]
    if let names = openslide_get_property_names(h) {
      var i = 0
      while let c = names[i] {
        let k = String(cString: c)
        if Slide.safePropertyKeys.contains(k) || (k.hasPrefix("openslide.level[") && !k.contains("description")) {
          safe[k] = prop(k)
        }
        i += 1
      }
    }
    var mx = prop("openslide.mpp-x").flatMap(Double.init)
    var my = prop("openslide.mpp-y").flatMap(Double.init)
    if mx == nil, let r = Slide.mppFromTIFF(res: prop("tiff.XResolution"), unit: prop("tiff.ResolutionUnit")) {
      mx = r
      my = Slide.mppFromTIFF(res: prop("tiff.YResolution"), unit: prop("tiff.ResolutionUnit")) ?? r
      safe["openslide.mpp-x"] = String(mx!)
      safe["openslide.mpp-y"] = String(my!)
    }
    mppX = mx.flatMap { $0 > 0 ? $0 : nil }
    mppY = my.flatMap { $0 > 0 ? $0 : nil } ?? mppX
    objectivePower = prop("openslide.objective-power").flatMap(Double.init)
    properties = safe
    if let e = openslide_get_error(h) {
      let msg = String(cString: e)
      openslide_close(h)
      throw SlideError.openSlide(path: path, message: msg)
    }
    if levels.isEmpty || levels[0].width <= 0 || levels[0].height <= 0 {
      openslide_close(h)
      throw SlideError.openSlide(path: path, message: "slide has no image levels")
    }
  }

  deinit { openslide_close(osr) }

  /// TIFF resolution tags to microns per pixel. Only centimetre or inch units with a plausible
  /// result (0.05–50 µm/px) count; a default 72-dpi tag is not a real resolution.
  static func mppFromTIFF(res: String?, unit: String?) -> Double? {
    guard let r = res.flatMap(Double.init), r > 0, let u = unit?.lowercased() else { return nil }
    let mpp: Double
    if u.contains("centimeter") || u == "3" {
      mpp = 10_000 / r
    } else if u.contains("inch") || u == "2" {
      mpp = 25_400 / r
    } else {
      return nil
    }
    return (0.05...50).contains(mpp) ? mpp : nil
  }

  /// Level-0 width and height.
  public var dimensions: (width: Int, height: Int) { (levels[0].width, levels[0].height) }

  /// The content hash OpenSlide computes over the slide's pixel data (`openslide.quickhash-1`),
  /// or nil for formats that have none.
  public var quickHash: String? { properties["openslide.quickhash-1"] }

  /// The level whose downsample is the largest not above `downsample` (OpenSlide's rule).
  public func bestLevel(forDownsample downsample: Double) -> Int {
    let l = Int(openslide_get_best_level_for_downsample(osr, downsample * (1 + 1e-9)))
    return l < 0 ? 0 : min(l, levels.count - 1)
  }

  /// Reads a region as RGB8, un-premultiplied from OpenSlide's ARGB and composited over white
  /// (or the slide's own background colour), so empty areas are background, not black.
  ///
  /// - Parameters:
  ///   - x: left edge in level-0 pixels.
  ///   - y: top edge in level-0 pixels.
  ///   - level: pyramid level to read from.
  ///   - width: width in pixels of `level`.
  ///   - height: height in pixels of `level`.
  /// - Throws: ``SlideError/regionOutside`` when the region does not overlap the slide, or an
  ///   OpenSlide error. Allocates `width * height * 7` bytes. Thread-safe.
  public func readRegion(x: Int, y: Int, level: Int, width: Int, height: Int) throws -> RGBImage {
    var argb = [UInt32](repeating: 0, count: 0)
    return try readRegion(x: x, y: y, level: level, width: width, height: height, scratch: &argb)
  }

  /// As ``readRegion(x:y:level:width:height:)``, reusing a caller-owned ARGB scratch buffer.
  public func readRegion(
    x: Int, y: Int, level: Int, width: Int, height: Int, scratch argb: inout [UInt32]
  ) throws -> RGBImage {
    guard level >= 0 && level < levels.count else {
      throw SlideError.invalidArgument(path: path, message: "level \(level) does not exist (slide has \(levels.count))")
    }
    guard width > 0 && height > 0 && width <= 1 << 15 && height <= 1 << 15 else {
      throw SlideError.invalidArgument(path: path, message: "region size \(width)x\(height) must be 1...32768 per side")
    }
    let ds = levels[level].downsample
    let (W, H) = dimensions
    let x1 = Double(x) + Double(width) * ds, y1 = Double(y) + Double(height) * ds
    if Double(x) >= Double(W) || Double(y) >= Double(H) || x1 <= 0 || y1 <= 0 {
      throw SlideError.regionOutside(path: path, x: x, y: y, width: width, height: height, slideWidth: W, slideHeight: H)
    }
    let n = width * height
    if argb.count < n { argb = [UInt32](repeating: 0, count: n) }
    argb.withUnsafeMutableBufferPointer {
      openslide_read_region(osr, $0.baseAddress, Int64(x), Int64(y), Int32(level), Int64(width), Int64(height))
    }
    if let e = openslide_get_error(osr) { throw SlideError.openSlide(path: path, message: String(cString: e)) }
    var out = RGBImage(width: width, height: height, pixels: [UInt8](repeating: 0, count: n * 3))
    let bg = background
    argb.withUnsafeBufferPointer { s in
      out.pixels.withUnsafeMutableBufferPointer { d in unpremultiply(s.baseAddress!, d.baseAddress!, n, bg) }
    }
    return out
  }

  /// Background colour: `openslide.background-color` when set, else white.
  public var background: (UInt8, UInt8, UInt8) {
    guard let hex = properties["openslide.background-color"], hex.count == 6, let v = UInt32(hex, radix: 16) else {
      return (255, 255, 255)
    }
    return (UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF))
  }

  /// A thumbnail whose longer side is at most `maxSize` pixels, area-averaged from the best level.
  /// Reads the level in horizontal bands, so memory stays bounded whatever the slide size.
  /// - Returns: the image and its downsample relative to level 0 (x and y).
  public func thumbnail(maxSize: Int) throws -> (image: RGBImage, downsampleX: Double, downsampleY: Double) {
    let (W, H) = dimensions
    let ds = max(1.0, Double(max(W, H)) / Double(maxSize))
    let tw = max(1, Int((Double(W) / ds).rounded())), th = max(1, Int((Double(H) / ds).rounded()))
    return (try renderDownsampled(outWidth: tw, outHeight: th), Double(W) / Double(tw), Double(H) / Double(th))
  }

  /// A thumbnail at a target resolution in microns per pixel (for example 16 µm/px for tissue
  /// detection), capped at `maxSize` pixels on the longer side. Falls back to `maxSize` when the
  /// slide has no mpp.
  public func thumbnail(targetMPP: Double, maxSize: Int = 4096) throws -> (
    image: RGBImage, downsampleX: Double, downsampleY: Double
  ) {
    guard let m = mppX else { return try thumbnail(maxSize: min(maxSize, 1024)) }
    let (W, H) = dimensions
    let ds = max(1.0, targetMPP / m)
    let side = Int((Double(max(W, H)) / ds).rounded(.up))
    return try thumbnail(maxSize: max(1, min(side, maxSize)))
  }

  /// Renders the whole slide at `outWidth` x `outHeight` from the best level, band by band.
  func renderDownsampled(outWidth: Int, outHeight: Int) throws -> RGBImage {
    let (W, H) = dimensions
    let dsx = Double(W) / Double(outWidth), dsy = Double(H) / Double(outHeight)
    let level = bestLevel(forDownsample: min(dsx, dsy))
    let L = levels[level]
    let lds = L.downsample
    var out = RGBImage(width: outWidth, height: outHeight)
    // Band height in output rows so each read is at most ~16 Mpx.
    let rowsPerBand = max(1, Int(Double(1 << 24) / (Double(L.width) * dsy / lds)))
    var scratch: [UInt32] = []
    var oy = 0
    while oy < outHeight {
      let oh = min(rowsPerBand, outHeight - oy)
      // Level-L source rows covering output rows [oy, oy+oh).
      let sy0 = Double(oy) * dsy / lds, sy1 = Double(oy + oh) * dsy / lds
      let ry0 = Int(sy0.rounded(.down)), ry1 = min(L.height, Int(sy1.rounded(.up)))
      let band = try readRegion(
        x: 0, y: Int((Double(ry0) * lds).rounded()), level: level, width: L.width, height: max(1, ry1 - ry0),
        scratch: &scratch)
      let part = resample(
        band, x: 0, y: sy0 - Double(ry0), width: Double(W) / lds, height: sy1 - sy0, outWidth: outWidth, outHeight: oh)
      out.pixels.replaceSubrange((oy * outWidth * 3)..<((oy + oh) * outWidth * 3), with: part.pixels)
      oy += oh
    }
    return out
  }

  /// The names of associated images (label, macro, thumbnail). Names only: no pixels.
  public var associatedImageNames: [String] {
    guard let names = openslide_get_associated_image_names(osr) else { return [] }
    var out: [String] = []
    var i = 0
    while let c = names[i] {
      out.append(String(cString: c))
      i += 1
    }
    return out
  }

  /// Reads an associated image. Label and macro images can show patient identifiers, so the
  /// caller must pass `allowIdentifying: true` to read them; nothing in Eosin's outputs does.
  public func associatedImage(_ name: String, allowIdentifying: Bool) throws -> RGBImage {
    if (name == "label" || name == "macro") && !allowIdentifying {
      throw SlideError.invalidArgument(
        path: path, message: "associated image '\(name)' may identify a patient and is not read by default")
    }
    var w: Int64 = 0, h: Int64 = 0
    openslide_get_associated_image_dimensions(osr, name, &w, &h)
    guard w > 0, h > 0, w * h <= 1 << 28 else {
      throw SlideError.invalidArgument(path: path, message: "no associated image '\(name)'")
    }
    var argb = [UInt32](repeating: 0, count: Int(w * h))
    argb.withUnsafeMutableBufferPointer { openslide_read_associated_image(osr, name, $0.baseAddress) }
    if let e = openslide_get_error(osr) { throw SlideError.openSlide(path: path, message: String(cString: e)) }
    var out = RGBImage(width: Int(w), height: Int(h), pixels: [UInt8](repeating: 0, count: Int(w * h) * 3))
    argb.withUnsafeBufferPointer { s in
      out.pixels.withUnsafeMutableBufferPointer { d in unpremultiply(s.baseAddress!, d.baseAddress!, Int(w * h), (255, 255, 255))
      }
    }
    return out
  }

  /// Every property, including ones that may identify a patient. Only for an explicit user
  /// request; never used by Eosin's outputs.
  public func identifyingProperties() -> [String: String] {
    var all: [String: String] = [:]
    guard let names = openslide_get_property_names(osr) else { return all }
    var i = 0
    while let c = names[i] {
      if let v = openslide_get_property_value(osr, c) { all[String(cString: c)] = String(cString: v) }
      i += 1
    }
    return all
  }
}

/// Premultiplied ARGB (native-endian UInt32) to RGB8 composited over `bg`. Shape: n pixels.
/// out = premul + (255 - a) * bg / 255, which equals un-premultiplying then blending with `bg`.
@inline(__always)
func unpremultiply(_ src: UnsafePointer<UInt32>, _ dst: UnsafeMutablePointer<UInt8>, _ n: Int, _ bg: (UInt8, UInt8, UInt8)) {
  let br = UInt32(bg.0), bgg = UInt32(bg.1), bb = UInt32(bg.2)
  for i in 0..<n {
    let p = src[i]
    let a = p >> 24
    let r = (p >> 16) & 0xFF, g = (p >> 8) & 0xFF, b = p & 0xFF
    if a == 255 {
      dst[3 * i] = UInt8(truncatingIfNeeded: r)
      dst[3 * i + 1] = UInt8(truncatingIfNeeded: g)
      dst[3 * i + 2] = UInt8(truncatingIfNeeded: b)
    } else {
      let ia = 255 - a
      dst[3 * i] = UInt8(min(255, r + (ia * br + 127) / 255))
      dst[3 * i + 1] = UInt8(min(255, g + (ia * bgg + 127) / 255))
      dst[3 * i + 2] = UInt8(min(255, b + (ia * bb + 127) / 255))
    }
  }
}
