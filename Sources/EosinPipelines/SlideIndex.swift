import EosinModels
import EosinSlide
import EosinTensor
import EosinWeights
import Foundation

/// Tile embeddings of one slide for one model, with the tiles' level-0 coordinates.
public struct SlideEmbeddings: Sendable {
  public var tiles: [TileRef]
  /// (N, D) normalised.
  public var embeddings: [Float]
  /// (N) out-of-domain distances, when the encoder measures them on its backbone rows
  /// (``FeatureEncoder/embedScored(_:batch:)``).
  public var outlier: [Float]? = nil
  public var dim: Int
  public var tileSize: Int
  public var mpp: Double
  /// Level-0 footprint side of a tile.
  public var extent0: Double
  public var fromCache: Bool
  /// Seconds spent reading tiles and encoding them (zero when cached).
  public var readSeconds: Double
  public var encodeSeconds: Double
}

/// The slide index: tile embeddings cached per (slide content hash, model sha256, tiling) as a
/// safetensors file, so a second question about the same slide encodes no tile.
public enum SlideIndex {
  /// The content hash of a slide: OpenSlide's quickhash-1, else the sha256 of the file.
  public static func contentHash(_ slide: Slide) throws -> String {
    if let q = slide.quickHash { return q }
    return try SHA256.hex(fileAt: slide.path)
  }

  /// Embeds the tissue tiles of a slide at the bundle's native mpp and tile size, or loads them
  /// from `cacheDir`. Memory: one batch of tiles at a time plus the (N,D) result.
  /// - Parameters:
  ///   - overrideMPP: the slide's level-0 mpp when the file lacks it (`--mpp`).
  ///   - progress: (done, total) after each batch.
  public static func embed(
    slide: Slide, tissue: TissueMask, bundle: ModelBundle, overrideMPP: Double?, minTissue: Double = 0.25, cacheDir: String?,
    batch: Int = 32, progress: (Int, Int) -> Void = { _, _ in }
  ) throws -> SlideEmbeddings {
    try embed(
      slide: slide, tissue: tissue, encoder: bundle.featureEncoder, overrideMPP: overrideMPP, minTissue: minTissue,
      cacheDir: cacheDir, batch: batch, progress: progress)
  }

