import CJPEG
import CPNG
import CTIFF
import Foundation

/// The standalone image formats Eosin reads and writes.
public enum ImageFormat: String, Sendable {
  case jpeg, png, tiff

  /// Detects the format from the first bytes of a file, or nil when it is none of the three.
  public static func sniff(_ head: [UInt8]) -> ImageFormat? {
    if head.count >= 3 && head[0] == 0xFF && head[1] == 0xD8 && head[2] == 0xFF { return .jpeg }
    if head.count >= 8 && head[0..<8].elementsEqual([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) {
      return .png
    }
    if head.count >= 4
      && (head[0..<4].elementsEqual([0x49, 0x49, 0x2A, 0x00]) || head[0..<4].elementsEqual([0x4D, 0x4D, 0x00, 0x2A])
        || head[0..<4].elementsEqual([0x49, 0x49, 0x2B, 0x00]) || head[0..<4].elementsEqual([0x4D, 0x4D, 0x00, 0x2B]))
    {
      return .tiff
    }
    return nil
  }

  /// The format implied by a file name's extension when writing.
  public static func forWriting(_ path: String) -> ImageFormat? {
    switch (path as NSString).pathExtension.lowercased() {
    case "jpg", "jpeg": return .jpeg
    case "png": return .png
    default: return nil
    }
  }
}

/// Reads the first `n` bytes of a file (fewer when it is shorter).
func readHead(_ path: String, _ n: Int) -> [UInt8] {
  guard let h = FileHandle(forReadingAtPath: path) else { return [] }
  defer { try? h.close() }
  return [UInt8]((try? h.read(upToCount: n)) ?? Data())
}

/// JPEG, PNG and TIFF decode and encode for standalone tiles. All functions are thread-safe.
/// Plain images are limited to ``maxImagePixels``; larger images are slides, read by region.
public enum ImageCodec {
  /// The largest plain image Eosin decodes: 2^28 pixels (768 MB as RGB).
  public static let maxImagePixels = 1 << 28

  /// Decodes a JPEG, PNG or TIFF file to RGB8. Alpha is composited over white; grey becomes RGB.
  /// - Throws: `SlideError` naming the file: missing, empty, unknown type, or undecodable.
  public static func read(_ path: String) throws -> RGBImage {
    _ = try checkReadableFile(path)
    guard let fmt = ImageFormat.sniff(readHead(path, 8)) else { throw SlideError.unsupportedImage(path: path) }
    switch fmt {
    case .tiff: return try decodeTIFF(path: path)
    case .jpeg, .png:
      guard let data = FileManager.default.contents(atPath: path) else { throw SlideError.notReadable(path: path) }
      return fmt == .jpeg ? try decodeJPEG([UInt8](data), name: path) : try decodePNG([UInt8](data), name: path)
    }
  }

  /// Decodes JPEG bytes. `name` is used in error messages.
  public static func decodeJPEG(_ bytes: [UInt8], name: String = "<memory>") throws -> RGBImage {
    var w: Int32 = 0, h: Int32 = 0
    var out: UnsafeMutablePointer<UInt8>? = nil
    var err = [CChar](repeating: 0, count: 256)
    let rc = bytes.withUnsafeBufferPointer { b in
      eosin_jpeg_decode(b.baseAddress, b.count, &w, &h, &out, &err, err.count)
    }
    guard rc == 0, let p = out else { throw SlideError.imageDecode(path: name, message: String(cString: err)) }
    defer { eosin_jpeg_free(p) }
    return RGBImage(width: Int(w), height: Int(h), pixels: [UInt8](UnsafeBufferPointer(start: p, count: Int(w) * Int(h) * 3)))
  }

  /// Encodes an image as JPEG at `quality` (1...100).
  public static func encodeJPEG(_ img: RGBImage, quality: Int = 90) throws -> [UInt8] {
    var out: UnsafeMutablePointer<UInt8>? = nil
    var len = 0
    var err = [CChar](repeating: 0, count: 256)
    let rc = img.pixels.withUnsafeBufferPointer { b in
      eosin_jpeg_encode(b.baseAddress, Int32(img.width), Int32(img.height), Int32(quality), &out, &len, &err, err.count)
    }
    guard rc == 0, let p = out else { throw SlideError.imageEncode(path: "<memory>", message: String(cString: err)) }
    defer { eosin_jpeg_free(p) }
    return [UInt8](UnsafeBufferPointer(start: p, count: len))
  }

