import CTIFF
import Foundation

/// Writes tiled pyramidal TIFF files that OpenSlide opens as `generic-tiff`, and plain TIFFs.
///
/// Used to make synthetic slides for tests and benchmarks, and to export regions. Each level is
/// made by halving the previous one with area averaging.
public enum TIFFWriter {
  /// Compression for the written directories.
  public enum Compression: Int32, Sendable {
    case none = 1
    case jpeg = 7
    case deflate = 8
  }

  /// Writes `base` as level 0 of a pyramid with `levels` levels (each half the size of the one
  /// before), tiled `tile` x `tile`.
  /// - Parameters:
  ///   - mpp: level-0 microns per pixel, stored as XResolution/YResolution in pixels per cm;
  ///     nil omits the tags (a slide without mpp).
  ///   - description: ImageDescription of level 0.
  ///   - extraStripped: extra non-tiled directories appended after the pyramid, each with its
  ///     own description (for example an associated-image lookalike).
  /// - Throws: ``SlideError/imageEncode`` naming the path.
  public static func writePyramid(
    _ base: RGBImage, to path: String, levels: Int = 3, tile: Int = 256, mpp: Double?,
    description: String? = nil, compression: Compression = .deflate,
    extraStripped: [(RGBImage, String)] = []
  ) throws {
    precondition(levels >= 1 && tile % 16 == 0)
    var imgs = [base]
    for _ in 1..<levels {
      let p = imgs.last!
      imgs.append(resample(p, outWidth: max(1, p.width / 2), outHeight: max(1, p.height / 2)))
    }
    var dirs: [(RGBImage, Int, String?, Double, Int32)] = []
    for (i, im) in imgs.enumerated() {
      let ppcm = mpp.map { 10_000 / ($0 * Double(base.width) / Double(im.width)) } ?? 0
      dirs.append((im, tile, i == 0 ? description : nil, ppcm, i == 0 ? 0 : 1))
    }
    for (im, d) in extraStripped { dirs.append((im, 0, d, 0, 1)) }
    try write(dirs, to: path, compression: compression)
  }

  /// Writes one plain (stripped) RGB TIFF.
  public static func writePlain(_ img: RGBImage, to path: String) throws {
    try write([(img, 0, nil, 0, 0)], to: path, compression: .deflate)
  }

  private static func write(_ dirs: [(RGBImage, Int, String?, Double, Int32)], to path: String, compression: Compression) throws {
    // Keep every buffer and C string alive across the C call.
    let descs: [UnsafeMutablePointer<CChar>?] = dirs.map { $0.2.map { strdup($0) } ?? nil }
    defer { for d in descs { free(d) } }
    var err = [CChar](repeating: 0, count: 512)
    var pinned: [UnsafeMutableBufferPointer<UInt8>] = []
    defer { for p in pinned { p.deallocate() } }
    var cdirs: [eosin_tiff_dir] = []
    for (i, d) in dirs.enumerated() {
      let buf = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: d.0.pixels.count)
      _ = buf.initialize(from: d.0.pixels)
      pinned.append(buf)
      cdirs.append(
        eosin_tiff_dir(
          rgb: UnsafePointer(buf.baseAddress), width: Int32(d.0.width), height: Int32(d.0.height), tile: Int32(d.1),
          description: UnsafePointer(descs[i]), pixels_per_cm: d.3, subfile_type: d.4,
          compression: d.1 == 0 && compression == .jpeg ? Compression.deflate.rawValue : compression.rawValue))
    }
    let rc = eosin_tiff_write(path, cdirs, Int32(cdirs.count), &err, err.count)
    if rc != 0 { throw SlideError.imageEncode(path: path, message: String(cString: err)) }
  }
}
