import EosinSlide
import EosinWeights
import Foundation

/// One analysed input for one model: a slide (or a set of images taken as the tiles of one
/// case), its facts, its tissue mask, its tile grid and its tile embeddings. Built once per input
/// and model by ``analyze(_:bundle:overrideMPP:minTissue:cacheDir:progress:)``, then taken by
/// the classifier (``classify(_:policy:topK:)``), the chat session, the report drafter, heatmaps
/// and exports, so nothing is reopened or re-embedded.
public final class AnalyzedSlide: @unchecked Sendable {
  /// A whole-slide image, or standalone images treated as one case.
  public enum Kind: String, Sendable { case slide, images }

  public let kind: Kind
  /// The slide's path, or the images' paths in tile order.
  public let paths: [String]
  /// The open slide (nil for an image set).
  public let slide: Slide?
  /// The tissue mask (nil for an image set).
  public let tissue: TissueMask?
  /// What bears on review independent of the model: missing mpp, modality, tissue share.
  public let facts: InputFacts
  public let embeddings: SlideEmbeddings
  /// The level-0 mpp used for tiling: `--mpp` when given, else the file's (nil for images).
  public let mpp: Double?
  /// The slide's content hash (OpenSlide quickhash or sha256), or the images' combined sha256.
  public let contentHash: String
  /// Seconds spent detecting tissue (zero for images).
  public let tissueSeconds: Double

  init(
    kind: Kind, paths: [String], slide: Slide?, tissue: TissueMask?, facts: InputFacts, embeddings: SlideEmbeddings,
    mpp: Double?, contentHash: String, tissueSeconds: Double
  ) {
    self.kind = kind
    self.paths = paths
    self.slide = slide
    self.tissue = tissue
    self.facts = facts
    self.embeddings = embeddings
    self.mpp = mpp
    self.contentHash = contentHash
    self.tissueSeconds = tissueSeconds
  }

  /// Opens and analyses one slide, or several images as one case.
  /// - Parameters:
  ///   - overrideMPP: the slide's level-0 mpp when the file lacks it (`--mpp`, a manifest's
  ///     `mpp` column).
  ///   - progress: (tiles done, total) after each batch.
  /// - Throws: the slide, image or tiling error, naming the file.
  public static func analyze(
    _ paths: [String], bundle: ModelBundle, overrideMPP: Double? = nil, minTissue: Double = 0.25, cacheDir: String?,
    progress: (Int, Int) -> Void = { _, _ in }
  ) throws -> AnalyzedSlide {
    try analyze(
      paths, encoder: bundle.featureEncoder, overrideMPP: overrideMPP, minTissue: minTissue, cacheDir: cacheDir,
      progress: progress)
  }

  /// Opens and analyses one slide, or several images as one case, with any feature encoder
  /// (`eosin embed --encoder DIR`).
  public static func analyze(
    _ paths: [String], encoder: FeatureEncoder, overrideMPP: Double? = nil, minTissue: Double = 0.25, cacheDir: String?,
    progress: (Int, Int) -> Void = { _, _ in }
  ) throws -> AnalyzedSlide {
    guard !paths.isEmpty else { throw PipelineError.input("nothing to open") }
    let items = try InputCollector.collect(paths)
    if items.count == 1 && items[0].1 == .slide {
      return try analyze(
        slide: try Slide(path: items[0].0), encoder: encoder, overrideMPP: overrideMPP, minTissue: minTissue, cacheDir: cacheDir,
        progress: progress)
    }
    if let s = items.first(where: { $0.1 == .slide }) {
      throw PipelineError.file(path: s.0, message: "a slide must be opened on its own, not with other files")
    }
    let imgs = try items.map { try ImageCodec.read($0.0) }
    let hash = SHA256.hex(Array(try items.map { try SHA256.hex(fileAt: $0.0) }.joined(separator: "|").utf8))
    progress(0, imgs.count)
    return images(imgs, names: items.map(\.0), contentHash: hash, encoder: encoder)
  }