  /// Decodes PNG bytes (any bit depth or colour type) through libpng's simplified API.
  public static func decodePNG(_ bytes: [UInt8], name: String = "<memory>") throws -> RGBImage {
    var image = png_image()
    image.version = UInt32(PNG_IMAGE_VERSION)
    let ok = bytes.withUnsafeBufferPointer { b in png_image_begin_read_from_memory(&image, b.baseAddress, b.count) }
    guard ok != 0 else { throw SlideError.imageDecode(path: name, message: pngMessage(&image)) }
    image.format = UInt32(PNG_FORMAT_RGB)
    let w = Int(image.width), h = Int(image.height)
    // Limits before allocation: at most 2^28 pixels (``maxImagePixels``), and no more pixels than
    // deflate's best ratio (about 1032:1) lets the file hold.
    guard w > 0, h > 0, w * h <= maxImagePixels, w * h * 3 <= bytes.count * 1100 + (1 << 20) else {
      png_image_free(&image)
      throw SlideError.imageDecode(
        path: name, message: "declares \(w)x\(h) pixels, beyond the limit for a \(bytes.count)-byte file (at most 2^28 pixels)")
    }
    var px = [UInt8](repeating: 0, count: w * h * 3)
    var white = png_color(red: 255, green: 255, blue: 255)
    let done = bytes.withUnsafeBufferPointer { _ in
      px.withUnsafeMutableBytes { d in png_image_finish_read(&image, &white, d.baseAddress, Int32(w * 3), nil) }
    }
    guard done != 0 else { throw SlideError.imageDecode(path: name, message: pngMessage(&image)) }
    return RGBImage(width: w, height: h, pixels: px)
  }

  /// Encodes an image as PNG bytes.
  public static func encodePNG(_ img: RGBImage) throws -> [UInt8] {
    var image = png_image()
    image.version = UInt32(PNG_IMAGE_VERSION)
    image.width = UInt32(img.width)
    image.height = UInt32(img.height)
    image.format = UInt32(PNG_FORMAT_RGB)
    var size = 0
    // First call measures, second writes.
    let ok1 = img.pixels.withUnsafeBytes { s in
      png_image_write_to_memory(&image, nil, &size, 0, s.baseAddress, Int32(img.width * 3), nil)
    }
    guard ok1 != 0 else { throw SlideError.imageEncode(path: "<memory>", message: pngMessage(&image)) }
    var out = [UInt8](repeating: 0, count: size)
    let ok2 = img.pixels.withUnsafeBytes { s in
      out.withUnsafeMutableBytes { d in
        png_image_write_to_memory(&image, d.baseAddress, &size, 0, s.baseAddress, Int32(img.width * 3), nil)
      }
    }
    guard ok2 != 0 else { throw SlideError.imageEncode(path: "<memory>", message: pngMessage(&image)) }
    return Array(out[0..<size])
  }

  /// Decodes the first directory of a TIFF file.
  public static func decodeTIFF(path: String) throws -> RGBImage {
    var w: Int32 = 0, h: Int32 = 0
    var out: UnsafeMutablePointer<UInt8>? = nil
    var err = [CChar](repeating: 0, count: 512)
    guard eosin_tiff_read_rgb(path, &w, &h, &out, &err, err.count) == 0, let p = out else {
      throw SlideError.imageDecode(path: path, message: String(cString: err))
    }
    defer { eosin_tiff_free(p) }
    return RGBImage(width: Int(w), height: Int(h), pixels: [UInt8](UnsafeBufferPointer(start: p, count: Int(w) * Int(h) * 3)))
  }

  /// Writes an image; the format follows the extension (`.png`, `.jpg`, `.jpeg`). Atomic: the
  /// file appears complete or not at all.
  public static func write(_ img: RGBImage, to path: String, jpegQuality: Int = 90) throws {
    let bytes: [UInt8]
    switch ImageFormat.forWriting(path) {
    case .png: bytes = try encodePNG(img)
    case .jpeg: bytes = try encodeJPEG(img, quality: jpegQuality)
    default: throw SlideError.imageEncode(path: path, message: "unknown extension; use .png or .jpg")
    }
    do {
      try Data(bytes).write(to: URL(fileURLWithPath: path), options: .atomic)
    } catch {
      throw SlideError.imageEncode(path: path, message: error.localizedDescription)
    }
  }

  private static func pngMessage(_ image: inout png_image) -> String {
    withUnsafeBytes(of: &image.message) { raw in
      String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
    }
  }
}
