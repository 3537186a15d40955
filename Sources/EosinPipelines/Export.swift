import EosinSlide
import Foundation

/// QuPath-compatible GeoJSON: a FeatureCollection with one Polygon feature per tile, in level-0
/// pixel coordinates, with `objectType`, a `classification` object (name and RGB colour) and
/// `measurements`, which is what QuPath's GeoJSON import reads.
public enum GeoJSON {
  /// A stable colour per class index.
  public static func color(_ k: Int) -> [Int] {
    let palette = [
      [200, 40, 40], [40, 120, 200], [40, 160, 70], [220, 150, 30], [140, 60, 180], [30, 170, 170], [120, 120, 120],
      [230, 90, 160],
    ]
    return palette[k % palette.count]
  }

  public static func tiles(_ r: SlideResult, tiles: [TileRef], extent0: Double) -> [String: Any] {
    var features: [[String: Any]] = []
    let s = Int(extent0.rounded())
    for (t, p) in zip(tiles, r.tiles) {
      let ring = [[t.x, t.y], [t.x + s, t.y], [t.x + s, t.y + s], [t.x, t.y + s], [t.x, t.y]]
      var meas: [String: Any] = ["probability": Double(p.probs[p.top]), "tissue": t.tissue]
      for (k, n) in r.classNames.enumerated() { meas["p(\(n))"] = Double(p.probs[k]) }
      features.append([
        "type": "Feature",
        "geometry": ["type": "Polygon", "coordinates": [ring]],
        "properties": [
          "objectType": "detection",
          "classification": ["name": r.classNames[p.top], "color": color(p.top)],
          "isLocked": false,
          "measurements": meas,
          "probability": Double(p.probs[p.top]),
          "flag": p.probs[p.top] < 0.6 || p.margin < 0.15 ? "review" : "ok",
        ],
      ])
    }
    return ["type": "FeatureCollection", "features": features]
  }
}

/// Writes data atomically, with a clear error naming the path.
public func writeAtomically(_ data: Data, to path: String) throws {
  do {
    try FileManager.default.createDirectory(
      atPath: (path as NSString).deletingLastPathComponent.isEmpty ? "." : (path as NSString).deletingLastPathComponent,
      withIntermediateDirectories: true)
    try data.write(to: URL(fileURLWithPath: path), options: .atomic)
  } catch {
    throw PipelineError.file(path: path, message: "cannot write: \(error.localizedDescription)")
  }
}