  /// Analyses a slide that is already open.
  public static func analyze(
    slide s: Slide, bundle: ModelBundle, overrideMPP: Double? = nil, minTissue: Double = 0.25, cacheDir: String?,
    progress: (Int, Int) -> Void = { _, _ in }
  ) throws -> AnalyzedSlide {
    try analyze(
      slide: s, encoder: bundle.featureEncoder, overrideMPP: overrideMPP, minTissue: minTissue, cacheDir: cacheDir,
      progress: progress)
  }

  /// Analyses a slide that is already open, with any feature encoder.
  public static func analyze(
    slide s: Slide, encoder: FeatureEncoder, overrideMPP: Double? = nil, minTissue: Double = 0.25, cacheDir: String?,
    progress: (Int, Int) -> Void = { _, _ in }
  ) throws -> AnalyzedSlide {
    let t0 = Date()
    let tissue = try TissueDetector().detect(s)
    let tissueSeconds = Date().timeIntervalSince(t0)
    let e = try SlideIndex.embed(
      slide: s, tissue: tissue, encoder: encoder, overrideMPP: overrideMPP, minTissue: minTissue, cacheDir: cacheDir,
      progress: progress)
    var facts = InputFacts(
      mppMissing: s.mppX == nil, notBrightfield: tissue.modalityReason, tissueFraction: tissue.tissueFraction)
    if s.mppX == nil { facts.mppGiven = overrideMPP }
    return AnalyzedSlide(
      kind: .slide, paths: [s.path], slide: s, tissue: tissue, facts: facts, embeddings: e, mpp: overrideMPP ?? s.mppX,
      contentHash: try SlideIndex.contentHash(s), tissueSeconds: tissueSeconds)
  }

  /// Images already in memory, taken as the tiles of one case (`names` label them).
  public static func images(_ imgs: [RGBImage], names: [String], contentHash: String? = nil, bundle: ModelBundle)
    -> AnalyzedSlide
  {
    images(imgs, names: names, contentHash: contentHash, encoder: bundle.featureEncoder)
  }

  /// Images already in memory, embedded with any feature encoder.
  public static func images(_ imgs: [RGBImage], names: [String], contentHash: String? = nil, encoder: FeatureEncoder)
    -> AnalyzedSlide
  {
    let t0 = Date()
    let (emb, dist) = encoder.embedScored(imgs)
    let tiles = imgs.indices.map { TileRef(index: $0, col: $0, row: 0, x: 0, y: 0, size0: imgs[$0].width, tissue: 1) }
    let e = SlideEmbeddings(
      tiles: tiles, embeddings: emb, outlier: dist, dim: encoder.dim, tileSize: encoder.tileSize, mpp: encoder.mpp,
      extent0: Double(encoder.tileSize), fromCache: false, readSeconds: 0, encodeSeconds: Date().timeIntervalSince(t0))
    return AnalyzedSlide(
      kind: .images, paths: names, slide: nil, tissue: nil, facts: InputFacts(), embeddings: e, mpp: nil,
      contentHash: contentHash ?? SHA256.hex(emb.withUnsafeBytes { Array($0) }), tissueSeconds: 0)
  }

  /// The slide's file name, or the image names joined.
  public var name: String {
    kind == .slide
      ? (paths[0] as NSString).lastPathComponent : paths.map { ($0 as NSString).lastPathComponent }.joined(separator: ", ")
  }

  /// What a user reads about the input (`:info`, transcripts, report headers).
  public var info: [String: String] {
    let e = embeddings
    guard let s = slide, let tissue else {
      return ["file": name, "tiles": "\(paths.count) images"]
    }
    let (W, H) = s.dimensions
    return [
      "file": name, "vendor": s.vendor, "size": "\(W) x \(H) px", "levels": "\(s.levels.count)",
      "mpp": mpp.map { String(format: "%.4f", $0) + (s.mppX == nil ? " (given)" : "") } ?? "unknown",
      "tissue": String(format: "%.1f%%", tissue.tissueFraction * 100),
      "tiles": "\(e.tiles.count) at \(String(format: "%.3f", e.mpp)) µm/px, \(e.tileSize) px"
        + (e.fromCache ? " (from cache)" : ""),
      "modality": tissue.modality.rawValue,
    ]
  }