  /// Embeds the tissue tiles of a slide with any feature encoder, at its tile size and mpp;
  /// cached like ``embed(slide:tissue:bundle:overrideMPP:minTissue:cacheDir:batch:progress:)``.
  /// The next batch of tiles is read while the current one is encoded.
  public static func embed(
    slide: Slide, tissue: TissueMask, encoder: FeatureEncoder, overrideMPP: Double?, minTissue: Double = 0.25,
    cacheDir: String?, batch: Int = 32, progress: (Int, Int) -> Void = { _, _ in }
  ) throws -> SlideEmbeddings {
    let tiler = try Tiler(
      slide: slide, mpp: encoder.mpp, tileSize: encoder.tileSize, overrideMPP: overrideMPP, tissue: tissue,
      minTissue: minTissue)
    let g = tiler.grid
    let D = encoder.dim
    let key =
      [
        try contentHash(slide), encoder.sha256 + (encoder.precision == .fp32 ? "" : "/" + encoder.precision.rawValue),
        "\(g.tileSize)", String(format: "%.4f", g.mpp),
        String(format: "%.3f", minTissue), overrideMPP.map { String($0) } ?? "-",
      ].joined(separator: "|") + (encoder.outlier.map { "|outlier:" + $0.sha256 } ?? "")
    let file = cacheDir.map { "\($0)/index/\(SHA256.hex(Array(key.utf8)).prefix(32)).safetensors" }
    if let f = file, let st = try? SafeTensorsFile(path: f), st.metadata["key"] == key, let e = try? st.tensor("embeddings"),
      e.shape == [g.tiles.count, D]
    {
      let o = try? st.tensor("outlier")
      if encoder.outlier == nil || o?.shape == [g.tiles.count] {
        return SlideEmbeddings(
          tiles: g.tiles, embeddings: e.data, outlier: encoder.outlier == nil ? nil : o?.data, dim: D, tileSize: g.tileSize,
          mpp: g.mpp, extent0: g.extent0, fromCache: true, readSeconds: 0, encodeSeconds: 0)
      }
    }
    var emb = [Float](repeating: 0, count: g.tiles.count * D)
    var dist: [Float]? = encoder.outlier == nil ? nil : [Float](repeating: 0, count: g.tiles.count)
    let (readT, encT) = try encodeTiles(tiler, encoder: encoder, batch: batch, progress: progress) { i, e, d in
      emb.replaceSubrange((i * D)..<(i * D + e.count), with: e)
      if let d { dist?.replaceSubrange(i..<(i + d.count), with: d) }
    }
    if let f = file {
      try? FileManager.default.createDirectory(
        atPath: (f as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
      var tensors = ["embeddings": Tensor(shape: [g.tiles.count, D], data: emb)]
      if let dist { tensors["outlier"] = Tensor(shape: [g.tiles.count], data: dist) }
      try? SafeTensorsWriter.write(tensors, metadata: ["key": key], to: f)
    }
    return SlideEmbeddings(
      tiles: g.tiles, embeddings: emb, outlier: dist, dim: D, tileSize: g.tileSize, mpp: g.mpp, extent0: g.extent0,
      fromCache: false, readSeconds: readT, encodeSeconds: encT)
  }

  /// Reads and encodes every tile of `tiler`'s grid in batches, handing each batch's features to
  /// `sink` (first tile index, rows, and the rows' out-of-domain distances when the encoder
  /// measures them and `outliers` asks for them). Reading overlaps encoding: batch k+1 is read on another
  /// thread while batch k is encoded. Memory: two batches of tiles. Returns the seconds spent
  /// reading (on the reader's clock) and encoding.
  public static func encodeTiles(
    _ tiler: Tiler, encoder: FeatureEncoder, batch: Int = 32, outliers: Bool = true,
    progress: (Int, Int) -> Void = { _, _ in }, sink: (Int, [Float], [Float]?) throws -> Void
  ) throws -> (read: Double, encode: Double) {
    let g = tiler.grid
    var readT = 0.0, encT = 0.0
    let starts = Array(stride(from: 0, to: g.tiles.count, by: batch))
    let reader = TileReader(tiler: tiler, batch: batch)
    let read = reader.read
    var pending: Result<([RGBImage], Double), Error>? = starts.isEmpty ? nil : read(starts[0])
    for (k, i) in starts.enumerated() {
      let (imgs, rt) = try pending!.get()
      readT += rt
      let next = LockedBox<Result<([RGBImage], Double), Error>?>(nil)
      let group = DispatchGroup()
      if k + 1 < starts.count {
        let s = starts[k + 1]
        DispatchQueue.global().async(group: group) { next.value = read(s) }
      }
      let t1 = Probes.now()
      let (e, d) = outliers ? encoder.embedScored(imgs, batch: imgs.count) : (encoder.embed(imgs, batch: imgs.count), nil)
      encT += Probes.now() - t1
      group.wait()
      try sink(i, e, d)
      pending = next.value
      progress(i + imgs.count, g.tiles.count)
    }
    return (readT, encT)
  }

  /// Embeds standalone images (tiles): each is preprocessed (resize, centre crop) and encoded,
  /// one image per core.
  public static func embedImages(_ imgs: [RGBImage], bundle: ModelBundle) -> [Float] {
    bundle.featureEncoder.embed(imgs, batch: max(imgs.count, 1))
  }

  /// ``embedImages(_:bundle:)`` with each image's out-of-domain distance, when the weights
  /// measure it on the backbone (pass it to ``ZeroShotClassifier/predict(_:outlier:)``).
  public static func embedImagesScored(_ imgs: [RGBImage], bundle: ModelBundle) -> (
    embeddings: [Float], outlier: [Float]?
  ) {
    let r = bundle.featureEncoder.embedScored(imgs, batch: max(imgs.count, 1))
    return (r.features, r.outlier)
  }
}

/// Reads one batch of tiles (timed) on whichever thread calls it; OpenSlide handles are
/// thread-safe and only one batch is read at a time.
final class TileReader: @unchecked Sendable {
  let tiler: Tiler
  let batch: Int
  init(tiler: Tiler, batch: Int) {
    self.tiler = tiler
    self.batch = batch
  }
  func read(_ i: Int) -> Result<([RGBImage], Double), Error> {
    let t0 = Probes.now()
    let g = tiler.grid
    return Result { (try (i..<min(i + batch, g.tiles.count)).map { try tiler.read(g.tiles[$0]) }, Probes.now() - t0) }
  }
}

/// A value shared with one worker thread; read after the worker's group is waited on.
final class LockedBox<T>: @unchecked Sendable {
  private let lock = NSLock()
  private var v: T
  init(_ v: T) { self.v = v }
  var value: T {
    get { lock.lock(); defer { lock.unlock() }; return v }
    set { lock.lock(); v = newValue; lock.unlock() }
  }
}
