import CHDF5
import EosinSlide
import EosinTensor
import EosinWeights
import Foundation

/// Tile features of one analysed input, written as TRIDENT and CLAM read them.
///
/// HDF5: dataset `features` (N x D float32, one row per tile, the encoder's standard embedding;
/// for Eosin's CLIP the projected, L2-normalised image embedding), dataset `coords` (N x 2
/// int64: a tile's level-0 top-left x, y; for plain images the image's index in input order,
/// then 0). Numeric attributes on the file and on `coords`: `patch_size` (tile side in pixels at
/// the encoder's resolution), `patch_size_level0` (its side at level 0), `level`, `mpp` (the
/// tiles' microns per pixel, 0 when unknown), `target_mpp`; string attributes on the file and on
/// `features`: `encoder`, `encoder_family`, `encoder_sha256`, `eosin_version`, `input`, `precision`. Safetensors (`--format
/// safetensors`): the same two tensors, the attributes as metadata.
public enum FeatureExport {
  /// The version written into every feature file.
  public static let eosinVersion = "0.1.0"

  /// Attributes of a feature file: tiles of `tileSize` pixels (`extent0` at level 0) read at
  /// `mpp` (0 for images) from `input`, encoded by `encoder`.
  static func attributes(tileSize: Int, extent0: Double, mpp: Double, input: String, encoder: FeatureEncoder)
    -> (num: [(String, Double)], str: [(String, String)])
  {
    let num: [(String, Double)] = [
      ("patch_size", Double(tileSize)), ("patch_size_level0", extent0.rounded()), ("level", 0), ("mpp", mpp),
      ("target_mpp", encoder.mpp),
    ]
    let str: [(String, String)] = [
      ("encoder", encoder.name), ("encoder_family", encoder.family), ("encoder_sha256", encoder.sha256),
      ("eosin_version", eosinVersion), ("input", input), ("precision", encoder.precision.rawValue),
    ]
    return (num, str)
  }

  /// The attributes as safetensors metadata.
  static func metadata(_ num: [(String, Double)], _ str: [(String, String)]) -> [String: String] {
    var meta: [String: String] = [:]
    for (k, v) in num { meta[k] = String(v) }
    for (k, v) in str { meta[k] = v }
    return meta
  }

  /// The coordinates of each tile (level-0 x, y; image index and 0 for image sets).
  static func coords(_ input: AnalyzedSlide) -> [Int64] {
    input.embeddings.tiles.enumerated().flatMap { i, t in
      input.kind == .images ? [Int64(i), 0] : [Int64(t.x), Int64(t.y)]
    }
  }

  /// Writes `input`'s features to `path` (HDF5, or safetensors when `safetensors`), whole or not
  /// at all: to a temporary name, then renamed.
  /// - Throws: ``PipelineError/file`` naming the path.
  public static func write(_ input: AnalyzedSlide, encoder: FeatureEncoder, to path: String, safetensors: Bool = false) throws {
    try prepareFolder(path)
    let tmp = path + ".tmp-\(getpid())"
    defer { try? FileManager.default.removeItem(atPath: tmp) }
    let e = input.embeddings
    let (num, str) = attributes(
      tileSize: e.tileSize, extent0: e.extent0, mpp: input.kind == .slide ? e.mpp : 0,
      input: input.kind == .slide ? input.paths[0] : "\(input.paths.count) images in input order", encoder: encoder)
    let c = coords(input)
    if safetensors {
      do {
        try SafeTensorsWriter.write(
          [
            "features": Tensor(shape: [e.tiles.count, e.dim], data: e.embeddings),
            "coords": Tensor(shape: [e.tiles.count, 2], data: c.map { Float($0) }),
          ], metadata: metadata(num, str), to: tmp)
      } catch { throw PipelineError.file(path: path, message: "cannot write: \(error.localizedDescription)") }
    } else {
      var err = [CChar](repeating: 0, count: 256)
      let rc = withCStrings(num.map(\.0)) { numNames in
        withCStrings(str.map(\.0)) { strNames in
          withCStrings(str.map(\.1)) { strValues in
            eosin_h5_write_features(
              tmp, e.embeddings, Int64(e.tiles.count), Int64(e.dim), c, numNames, num.map(\.1), Int32(num.count), strNames,
              strValues, Int32(str.count), &err, err.count)
          }
        }
      }
      guard rc == 0 else { throw PipelineError.file(path: path, message: String(cString: err)) }
    }
    guard rename(tmp, path) == 0 else {
      throw PipelineError.file(path: path, message: "cannot write (\(String(cString: strerror(errno))))")
    }
  }

