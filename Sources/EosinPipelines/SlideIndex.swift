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
    let tiler = try Tiler(
      slide: slide, mpp: bundle.mpp, tileSize: bundle.tileSize, overrideMPP: overrideMPP, tissue: tissue, minTissue: minTissue)
    let g = tiler.grid
    let D = bundle.clip.embedDim
    let key = [
      try contentHash(slide), bundle.clipSHA256, "\(g.tileSize)", String(format: "%.4f", g.mpp),
      String(format: "%.3f", minTissue), overrideMPP.map { String($0) } ?? "-",
    ].joined(separator: "|")
    let file = cacheDir.map { "\($0)/index/\(SHA256.hex(Array(key.utf8)).prefix(32)).safetensors" }
    if let f = file, let st = try? SafeTensorsFile(path: f), st.metadata["key"] == key, let e = try? st.tensor("embeddings"),
      e.shape == [g.tiles.count, D]
    {
      return SlideEmbeddings(
        tiles: g.tiles, embeddings: e.data, dim: D, tileSize: g.tileSize, mpp: g.mpp, extent0: g.extent0, fromCache: true,
        readSeconds: 0, encodeSeconds: 0)
    }
    var emb = [Float](repeating: 0, count: g.tiles.count * D)
    var readT = 0.0, encT = 0.0
    let S = bundle.clip.imageSize
    var i = 0
    while i < g.tiles.count {
      let n = min(batch, g.tiles.count - i)
      let t0 = Probes.now()
      let imgs = try (0..<n).map { try tiler.read(g.tiles[i + $0]) }
      let t1 = Probes.now()
      var px = [Float](repeating: 0, count: n * 3 * S * S)
      px.withUnsafeMutableBufferPointer { p in
        parallelFor(n) { k in
          let x = bundle.preprocess(imgs[k].pixels, width: imgs[k].width, height: imgs[k].height)
          for j in 0..<x.count { p[k * 3 * S * S + j] = x[j] }
        }
      }
      let e = bundle.clip.imageEmbeddings(px, batch: n)
      emb.replaceSubrange((i * D)..<((i + n) * D), with: e)
      let t2 = Probes.now()
      readT += t1 - t0
      encT += t2 - t1
      i += n
      progress(i, g.tiles.count)
    }
    if let f = file {
      try? FileManager.default.createDirectory(
        atPath: (f as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
      try? SafeTensorsWriter.write(["embeddings": Tensor(shape: [g.tiles.count, D], data: emb)], metadata: ["key": key], to: f)
    }
    return SlideEmbeddings(
      tiles: g.tiles, embeddings: emb, dim: D, tileSize: g.tileSize, mpp: g.mpp, extent0: g.extent0, fromCache: false,
      readSeconds: readT, encodeSeconds: encT)
  }

  /// Embeds standalone images (tiles): each is preprocessed (resize, centre crop) and encoded,
  /// one image per core.
  public static func embedImages(_ imgs: [RGBImage], bundle: ModelBundle) -> [Float] {
    let S = bundle.clip.imageSize
    var px = [Float](repeating: 0, count: imgs.count * 3 * S * S)
    px.withUnsafeMutableBufferPointer { p in
      parallelFor(imgs.count) { k in
        let x = bundle.preprocess(imgs[k].pixels, width: imgs[k].width, height: imgs[k].height)
        for j in 0..<x.count { p[k * 3 * S * S + j] = x[j] }
      }
    }
    return bundle.clip.imageEmbeddings(px, batch: imgs.count)
  }
}
