import EosinModels
import EosinSlide
import EosinTensor
import EosinWeights
import Foundation

extension CLIPModel: ImageEncoder {
  public var inputSize: Int { imageSize }
  public var featureDim: Int { embedDim }
  /// The projected, L2-normalised image embedding.
  public func features(_ pixels: [Float], batch: Int) -> [Float] { imageEmbeddings(pixels, batch: batch) }
}

/// An image encoder with everything tiling and feature files need: its preprocessing, the tile
/// size and resolution it is run at, its name and the sha256 of its weights (the cache key).
/// Eosin's own CLIP (``ModelBundle/featureEncoder``) and any published checkpoint folder
/// (``open(_:tileSize:mpp:)``) are encoders alike.
public struct FeatureEncoder: Sendable {
  public let encoder: any ImageEncoder
  public let preprocess: ImagePreprocessor
  /// The encoder's name: the weights' manifest name, a timm architecture, a folder name.
  public let name: String
  /// The checkpoint layout (`eosin`, `timm`, `transformers-dinov2`, `open_clip`, ...).
  public let family: String
  /// sha256 of the weights file (for shards: of the shards' hashes in name order).
  public let sha256: String
  /// Tile side in pixels at ``mpp``, read from the slide and then preprocessed to the encoder's
  /// input.
  public let tileSize: Int
  /// Microns per pixel the tiles are read at.
  public let mpp: Double
  /// The GEMM precision the encoder runs at (part of the slide-index cache key).
  public let precision: Precision
  /// The out-of-domain model measured on this encoder's backbone rows (Eosin's own weights
  /// finalized with one), with the sha256 of its file; nil otherwise.
  public let outlier: (model: OutlierModel, sha256: String)?

  /// Width of one feature row.
  public var dim: Int { encoder.featureDim }

  public init(
    encoder: any ImageEncoder, preprocess: ImagePreprocessor, name: String, family: String, sha256: String, tileSize: Int,
    mpp: Double, precision: Precision = .fp32, outlier: (model: OutlierModel, sha256: String)? = nil
  ) {
    self.precision = precision
    self.outlier = outlier
    self.encoder = encoder
    self.preprocess = preprocess
    self.name = name
    self.family = family
    self.sha256 = sha256
    self.tileSize = tileSize
    self.mpp = mpp
  }

  /// Opens an encoder folder: Eosin's weights (a folder with `clip/` or a `manifest.json`) as a
  /// ``ModelBundle`` at their native tile size and mpp, anything else as a published checkpoint
  /// (timm, transformers, open_clip; see ``VisionCheckpoint``) with tiles of the encoder's input
  /// size at 0.5 µm/px (20x), the resolution the public pathology encoders were trained at.
  /// `tileSize` and `mpp` override either.
  /// - Throws: the loader's error naming the file and the problem.
  public static func open(_ dir: String, tileSize: Int? = nil, mpp: Double? = nil, precision: Precision = .fp32) throws
    -> FeatureEncoder
  {
    let fm = FileManager.default
    if fm.fileExists(atPath: dir + "/clip") || fm.fileExists(atPath: dir + "/manifest.json") {
      return try ModelBundle(path: dir, precision: precision).featureEncoder.tiled(size: tileSize, mpp: mpp)
    }
    let e = try VisionCheckpoint.load(dir)
    return FeatureEncoder(
      encoder: e.encoder.converted(to: precision), preprocess: e.preprocess, name: e.name, family: e.family,
      sha256: try weightsSHA(e.weightsPath), tileSize: tileSize ?? e.encoder.inputSize, mpp: mpp ?? 0.5, precision: precision)
  }

  /// The same encoder with other tiling (`--patch-size`, `--target-mpp`).
  public func tiled(size: Int?, mpp newMPP: Double?) -> FeatureEncoder {
    FeatureEncoder(
      encoder: encoder, preprocess: preprocess, name: name, family: family, sha256: sha256, tileSize: size ?? tileSize,
      mpp: newMPP ?? mpp, precision: precision, outlier: outlier)
  }

