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
    for (i, (t, p)) in zip(tiles, r.tiles).enumerated() {
      let ring = [[t.x, t.y], [t.x + s, t.y], [t.x + s, t.y + s], [t.x, t.y + s], [t.x, t.y]]
      var meas: [String: Any] = ["probability": ClassificationExport.json(p.probs[p.top]), "tissue": t.tissue]
      for (k, n) in r.classNames.enumerated() { meas["p(\(n))"] = ClassificationExport.json(p.probs[k]) }
      let flags = i < r.tileFlags.count ? r.tileFlags[i] : []
      features.append([
        "type": "Feature",
        "geometry": ["type": "Polygon", "coordinates": [ring]],
        "properties": [
          "objectType": "detection",
          "classification": ["name": r.classNames[p.top], "color": color(p.top)],
          "isLocked": false,
          "measurements": meas,
          "probability": ClassificationExport.json(p.probs[p.top]),
          "flag": flags.isEmpty ? "ok" : "review",
          "flags": flags.map(\.code),
          "reasons": flags.map(\.reason),
        ],
      ])
    }
    return ["type": "FeatureCollection", "features": features]
  }
}

/// The rows and records of `eosin classify`, in one place so that the table, the CSV, the JSON
/// and the GeoJSON show the same verdicts and the same review flags.
///
/// CSV: one file, one row per input and per tile, told apart by `kind`:
/// `kind,input,x,y,verdict,probability,flagged,flags,reasons,temperature,p(CLASS)...`
/// - `kind`: `image` (a standalone image), `slide` (the slide verdict) or `tile` (a tile of the
///   slide on the row above; `x`,`y` are its level-0 top-left corner);
/// - `flagged`: `yes` or `no`; `flags`: the review codes, `;`-separated; `reasons`: the same in
///   words, `; `-separated;
/// - `temperature`: the calibration temperature the probabilities were computed at.
public enum ClassificationExport {
  /// The CSV header for a prompt set's classes.
  public static func csvHeader(_ classNames: [String]) -> String {
    "kind,input,x,y,verdict,probability,flagged,flags,reasons,temperature,"
      + classNames.map { csvField("p(\($0))") }.joined(separator: ",") + "\n"
  }

  /// One CSV row.
  public static func csvRow(
    kind: String, input: String, x: Int? = nil, y: Int? = nil, verdict: String, probs: [Float], top: Int, flags: [ReviewFlag],
    temperature: Float
  ) -> String {
    [
      kind, csvField(input), x.map(String.init) ?? "", y.map(String.init) ?? "", csvField(verdict),
      probs[top].isFinite ? String(format: "%.4f", probs[top]) : "nan", flags.isEmpty ? "no" : "yes",
      csvField(flags.map(\.code).joined(separator: ";")),
      csvField(flags.map(\.reason).joined(separator: "; ")), String(format: "%.4f", temperature),
    ].joined(separator: ",") + "," + probs.map { String(format: "%.4f", $0) }.joined(separator: ",") + "\n"
  }

  /// The slide row and one row per tile.
  public static func csvRows(_ r: SlideResult, input: AnalyzedSlide) -> String {
    let path = input.paths.joined(separator: ";")
    var out = csvRow(
      kind: "slide", input: path, verdict: r.classNames[r.verdict], probs: r.probs, top: r.verdict, flags: r.flags,
      temperature: r.temperature)
    for (i, (t, p)) in zip(input.embeddings.tiles, r.tiles).enumerated() {
      let images = input.kind == .images
      out += csvRow(
        kind: images ? "image" : "tile", input: images ? input.paths[i] : path, x: images ? nil : t.x, y: images ? nil : t.y,
        verdict: r.classNames[p.top], probs: p.probs, top: p.top, flags: r.tileFlags[i], temperature: r.temperature)
    }
    return out
  }

  /// A number for JSON: non-finite values (from damaged weights) become null, never NaN, which
  /// JSON cannot hold.
  public static func json(_ x: Float) -> Any { x.isFinite ? Double(x) : NSNull() }

  /// A review flag list as JSON.
  public static func json(_ flags: [ReviewFlag]) -> [[String: String]] { flags.map { ["code": $0.code, "reason": $0.reason] } }

  /// One standalone image's JSON record.
  public static func imageJSON(path: String, prediction p: TilePrediction, flags: [ReviewFlag], classNames: [String])
    -> [String: Any]
  {
    [
      "kind": "image", "input": path, "verdict": classNames[p.top], "probability": json(p.probs[p.top]),
      "probabilities": Dictionary(uniqueKeysWithValues: zip(classNames, p.probs.map { json($0) })), "flagged": !flags.isEmpty,
      "flags": json(flags),
    ]
  }

  /// One slide's JSON record: verdict, probabilities, flags, evidence, and every tile with its
  /// own flags.
  public static func slideJSON(_ r: SlideResult, input: AnalyzedSlide, timing: [String: Double]) -> [String: Any] {
    let e = input.embeddings
    return [
      "kind": "slide", "input": input.paths[0], "verdict": r.classNames[r.verdict], "probability": json(r.probs[r.verdict]),
      "probabilities": Dictionary(uniqueKeysWithValues: zip(r.classNames, r.probs.map { json($0) })),
      "fractions": Dictionary(uniqueKeysWithValues: zip(r.classNames, r.fractions)),
      "evidence": Dictionary(
        uniqueKeysWithValues: zip(
          r.classNames,
          r.evidence.map { $0.map { ["x": $0.x, "y": $0.y, "size": $0.size, "probability": json($0.probability)] } })),
      "flagged": !r.flags.isEmpty, "flags": json(r.flags), "mpp": e.mpp, "tile_size": e.tileSize, "top_k": r.topK,
      "cached": e.fromCache, "timing": timing,
      "confidence": [
        "probability": json(r.confidence.probability), "margin": json(r.confidence.margin),
        "prompt_spread": json(r.confidence.promptSpread), "domain": json(r.confidence.domain),
        "tissue_fraction": input.facts.tissueFraction ?? 1, "outlier": r.confidence.outlier.map { json($0) } ?? NSNull(),
      ],
      "tiles": zip(e.tiles, r.tiles).enumerated().map { i, tp in
        [
          "x": tp.0.x, "y": tp.0.y, "verdict": r.classNames[tp.1.top], "probability": json(tp.1.probs[tp.1.top]),
          "flagged": !r.tileFlags[i].isEmpty, "flags": r.tileFlags[i].map(\.code),
        ] as [String: Any]
      },
    ]
  }
}

/// A CSV field, quoted when it holds a comma, quote or newline.
public func csvField(_ s: String) -> String {
  s.contains(",") || s.contains("\"") || s.contains("\n") || s.contains("\r")
    ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
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
