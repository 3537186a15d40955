import EosinSlide
import Foundation

/// Shared helpers for Eosin's tests: temporary folders, synthetic slides and images, and the
/// optional real data under `../shared/data`.
public enum TestSupport {
  /// A fresh temporary directory, removed by the caller if it wishes.
  public static func tempDir(_ name: String = "eosin-test") -> String {
    let p = NSTemporaryDirectory() + "\(name)-\(UUID().uuidString.prefix(8))"
    try! FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
    return p
  }

  /// The project root (the folder holding Package.swift), found from this source file.
  public static var projectRoot: String {
    var url = URL(fileURLWithPath: #filePath)
    while url.path != "/" {
      url.deleteLastPathComponent()
      if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url.path }
    }
    return FileManager.default.currentDirectoryPath
  }

  /// `../shared/data` beside the project, or nil when absent (a user's clone).
  public static var sharedData: String? {
    let p = (projectRoot as NSString).appendingPathComponent("../shared/data")
    return FileManager.default.fileExists(atPath: p) ? (p as NSString).standardizingPath : nil
  }

  /// The default chat language model (SmolLM2-135M-Instruct Q4_1 GGUF): `$EOSIN_LM`, else Eosin's
  /// cache folder where `make lm` puts it; nil when absent.
  public static var smolLM2: String? {
    let env = ProcessInfo.processInfo.environment
    if let e = env["EOSIN_LM"], !e.isEmpty, FileManager.default.fileExists(atPath: e) { return e }
    let base = env["XDG_CACHE_HOME"] ?? ((env["HOME"] ?? NSTemporaryDirectory()) + "/.cache")
    let p = base + "/eosin/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    return FileManager.default.fileExists(atPath: p) ? p : nil
  }

  /// A deterministic H&E-like image: white glass with pink/purple tissue in an ellipse that
  /// covers the middle, plus dark-purple "nuclei" dots. Pixels depend only on (x, y).
  public static func syntheticHE(width: Int, height: Int) -> RGBImage {
    var img = RGBImage(width: width, height: height)
    let cx = Double(width) * 0.45, cy = Double(height) * 0.5
    let rx = Double(width) * 0.3, ry = Double(height) * 0.35
    for y in 0..<height {
      for x in 0..<width {
        let dx = (Double(x) - cx) / rx, dy = (Double(y) - cy) / ry
        guard dx * dx + dy * dy <= 1 else { continue }
        let i = (y * width + x) * 3
        let nucleus = ((x / 7) * 31 + (y / 7) * 17) % 5 == 0 && (x % 7 < 4) && (y % 7 < 4)
        if nucleus {
          img.pixels[i] = 90; img.pixels[i + 1] = 50; img.pixels[i + 2] = 140
        } else {
          img.pixels[i] = 230; img.pixels[i + 1] = UInt8(130 + (x * 3 + y) % 40); img.pixels[i + 2] = 190
        }
      }
    }
    return img
  }

  /// Writes a synthetic pyramidal slide and returns its path.
  @discardableResult
  public static func writeSyntheticSlide(
    at path: String, width: Int = 2048, height: Int = 1536, levels: Int = 3, tile: Int = 256, mpp: Double? = 0.5,
    description: String? = nil, extraStripped: [(RGBImage, String)] = []
  ) throws -> String {
    try TIFFWriter.writePyramid(
      syntheticHE(width: width, height: height), to: path, levels: levels, tile: tile, mpp: mpp,
      description: description, extraStripped: extraStripped)
    return path
  }
}