  /// What ``stream(slide:encoder:overrideMPP:minTissue:to:safetensors:progress:)`` did.
  public struct StreamResult: Sendable {
    public var tiles: Int
    public var dim: Int
    public var readSeconds: Double
    public var encodeSeconds: Double
  }

  /// Embeds a slide's tissue tiles straight into a feature file, batch by batch: memory is two
  /// batches of tiles and the (N, 2) coordinates, whatever the slide's size. Written to a
  /// temporary name, renamed when whole. Nothing is cached.
  /// - Throws: the slide or tiling error, or ``PipelineError/file`` naming the output.
  public static func stream(
    slide s: Slide, encoder: FeatureEncoder, overrideMPP: Double? = nil, minTissue: Double = 0.25, to path: String,
    safetensors: Bool = false, progress: (Int, Int) -> Void = { _, _ in }
  ) throws -> StreamResult {
    let tissue = try TissueDetector().detect(s)
    let tiler = try Tiler(
      slide: s, mpp: encoder.mpp, tileSize: encoder.tileSize, overrideMPP: overrideMPP, tissue: tissue, minTissue: minTissue)
    let g = tiler.grid
    let N = g.tiles.count, D = encoder.dim
    let coords = g.tiles.flatMap { [Int64($0.x), Int64($0.y)] }
    let (num, str) = attributes(tileSize: g.tileSize, extent0: g.extent0, mpp: g.mpp, input: s.path, encoder: encoder)
    try prepareFolder(path)
    let tmp = path + ".tmp-\(getpid())"
    defer { try? FileManager.default.removeItem(atPath: tmp) }
    var times = (read: 0.0, encode: 0.0)
    if safetensors {
      let w = try SafeTensorsStreamWriter(
        path: tmp, tensors: [("coords", [N, 2]), ("features", [N, D])], metadata: metadata(num, str))
      do {
        try w.append(coords.map { Float($0) })
        times = try SlideIndex.encodeTiles(tiler, encoder: encoder, outliers: false, progress: progress) { _, rows, _ in
          try w.append(rows)
        }
        try w.close()
      } catch let e as WeightsError { throw PipelineError.file(path: path, message: e.localizedDescription) }
    } else {
      var err = [CChar](repeating: 0, count: 256)
      guard let w = eosin_h5_open(tmp, Int64(N), Int64(D), coords, &err, err.count) else {
        throw PipelineError.file(path: path, message: String(cString: err))
      }
      var closed = false
      defer { if !closed { _ = eosin_h5_close(w, nil, nil, 0, nil, nil, 0, nil, 0) } }
      times = try SlideIndex.encodeTiles(tiler, encoder: encoder, outliers: false, progress: progress) { i, rows, _ in
        guard eosin_h5_write_rows(w, Int64(i), Int64(rows.count / max(D, 1)), rows, &err, err.count) == 0 else {
          throw PipelineError.file(path: path, message: String(cString: err))
        }
      }
      closed = true
      let rc = withCStrings(num.map(\.0)) { nn in
        withCStrings(str.map(\.0)) { sn in
          withCStrings(str.map(\.1)) { sv in
            eosin_h5_close(w, nn, num.map(\.1), Int32(num.count), sn, sv, Int32(str.count), &err, err.count)
          }
        }
      }
      guard rc == 0 else { throw PipelineError.file(path: path, message: String(cString: err)) }
    }
    guard rename(tmp, path) == 0 else {
      throw PipelineError.file(path: path, message: "cannot write (\(String(cString: strerror(errno))))")
    }
    return StreamResult(tiles: N, dim: D, readSeconds: times.read, encodeSeconds: times.encode)
  }

  static func prepareFolder(_ path: String) throws {
    let dir = (path as NSString).deletingLastPathComponent
    if !dir.isEmpty {
      do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
        throw PipelineError.file(path: path, message: "cannot create its folder")
      }
    }
  }

  /// Calls `body` with the strings as an array of C string pointers.
  static func withCStrings<R>(_ s: [String], _ body: ([UnsafePointer<CChar>?]) -> R) -> R {
    let dup = s.map { strdup($0) }
    defer { dup.forEach { free($0) } }
    return body(dup.map { UnsafePointer($0) })
  }
}