  /// Where a tile is, in words: level-0 `(x, y)` on a slide, the file name in an image set.
  public func tileLabel(_ i: Int) -> String {
    kind == .images ? (paths[i] as NSString).lastPathComponent : "(\(embeddings.tiles[i].x), \(embeddings.tiles[i].y))"
  }

  /// The tile index at level-0 (x, y) on a slide (evidence tiles carry coordinates only).
  public func tileIndex(x: Int, y: Int) -> Int? { embeddings.tiles.firstIndex { $0.x == x && $0.y == y } }

  /// A tile's pixels, at most `maxSize` px a side: the slide region (read at the best level), or
  /// the image.
  public func tileImage(_ i: Int, maxSize: Int = 128) throws -> RGBImage {
    let img: RGBImage
    if let s = slide {
      let t = embeddings.tiles[i]
      let ext = max(1, Int(embeddings.extent0.rounded()))
      let level = s.bestLevel(forDownsample: Double(ext) / Double(maxSize))
      let ds = s.levels[level].downsample
      let side = max(1, min(1 << 14, Int((Double(ext) / ds).rounded())))
      img = try s.readRegion(x: t.x, y: t.y, level: level, width: side, height: side)
    } else {
      guard FileManager.default.fileExists(atPath: paths[i]) else {
        throw PipelineError.file(path: paths[i], message: "image not on disk")
      }
      img = try ImageCodec.read(paths[i])
    }
    let scale = min(1, Double(maxSize) / Double(max(img.width, img.height)))
    if scale >= 1 { return img }
    return resample(
      img, outWidth: max(1, Int(Double(img.width) * scale)), outHeight: max(1, Int(Double(img.height) * scale)))
  }

  /// Scores every tile with `classifier` and pools a verdict under the review policy; with
  /// `organs`, tiles and the slide that look like another organ than an organ set's are flagged.
  public func classify(_ classifier: ZeroShotClassifier, policy: ReviewPolicy, topK: Int? = nil, organs: OrganCheck? = nil)
    -> SlideResult
  {
    let e = embeddings
    var r = SlidePooling.pool(
      classifier.predict(e.embeddings, outlier: e.outlier), tiles: e.tiles, extent0: e.extent0, classifier: classifier, k: topK,
      facts: facts,
      policy: policy)
    organs?.apply(to: &r, set: classifier.promptSet, input: self, policy: policy)
    return r
  }

  /// A heatmap of one class over the slide thumbnail, with the class name, a colour bar, the
  /// scale and the flagged tiles hatched (nil for image sets, which have no layout).
  public func heatmap(_ r: SlideResult, classIndex k: Int, maxSize: Int = 1024) throws -> RGBImage? {
    guard let s = slide else { return nil }
    let th = try s.thumbnail(maxSize: maxSize)
    let e = embeddings
    let img = Heatmap.render(
      thumbnail: th.image, downsampleX: th.downsampleX, downsampleY: th.downsampleY,
      tiles: e.tiles.map { ($0.x, $0.y, Int(e.extent0.rounded())) }, values: r.tiles.map { $0.probs[k] },
      flagged: r.tileFlags.map { !$0.isEmpty })
    let flagged = r.tileFlags.filter { !$0.isEmpty }.count
    return Heatmap.legend(
      img, title: "p(\(r.classNames[k]))", note: "\(e.tiles.count) tiles, \(flagged) flagged (hatched)",
      micronsPerPixel: mpp.map { $0 * th.downsampleX })
  }
}