  /// The sha256 of a weights file, or for a shard index the sha256 of its shards' hashes.
  static func weightsSHA(_ path: String) throws -> String {
    guard path.hasSuffix(".index.json") else { return try SHA256.hex(fileAt: path) }
    let files = try ShardedSafeTensors(index: path).shardPaths
    return SHA256.hex(Array(try files.map { try SHA256.hex(fileAt: $0) }.joined(separator: "|").utf8))
  }

  /// Embeds preprocessed images in batches of `batch` (memory: one batch of pixels).
  public func embed(_ imgs: [RGBImage], batch: Int = 32) -> [Float] { encode(imgs, batch: batch, backbone: false).features }

  /// Embeds like ``embed(_:batch:)``, and gives each image's out-of-domain distance when the
  /// encoder has a backbone ``outlier`` model (nil otherwise: the classifier then measures the
  /// embeddings themselves, when the weights' model is of that kind).
  public func embedScored(_ imgs: [RGBImage], batch: Int = 32) -> (features: [Float], outlier: [Float]?) {
    guard let o = outlier else { return (embed(imgs, batch: batch), nil) }
    let r = encode(imgs, batch: batch, backbone: true, statistics: o.model.features.usesTissueStatistics)
    return (r.features, r.backbone.map { o.model.distances($0) })
  }

  /// Embeds like ``embed(_:batch:)`` with each image's backbone row (see
  /// ``CLIPModel/imageEmbeddingsAndBackbone(_:batch:)``), followed, with `statistics`, by its
  /// ``TissueFeatures`` (the rows of ``OutlierModel/Features/backboneAndTissue``); the backbone
  /// is nil for encoders other than a CLIP image tower.
  public func embedWithBackbone(_ imgs: [RGBImage], batch: Int = 32, statistics: Bool = false) -> (
    features: [Float], backbone: [Float]?
  ) {
    encode(imgs, batch: batch, backbone: true, statistics: statistics)
  }

  func encode(_ imgs: [RGBImage], batch: Int, backbone: Bool, statistics: Bool = false) -> (
    features: [Float], backbone: [Float]?
  ) {
    let S = encoder.inputSize, per = 3 * S * S, D = dim
    var out = [Float](repeating: 0, count: imgs.count * D)
    let clip = backbone ? encoder as? CLIPModel : nil
    var bb: [Float]? = clip == nil ? nil : []
    var i = 0
    while i < imgs.count {
      let n = min(batch, imgs.count - i)
      var px = [Float](repeating: 0, count: n * per)
      px.withUnsafeMutableBufferPointer { p in
        parallelFor(n) { k in
          let im = imgs[i + k]
          let x = preprocess(im.pixels, width: im.width, height: im.height)
          for j in 0..<x.count { p[k * per + j] = x[j] }
        }
      }
      let e: [Float]
      if let clip {
        let r = clip.imageEmbeddingsAndBackbone(px, batch: n)
        e = r.embeddings
        if statistics {
          // Each row: the backbone, then the statistics of the pixels the tower saw.
          let E = clip.backboneDim, F = TissueFeatures.count
          var rows = [Float](repeating: 0, count: n * (E + F))
          rows.withUnsafeMutableBufferPointer { o in
            let base = o.baseAddress!
            px.withUnsafeBufferPointer { p in
              parallelFor(n) { k in
                let st = TissueFeatures.compute(
                  pixels: p.baseAddress! + k * per, size: S, mean: preprocess.mean, std: preprocess.std)
                for j in 0..<E { base[k * (E + F) + j] = r.backbone[k * E + j] }
                for j in 0..<F { base[k * (E + F) + E + j] = st[j] }
              }
            }
          }
          bb! += rows
        } else {
          bb! += r.backbone
        }
      } else {
        e = encoder.features(px, batch: n)
      }
      out.replaceSubrange((i * D)..<((i + n) * D), with: e)
      i += n
    }
    return (out, bb)
  }
}
